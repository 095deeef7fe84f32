"""Queries on the per-recipient ledger (the ``delivery`` table), and its fast writers.

The ledger's hot path (an in-flight mark before each message, its outcome after) goes
through a :class:`LedgerWriter`. On SQLite, the embedded default, it uses the DB-API
connection with three prepared statements; through SQLAlchemy's Core a commit cycle took
about 3 ms and capped one connection at about 450 messages a second. Other databases go
through Core. ``tests/test_ledger.py`` runs both writers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlmodel import Session

from mailer.store import people, sends
from mailer.store.database import Database
from mailer.store.models import (
    Delivery,
    DeliveryStatus,
    Membership,
    MembershipStatus,
    Send,
    Subscriber,
    SubscriberStatus,
    as_utc,
    table_of,
    utcnow,
)

DELIVERY = table_of(Delivery)
SEND = sends.SEND
D = DeliveryStatus
# Rows fetched at a time by the engine's dispatcher.
FETCH = 500


# -- fixing the recipients ------------------------------------------------------------------


def _already_mailed(conn: Connection, slug: str, send_id: int | None) -> set[int]:
    """Subscribers an earlier send of this issue reached (or may have reached); a rehearsal
    through the outbox reached nobody."""
    query = (
        sa.select(DELIVERY.c.subscriber_id)
        .join(SEND, SEND.c.id == DELIVERY.c.send_id)
        .where(
            SEND.c.slug == slug,
            DELIVERY.c.status.in_([D.SENT, D.IN_FLIGHT]),
            sends.NOT_A_REHEARSAL,
        )
    )
    if send_id is not None:
        query = query.where(SEND.c.id != send_id)
    return set(conn.execute(query).scalars())


def count_recipients(session: Session, list_ids: Sequence[int], slug: str) -> int:
    """How many a new send of ``slug`` to these lists would mail (see fix_recipients)."""
    already = _already_mailed(session.connection(), slug, None)
    return sum(
        1 for r in people.eligible_recipients(session, list_ids) if r.subscriber_id not in already
    )


def fix_recipients(session: Session, send: Send) -> int:
    """Write the ledger: every eligible subscriber once, in one transaction.

    Eligible means active and subscribed to any of the send's lists, not suppressed, and not
    already mailed this issue by an earlier send (so a second list never duplicates).
    """
    assert send.id is not None
    conn = session.connection()
    list_ids = list(
        conn.execute(
            sa.select(sends.SEND_LIST.c.list_id).where(sends.SEND_LIST.c.send_id == send.id)
        ).scalars()
    )
    already = _already_mailed(conn, send.slug, send.id)
    insert = sa.insert(DELIVERY)
    total = 0
    batch: list[dict[str, object]] = []
    for r in people.eligible_recipients(session, list_ids):
        if r.subscriber_id in already:
            continue
        batch.append(
            {
                "send_id": send.id,
                "subscriber_id": r.subscriber_id,
                "email": r.email,
                "name": r.name or "",
                "status": D.PENDING,
                "attempts": 0,
                "last_error": "",
                "message_id": "",
            }
        )
        if len(batch) >= 1000:
            conn.execute(insert, batch)
            total += len(batch)
            batch = []
    if batch:
        conn.execute(insert, batch)
        total += len(batch)
    sends.set_total(conn, send.id, total)
    session.commit()
    return total


# -- what the engine reads ---------------------------------------------------------------------


def in_flight(conn: Connection, send_id: int) -> list[str]:
    """Addresses of the rows left in flight by a run that stopped without recording them."""
    return list(
        conn.execute(
            sa.select(DELIVERY.c.email)
            .where(DELIVERY.c.send_id == send_id, DELIVERY.c.status == D.IN_FLIGHT)
            .order_by(DELIVERY.c.id)
        ).scalars()
    )


def finished_count(conn: Connection, send_id: int) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count()).where(
                DELIVERY.c.send_id == send_id, DELIVERY.c.status != D.PENDING
            )
        ).scalar_one()
    )


def sent_since(conn: Connection, since: dt.datetime) -> list[float]:
    """When each message of any send was accepted since ``since`` (epoch seconds), so a
    resumed send keeps to the hourly rate limit."""
    return [
        as_utc(t).timestamp()
        for t in conn.execute(
            sa.select(DELIVERY.c.sent_at).where(DELIVERY.c.sent_at >= since)
        ).scalars()
    ]


def pending_after(conn: Connection, send_id: int, last_id: int, limit: int = FETCH) -> list[Any]:
    """The next pending rows of a send, in ledger order: (id, subscriber_id, email, name)."""
    d = DELIVERY.c
    rows = conn.execute(
        sa.select(d.id, d.subscriber_id, d.email, d.name)
        .where(d.send_id == send_id, d.status == D.PENDING, d.id > last_id)
        .order_by(d.id)
        .limit(limit)
    ).all()
    conn.rollback()
    return list(rows)


@dataclass(frozen=True)
class FailedRecipient:
    email: str
    status: str
    attempts: int
    error: str


@dataclass(frozen=True)
class Report:
    send_id: int
    slug: str
    status: str
    reason: str
    lists: list[str]
    total: int
    counts: dict[str, int]
    started_at: datetime | None
    finished_at: datetime | None
    scheduled_at: datetime | None
    last_sent_at: datetime | None
    failed: list[FailedRecipient]
    in_flight: list[str]

    @property
    def sent(self) -> int:
        return self.counts.get(DeliveryStatus.SENT, 0)

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or self.last_sent_at or utcnow()
        return max((end - self.started_at).total_seconds(), 0.0)

    @property
    def rate(self) -> float | None:
        d = self.duration
        return self.sent / d if d and self.sent else None

    def as_dict(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data.update(sent=self.sent, duration_seconds=self.duration, rate_per_second=self.rate)
        for key in ("started_at", "finished_at", "scheduled_at", "last_sent_at"):
            value = data[key]
            data[key] = value.isoformat() if value else None
        return data


def report(session: Session, send: Send, failed_limit: int = 1000) -> Report:
    assert send.id is not None
    conn = session.connection()
    d = DELIVERY.c
    counts = {str(s): 0 for s in DeliveryStatus}
    for status, n in conn.execute(
        sa.select(d.status, sa.func.count()).where(d.send_id == send.id).group_by(d.status)
    ):
        counts[str(status)] = n
    failed = [
        FailedRecipient(r.email, str(r.status), r.attempts, r.last_error)
        for r in conn.execute(
            sa.select(d.email, d.status, d.attempts, d.last_error)
            .where(
                d.send_id == send.id,
                d.status.in_([DeliveryStatus.FAILED_TEMPORARY, DeliveryStatus.FAILED_PERMANENT]),
            )
            .order_by(d.id)
            .limit(failed_limit)
        )
    ]
    in_flight = list(
        conn.execute(
            sa.select(d.email)
            .where(d.send_id == send.id, d.status == DeliveryStatus.IN_FLIGHT)
            .order_by(d.id)
        ).scalars()
    )
    last = conn.execute(sa.select(sa.func.max(d.sent_at)).where(d.send_id == send.id)).scalar()
    return Report(
        send_id=send.id,
        slug=send.slug,
        status=str(send.status),
        reason=send.status_reason,
        lists=sends.list_slugs_of(session, send.id),
        total=send.total or 0,
        counts=counts,
        started_at=as_utc(send.started_at) if send.started_at else None,
        finished_at=as_utc(send.finished_at) if send.finished_at else None,
        scheduled_at=as_utc(send.scheduled_at) if send.scheduled_at else None,
        last_sent_at=as_utc(_datetime(last)) if last else None,
        failed=failed,
        in_flight=in_flight,
    )


def _datetime(value: datetime | str) -> datetime:
    # An aggregate loses the column's type, so SQLite hands back its stored text.
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def reset_for_retry(session: Session, send_id: int, statuses: Iterable[DeliveryStatus]) -> int:
    result = session.connection().execute(
        sa.update(DELIVERY)
        .where(DELIVERY.c.send_id == send_id, DELIVERY.c.status.in_(list(statuses)))
        .values(status=DeliveryStatus.PENDING)
    )
    session.commit()
    return int(result.rowcount)


# -- the ledger writers --------------------------------------------------------------------------


# A final outcome: (status, attempts, message_id, error, sent_at, updated_at, id).
Final = tuple[str, int, str, str, dt.datetime | None, dt.datetime, int]
# A mark: (status, updated_at, id), for in-flight and handed-back rows.
Mark = tuple[str, dt.datetime, int]


class Written(NamedTuple):
    """What a ledger commit found out: whether the send is still the writer's (not paused,
    cancelled or taken by another process), and which rows just marked in flight belong to
    people who may no longer be mailed, and were marked skipped instead."""

    ours: bool
    skipped: frozenset[int]


class LedgerWriter(Protocol):
    def write(
        self, finals: Sequence[Final], marks: Sequence[Mark], beat: dt.datetime | None
    ) -> Written:
        """Commit the marks and outcomes in one transaction, checking in that same
        transaction that the send is still ours and that each person about to be mailed
        still may be, so the sender never hands the server a message it should not."""
        ...

    def close(self) -> None: ...


def _ineligible_query(send_id: int, ids: Sequence[int]) -> sa.Select[Any]:
    """Of the rows ``ids``, those whose person is not active and subscribed to one of the
    send's lists any more: decided at the last moment, not when the send started."""
    s, m, sl = table_of(Subscriber).c, table_of(Membership), sends.SEND_LIST
    still = (
        sa.select(sa.literal(1))
        .select_from(m)
        .join(sl, sl.c.list_id == m.c.list_id)
        .join(table_of(Subscriber), s.id == m.c.subscriber_id)
        .where(
            m.c.subscriber_id == DELIVERY.c.subscriber_id,
            sl.c.send_id == send_id,
            m.c.status == MembershipStatus.SUBSCRIBED,
            s.status == SubscriberStatus.ACTIVE,
            s.email.is_not(None),
        )
        .exists()
    )
    return sa.select(DELIVERY.c.id).where(DELIVERY.c.id.in_(list(ids)), sa.not_(still))

    def close(self) -> None: ...


def _sqlite_time(moment: dt.datetime) -> str:
    # The text SQLAlchemy writes for a naive UTC DateTime on SQLite, so both paths agree.
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class SQLiteLedgerWriter:
    """Prepared statements on the DB-API connection (its pragmas come from mailer.db)."""

    FINAL = (
        "UPDATE delivery SET status = ?, attempts = attempts + ?, message_id = ?, "
        "last_error = ?, sent_at = ?, updated_at = ? WHERE id = ?"
    )
    MARK = "UPDATE delivery SET status = ?, updated_at = ? WHERE id = ?"
    BEAT = "UPDATE send SET heartbeat_at = ? WHERE id = ? AND claimed_by = ?"
    OURS = "SELECT count(*) FROM send WHERE id = ? AND status = 'sending' AND claimed_by = ?"
    INELIGIBLE = (
        "SELECT d.id FROM delivery d WHERE d.id IN ({ids}) AND NOT EXISTS ("
        "SELECT 1 FROM membership m JOIN send_list sl ON sl.list_id = m.list_id "
        "JOIN subscriber s ON s.id = m.subscriber_id WHERE m.subscriber_id = d.subscriber_id "
        "AND sl.send_id = d.send_id AND m.status = 'subscribed' AND s.status = 'active' "
        "AND s.email IS NOT NULL)"
    )

    def __init__(self, database: Database, send_id: int, owner: str) -> None:
        self.raw: Any = database.writer.raw_connection()
        self.send_id, self.owner = send_id, owner

    def write(
        self, finals: Sequence[Final], marks: Sequence[Mark], beat: dt.datetime | None
    ) -> Written:
        cursor = self.raw.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
            if finals:
                cursor.executemany(
                    self.FINAL,
                    [
                        (s, n, mid, err, _sqlite_time(sent) if sent else None, _sqlite_time(now), i)
                        for s, n, mid, err, sent, now, i in finals
                    ],
                )
            if marks:
                cursor.executemany(self.MARK, [(s, _sqlite_time(now), i) for s, now, i in marks])
            if beat is not None:
                cursor.execute(self.BEAT, (_sqlite_time(beat), self.send_id, self.owner))
            ours = bool(cursor.execute(self.OURS, (self.send_id, self.owner)).fetchone()[0])
            skipped = frozenset[int]()
            starting = [i for s, _, i in marks if s == D.IN_FLIGHT.value]
            if starting:
                marks_at = ",".join("?" * len(starting))
                found = cursor.execute(self.INELIGIBLE.format(ids=marks_at), starting)
                skipped = frozenset(row[0] for row in found.fetchall())
                if skipped:
                    now = _sqlite_time(marks[0][1])
                    cursor.executemany(
                        self.MARK, [(D.SKIPPED.value, now, i) for i in sorted(skipped)]
                    )
            cursor.execute("COMMIT")
            return Written(ours, skipped)
        except BaseException:
            if self.raw.in_transaction:
                cursor.execute("ROLLBACK")
            raise
        finally:
            cursor.close()

    def close(self) -> None:
        self.raw.close()


class CoreLedgerWriter:
    """The same writes through SQLAlchemy Core, for databases other than SQLite."""

    FINAL = (
        sa.update(DELIVERY)
        .where(DELIVERY.c.id == sa.bindparam("b_id"))
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
        .where(DELIVERY.c.id == sa.bindparam("b_id"))
        .values(
            status=sa.bindparam("b_status", type_=DELIVERY.c.status.type),
            updated_at=sa.bindparam("b_now", type_=DELIVERY.c.updated_at.type),
        )
    )

    def __init__(self, database: Database, send_id: int, owner: str) -> None:
        self.session = Session(database.writer)
        self.send_id, self.owner = send_id, owner

    def write(
        self, finals: Sequence[Final], marks: Sequence[Mark], beat: dt.datetime | None
    ) -> Written:
        conn = self.session.connection()
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
                        }
                        for s, n, m, e, t, u, i in finals
                    ],
                )
            if marks:
                conn.execute(
                    self.MARK, [{"b_status": s, "b_now": u, "b_id": i} for s, u, i in marks]
                )
            if beat is not None:
                conn.execute(
                    sa.update(SEND)
                    .where(SEND.c.id == self.send_id, SEND.c.claimed_by == self.owner)
                    .values(heartbeat_at=beat)
                )
            ours = conn.execute(
                sa.select(sa.func.count()).where(
                    SEND.c.id == self.send_id,
                    SEND.c.status == "sending",
                    SEND.c.claimed_by == self.owner,
                )
            ).scalar_one()
            skipped = frozenset[int]()
            starting = [i for s, _, i in marks if s == D.IN_FLIGHT.value]
            if starting:
                query = _ineligible_query(self.send_id, starting)
                skipped = frozenset(conn.execute(query).scalars())
                if skipped:
                    now = marks[0][1]
                    conn.execute(
                        self.MARK,
                        [{"b_status": D.SKIPPED.value, "b_now": now, "b_id": i} for i in skipped],
                    )
            self.session.commit()
            return Written(bool(ours), skipped)
        except BaseException:
            self.session.rollback()
            raise

    def close(self) -> None:
        self.session.close()


def ledger_writer(database: Database, send_id: int, owner: str) -> LedgerWriter:
    """The fastest writer for the database: prepared statements on SQLite, Core elsewhere."""
    sqlite = database.writer.dialect.name == "sqlite"
    return (SQLiteLedgerWriter if sqlite else CoreLedgerWriter)(database, send_id, owner)
