"""The send ledger's hot path: claiming rows, handing them back, recording outcomes.

Each call of :meth:`LedgerWriter.write` is one transaction that

1. records the outcomes of messages that ended (``sent``, failed, ``unknown``);
2. hands back rows that were claimed and never written to a socket (``pending`` again);
3. claims the next rows: each is checked against its person's *current* status, so a
   person who unsubscribed (from a list of the send or from everything), bounced,
   complained or was erased since the send started becomes ``skipped``, and the rest
   become ``in-flight``, marked with the worker that claimed them, which then sends them;
4. renews the worker's lease (``send_worker``), and reads, in that same transaction and
   before it claims anything, whether the send is still sending and the lease still its
   own (``mailer pause`` or ``cancel`` from anywhere, or another worker that presumed it
   dead): a worker that is not claims nothing.

Outcomes and hand-backs touch only rows still in flight for this worker: once another
worker has turned them into ``unknown`` (this one was presumed dead), they stay so.

Several workers claim from one send at once. On PostgreSQL each claim takes the next
pending rows with ``FOR UPDATE SKIP LOCKED``, so workers never wait for each other's
rows nor claim the same one; the writer works on the psycopg connection directly, with
statements prepared once per writer, and sends a whole transaction (the COMMIT included)
in one pipeline: one round trip per commit (:class:`PostgresLedgerWriter`). On SQLite,
the embedded default, writers take turns (BEGIN IMMEDIATE): the engine reads pending rows
ahead and claims them by id, guarded by ``status = 'pending'``, through the DB-API
connection with plain statements, which cost a fraction of SQLAlchemy's Core on this hot
path; a row another process claimed first is simply not returned. The Core writer does
the same through SQLAlchemy on any database; ``tests/test_ledger.py`` runs all three.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, cast

import psycopg
import sqlalchemy as sa
from psycopg.rows import namedtuple_row
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Session

from mailer.store import eligibility, send_workers, sends
from mailer.store.database import Database
from mailer.store.models import (
    Delivery,
    DeliveryStatus,
    Send,
    SendStatus,
    SendWorker,
    table_of,
    utcnow,
)

DELIVERY = table_of(Delivery)
SEND = table_of(Send)
SEND_WORKER = table_of(SendWorker)
D = DeliveryStatus
PG_DIALECT = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]

# A final outcome: (status, attempts, message_id, error, sent_at, updated_at, id).
Final = tuple[str, int, str, str, dt.datetime | None, dt.datetime, int]
# A mark: (status, updated_at, id), for rows handed back untried.
Mark = tuple[str, dt.datetime, int]
# A worker's lease unless its settings say otherwise ([worker] lease).
LEASE = dt.timedelta(seconds=30)


class LedgerRow(Protocol):
    """A recipient's row of the ledger as the sender needs it: read ahead while pending, or
    claimed (now in flight)."""

    @property
    def id(self) -> int: ...
    @property
    def subscriber_id(self) -> int: ...
    @property
    def email(self) -> str: ...
    @property
    def name(self) -> str | None: ...


class Written(NamedTuple):
    """What a commit found: whether the send is still this worker's to send, and what it
    claimed: by id (the ids now in flight, in the order asked), or by number (the rows now
    in flight, and how many rows the claim found, skipped ones included)."""

    ours: bool
    claimed: list[int]
    rows: Sequence[LedgerRow] = ()
    found: int = 0


# Values of a statement that are the same for every row of every claim (the send, the
# worker, the lists of the rule) are written into it; the rest come as parameters.
_Value = Any


def claims_by_id(
    mine: sa.ColumnElement[bool],
    eligible: sa.ColumnElement[bool],
    reason: sa.ColumnElement[str],
    owner: _Value,
    now: _Value,
) -> tuple[sa.Update, sa.Update]:
    """The claim of the rows ``mine`` names, if they are still pending: the statement that
    skips those whose person may not be mailed (saying why), then the one that puts the
    rest in flight and returns their ids."""
    d = DELIVERY.c
    pending = sa.and_(d.status == D.PENDING, mine)
    skip = (
        sa.update(DELIVERY)
        .where(pending, sa.not_(eligible))
        .values(status=D.SKIPPED, updated_at=now, last_error=reason, claimed_by=owner)
    )
    claim = (
        sa.update(DELIVERY)
        .where(pending)
        .values(status=D.IN_FLIGHT, updated_at=now, claimed_by=owner)
        .returning(d.id)
    )
    return skip, claim


def claim_next(
    send_id: int,
    eligible: sa.ColumnElement[bool],
    reason: sa.ColumnElement[str],
    owner: _Value,
    now: _Value,
    want: _Value,
    after: _Value,
    guard: sa.ColumnElement[bool] | None = None,
) -> sa.Update:
    """The claim of the next ``want`` pending rows after row ``after`` that no other worker
    is claiming, each person checked: those who may be mailed go in flight, the others are
    skipped, saying why; it returns them all. With ``guard``, only while that holds."""
    d = DELIVERY.c
    pick = DELIVERY.alias("pick")
    nxt = (
        sa.select(pick.c.id)
        .where(
            pick.c.send_id == send_id,
            pick.c.status == D.PENDING,
            pick.c.id > after,
            *(() if guard is None else (guard,)),
        )
        .order_by(pick.c.id)
        .limit(want)
        .with_for_update(skip_locked=True)
    )
    return (
        sa.update(DELIVERY)
        .where(d.id.in_(nxt))
        .values(
            status=sa.case((eligible, D.IN_FLIGHT.value), else_=D.SKIPPED.value),
            last_error=sa.case((eligible, d.last_error), else_=reason),
            claimed_by=owner,
            updated_at=now,
        )
        .returning(d.id, d.status, d.subscriber_id, d.email, d.name)
    )


class LedgerWriter(Protocol):
    # Whether claims name rows read ahead (SQLite) rather than a number of rows.
    reads_ahead: bool

    def write(
        self,
        finals: Sequence[Final],
        marks: Sequence[Mark],
        claims: Sequence[int],
        beat: dt.datetime | None,
        want: int = 0,
    ) -> Written:
        """Commit the outcomes, hand-backs and claims (the rows ``claims`` names, or the
        next ``want`` pending rows) in one transaction, renewing the lease if ``beat``
        (see the module doc)."""
        ...

    def close(self) -> None: ...


def _sqlite_time(moment: dt.datetime) -> str:
    # The text SQLAlchemy writes for a naive UTC DateTime on SQLite, so both paths agree.
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class SQLiteLedgerWriter:
    """Plain statements on the DB-API connection (its pragmas come from mailer.db)."""

    reads_ahead = True
    FINAL = (
        "UPDATE delivery SET status = ?, attempts = attempts + ?, message_id = ?, "
        "last_error = ?, sent_at = ?, updated_at = ? "
        f"WHERE id = ? AND status = '{D.IN_FLIGHT.value}' AND claimed_by = ?"
    )
    MARK = (
        "UPDATE delivery SET status = ?, updated_at = ?, claimed_by = NULL "
        f"WHERE id = ? AND status = '{D.IN_FLIGHT.value}' AND claimed_by = ?"
    )
    CLAIM = (
        f"UPDATE delivery SET status = '{D.IN_FLIGHT.value}', updated_at = ?, claimed_by = ? "
        f"WHERE status = '{D.PENDING.value}' AND id IN ({{ids}}) RETURNING id"
    )
    BEAT = (
        "UPDATE send_worker SET heartbeat_at = ?, expires_at = ? WHERE send_id = ? AND worker = ?"
    )
    OURS = (
        "SELECT count(*) FROM send JOIN send_worker ON send_worker.send_id = send.id "
        f"WHERE send.id = ? AND send.status = '{SendStatus.SENDING.value}' "
        "AND send_worker.worker = ?"
    )

    def __init__(
        self, database: Database, send_id: int, owner: str, lease: dt.timedelta = LEASE
    ) -> None:
        self.send_id, self.owner, self.lease = send_id, owner, lease
        with database.writer.connect() as conn:
            list_ids = sends.list_ids_of(conn, send_id)
        # The rows named that their people may no longer have become skipped, with why
        # (the rule of mailer.store.eligibility, compiled once for this send's lists).
        d = DELIVERY.c
        skip = (
            sa.update(DELIVERY)
            .where(
                d.status == D.PENDING,
                sa.literal_column("delivery.id IN ({ids})"),
                sa.not_(eligibility.of_row(d.subscriber_id, list_ids)),
            )
            .ordered_values(
                (d.status, D.SKIPPED.value),
                (d.updated_at, sa.literal_column("?")),
                (d.claimed_by, sa.literal_column("?")),
                (d.last_error, eligibility.why_not(d.subscriber_id, list_ids)),
            )
        )
        self.skip = eligibility.sqlite_text(skip)
        self.raw: Any = database.writer.raw_connection()

    def write(
        self,
        finals: Sequence[Final],
        marks: Sequence[Mark],
        claims: Sequence[int],
        beat: dt.datetime | None,
        want: int = 0,
    ) -> Written:
        cursor = self.raw.cursor()
        claimed: list[int] = []
        me = self.owner
        try:
            cursor.execute("BEGIN IMMEDIATE")
            # Rows of one commit mostly share their times: each is formatted once.
            text: dict[dt.datetime, str] = {}

            def stamp(moment: dt.datetime) -> str:
                found = text.get(moment)
                if found is None:
                    found = text[moment] = _sqlite_time(moment)
                return found

            if finals:
                cursor.executemany(
                    self.FINAL,
                    [
                        (s, n, mid, err, stamp(sent) if sent else None, stamp(now), i, me)
                        for s, n, mid, err, sent, now, i in finals
                    ],
                )
            if marks:
                cursor.executemany(self.MARK, [(s, stamp(now), i, me) for s, now, i in marks])
            if beat is not None:
                expires = _sqlite_time(beat + self.lease)
                cursor.execute(self.BEAT, (_sqlite_time(beat), expires, self.send_id, me))
            ours = bool(cursor.execute(self.OURS, (self.send_id, me)).fetchone()[0])
            if claims and ours:
                now = _sqlite_time(utcnow())
                ids = ", ".join("?" * len(claims))
                cursor.execute(self.skip.format(ids=ids), (now, me, *claims))
                found = {
                    row[0] for row in cursor.execute(self.CLAIM.format(ids=ids), (now, me, *claims))
                }
                claimed = [i for i in claims if i in found]
            cursor.execute("COMMIT")
            return Written(ours, claimed)
        except BaseException:
            if self.raw.in_transaction:
                cursor.execute("ROLLBACK")
            raise
        finally:
            cursor.close()

    def close(self) -> None:
        self.raw.close()


class CoreLedgerWriter:
    """The same writes through SQLAlchemy Core, for databases other than SQLite; claims
    take the next pending rows with ``FOR UPDATE SKIP LOCKED`` (omitted on SQLite)."""

    reads_ahead = False
    _MINE = sa.and_(
        DELIVERY.c.id == sa.bindparam("b_id"),
        DELIVERY.c.status == D.IN_FLIGHT,
        DELIVERY.c.claimed_by == sa.bindparam("b_me"),
    )
    FINAL = (
        sa.update(DELIVERY)
        .where(_MINE)
        .values(
            status=sa.bindparam("b_status", type_=DELIVERY.c.status.type),
            attempts=DELIVERY.c.attempts + sa.bindparam("b_n"),
            message_id=sa.bindparam("b_mid"),
            last_error=sa.bindparam("b_err"),
            sent_at=sa.bindparam("b_sent", type_=DELIVERY.c.sent_at.type),
            updated_at=sa.bindparam("b_now", type_=DELIVERY.c.updated_at.type),
        )
    )
    MARK = (
        sa.update(DELIVERY)
        .where(_MINE)
        .values(
            status=sa.bindparam("b_status", type_=DELIVERY.c.status.type),
            updated_at=sa.bindparam("b_now", type_=DELIVERY.c.updated_at.type),
            claimed_by=None,
        )
    )

    def __init__(
        self, database: Database, send_id: int, owner: str, lease: dt.timedelta = LEASE
    ) -> None:
        self.session = Session(database.writer)
        self.send_id, self.owner, self.lease = send_id, owner, lease
        with database.writer.connect() as conn:
            # A send's lists are fixed when it is made: the check is built once.
            list_ids = sends.list_ids_of(conn, send_id)
        self.eligible = eligibility.of_row(DELIVERY.c.subscriber_id, list_ids)
        self.reason = eligibility.why_not(DELIVERY.c.subscriber_id, list_ids)
        # The highest row id this writer has claimed: see _claim_next.
        self.after = 0

    def write(
        self,
        finals: Sequence[Final],
        marks: Sequence[Mark],
        claims: Sequence[int],
        beat: dt.datetime | None,
        want: int = 0,
    ) -> Written:
        conn = self.session.connection()
        me = self.owner
        after = self.after
        claimed: list[int] = []
        rows: Sequence[Any] = ()
        found = 0
        try:
            if finals:
                conn.execute(
                    self.FINAL,
                    [
                        {
                            "b_status": s,
                            "b_n": n,
                            "b_mid": m,
                            "b_err": e,
                            "b_sent": t,
                            "b_now": u,
                            "b_id": i,
                            "b_me": me,
                        }
                        for s, n, m, e, t, u, i in finals
                    ],
                )
            if marks:
                conn.execute(
                    self.MARK,
                    [{"b_status": s, "b_now": u, "b_id": i, "b_me": me} for s, u, i in marks],
                )
            if beat is not None:
                send_workers.renew(conn, self.send_id, me, self.lease)
            ours = conn.execute(
                sa.select(sa.func.count())
                .select_from(SEND.join(SEND_WORKER, SEND_WORKER.c.send_id == SEND.c.id))
                .where(
                    SEND.c.id == self.send_id,
                    SEND.c.status == SendStatus.SENDING,
                    SEND_WORKER.c.worker == me,
                )
            ).scalar_one()
            if claims and ours:
                claimed = self._claim_ids(conn, claims)
            elif want > 0 and ours:
                rows, found, after = self._claim_next(conn, want)
            self.session.commit()
            self.after = after
            return Written(bool(ours), claimed, rows, found)
        except BaseException:
            self.session.rollback()
            raise

    def _claim_ids(self, conn: sa.Connection, claims: Sequence[int]) -> list[int]:
        """Claim the rows named, if they are still pending."""
        skip, claim = claims_by_id(
            DELIVERY.c.id.in_(list(claims)), self.eligible, self.reason, self.owner, utcnow()
        )
        conn.execute(skip)
        found = set(conn.execute(claim).scalars())
        return [i for i in claims if i in found]

    def _claim_next(self, conn: sa.Connection, want: int) -> tuple[list[Any], int, int]:
        """Claim the next ``want`` pending rows that no other worker is claiming, checking
        each person at the same time: the rows now in flight, in ledger order, and how
        many rows were taken (the skipped ones too), and where the next claim goes on from.

        Claims go on from the last row this writer claimed. From the start of the ledger,
        every claim would step over all the rows already sent: PostgreSQL's planner walks
        the primary key in order and filters, as its statistics cannot tell that the
        pending rows are the last ones, so each claim would cost more as the send goes on
        (23 ms per claim 38,000 rows in). Rows left behind (handed back by a worker that
        stopped) are claimed when nothing is left ahead: one pass from the start."""
        taken = conn.execute(self.claim_statement(want, self.after)).all()
        if not taken and self.after:
            taken = conn.execute(self.claim_statement(want, 0)).all()
        rows = sorted((r for r in taken if r.status == D.IN_FLIGHT), key=lambda r: r.id)
        return rows, len(taken), max((r.id for r in taken), default=self.after)

    def claim_statement(self, want: int, after: int) -> sa.Update:
        """The claim of the next ``want`` pending rows after row ``after``."""
        return claim_next(
            self.send_id, self.eligible, self.reason, self.owner, utcnow(), want, after
        )

    def close(self) -> None:
        self.session.close()


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    # What UTCDateTime writes: timestamps are stored as naive UTC.
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def _psycopg_text(statement: sa.ClauseElement, **markers: str) -> str:
    """A Core statement as PostgreSQL SQL text for psycopg, built once per writer: its
    values written in, and each marker (a literal column named ``__name__``) replaced by
    the placeholder ``markers[name]`` gives it."""
    compiled = str(statement.compile(dialect=PG_DIALECT, compile_kwargs={"literal_binds": True}))
    for name, placeholder in markers.items():
        compiled = compiled.replace(f"__{name}__", placeholder)
    return compiled


def _marker(name: str) -> Any:
    return sa.literal_column(f"__{name}__")


class PostgresLedgerWriter:
    """The writes of :class:`CoreLedgerWriter` on the psycopg 3 connection directly, for
    PostgreSQL: each statement prepared once on the server, and each commit's statements
    (the outcomes, the hand-backs, the beat, whether the send is still ours, the claim and
    the COMMIT itself) sent in one pipeline, so a commit costs one round trip.

    The claim cannot wait for the answer to "still ours?" without a second round trip, so
    it asks it itself: the claim's statement takes rows only while the send is sending and
    the lease is this worker's, read in the same transaction after the beat, as the
    separate question is. The claim's statements are the Core ones of the other writer
    (:func:`claim_next`, :func:`claims_by_id`, with the rule of
    :mod:`mailer.store.eligibility`), compiled once to SQL text."""

    reads_ahead = False
    FINAL = SQLiteLedgerWriter.FINAL.replace("?", "%s")
    MARK = SQLiteLedgerWriter.MARK.replace("?", "%s")
    OURS = SQLiteLedgerWriter.OURS.replace("?", "%s")
    # The lease, by the database server's clock as mailer.store.send_workers.renew writes
    # it (send_workers.now), stored as naive UTC.
    BEAT = (
        "UPDATE send_worker SET heartbeat_at = (now() AT TIME ZONE 'UTC'), "
        "expires_at = (now() AT TIME ZONE 'UTC') + %s WHERE send_id = %s AND worker = %s"
    )

    def __init__(
        self, database: Database, send_id: int, owner: str, lease: dt.timedelta = LEASE
    ) -> None:
        self.send_id, self.owner, self.lease = send_id, owner, lease
        with database.writer.connect() as conn:
            list_ids = sends.list_ids_of(conn, send_id)
        d = DELIVERY.c
        eligible = eligibility.of_row(d.subscriber_id, list_ids)
        reason = eligibility.why_not(d.subscriber_id, list_ids)
        ours = (
            sa.select(SEND.c.id)
            .join(SEND_WORKER, SEND_WORKER.c.send_id == SEND.c.id)
            .where(
                SEND.c.id == send_id,
                SEND.c.status == SendStatus.SENDING,
                SEND_WORKER.c.worker == owner,
            )
            .exists()
        )
        now = sa.cast(_marker("now"), sa.DateTime())
        places = {"now": "%(now)s", "after": "%(after)s", "want": "%(want)s", "ids": "%(ids)s"}
        self.next_rows = _psycopg_text(
            claim_next(
                send_id,
                eligible,
                reason,
                owner,
                now,
                sa.cast(_marker("want"), sa.Integer()),
                sa.cast(_marker("after"), sa.Integer()),
                guard=ours,
            ),
            **places,
        )
        named = sa.and_(d.id == sa.func.any(sa.cast(_marker("ids"), ARRAY(sa.Integer()))), ours)
        skip, claim = claims_by_id(named, eligible, reason, owner, now)
        self.skip_ids = _psycopg_text(skip, **places)
        self.claim_ids = _psycopg_text(claim, **places)
        self.raw: Any = database.writer.raw_connection()
        self.conn = cast("psycopg.Connection[Any]", self.raw.driver_connection)
        # Every statement of this writer is prepared the first time it runs.
        self.threshold = self.conn.prepare_threshold
        self.conn.prepare_threshold = 0
        # The highest row id this writer has claimed (see CoreLedgerWriter._claim_next).
        self.after = 0

    def write(
        self,
        finals: Sequence[Final],
        marks: Sequence[Mark],
        claims: Sequence[int],
        beat: dt.datetime | None,
        want: int = 0,
    ) -> Written:
        conn, me = self.conn, self.owner
        text: dict[dt.datetime, dt.datetime] = {}

        def stamp(moment: dt.datetime) -> dt.datetime:
            found = text.get(moment)
            if found is None:
                found = text[moment] = _naive_utc(moment)
            return found

        now = _naive_utc(utcnow())
        try:
            with conn.pipeline():
                cursor = conn.cursor()
                if finals:
                    cursor.executemany(
                        self.FINAL,
                        [
                            (s, n, mid, err, stamp(sent) if sent else None, stamp(at), i, me)
                            for s, n, mid, err, sent, at, i in finals
                        ],
                    )
                if marks:
                    cursor.executemany(self.MARK, [(s, stamp(at), i, me) for s, at, i in marks])
                if beat is not None:
                    cursor.execute(self.BEAT, (self.lease, self.send_id, me))
                ours_cursor = conn.cursor()
                ours_cursor.execute(self.OURS, (self.send_id, me))
                claim_cursor: psycopg.Cursor[Any] = conn.cursor(row_factory=namedtuple_row)
                if claims:
                    found = {"now": now, "ids": list(claims)}
                    cursor.execute(self.skip_ids, found)
                    claim_cursor.execute(self.claim_ids, found)
                elif want > 0:
                    asked = {"now": now, "want": want, "after": self.after}
                    claim_cursor.execute(self.next_rows, asked)
                # The COMMIT as one more statement of the pipeline, not conn.commit(): that
                # would wait for the server, and leaving the pipeline would wait again.
                cursor.execute("COMMIT", prepare=False)
            row = ours_cursor.fetchone()
            ours = bool(row and row[0])
            if claims:
                got = {r.id for r in claim_cursor.fetchall()}
                return Written(ours, [i for i in claims if i in got])
            if want <= 0:
                return Written(ours, [])
            taken = claim_cursor.fetchall()
            if not taken and self.after and ours:
                # Nothing left ahead: once more from the start of the ledger, for rows
                # handed back behind this writer (a transaction of its own).
                asked = {"now": now, "want": want, "after": 0}
                taken = claim_cursor.execute(self.next_rows, asked).fetchall()
                conn.commit()
        except BaseException:
            conn.rollback()
            raise
        rows = sorted((r for r in taken if r.status == D.IN_FLIGHT), key=lambda r: r.id)
        self.after = max((r.id for r in taken), default=self.after)
        return Written(ours, [], rows, len(taken))

    def close(self) -> None:
        self.conn.prepare_threshold = self.threshold
        self.raw.close()


def ledger_writer(
    database: Database, send_id: int, owner: str, lease: dt.timedelta = LEASE
) -> LedgerWriter:
    """The fastest writer for the database: plain statements on SQLite, prepared ones in
    a pipeline on PostgreSQL, Core elsewhere."""
    kinds: dict[str, Callable[[Database, int, str, dt.timedelta], LedgerWriter]] = {
        "sqlite": SQLiteLedgerWriter,
        "postgresql": PostgresLedgerWriter,
    }
    kind = kinds.get(database.writer.dialect.name, CoreLedgerWriter)
    return kind(database, send_id, owner, lease)
