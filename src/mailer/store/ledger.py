"""The send ledger's hot path: claiming rows, handing them back, recording outcomes.

Each call of :meth:`LedgerWriter.write` is one transaction that

1. records the outcomes of messages that ended (``sent``, failed, ``unknown``);
2. hands back rows that were claimed and never written to a socket (``pending`` again);
3. claims the next rows: each is checked against its person's *current* status, so a
   person who unsubscribed (from a list of the send or from everything), bounced,
   complained or was erased since the send started becomes ``skipped``, and the rest
   become ``in-flight``, which is what the engine then sends;
4. refreshes the send's heartbeat, and reads, in that same transaction, whether the send
   is still this process's to send (``mailer pause`` or ``cancel`` from elsewhere).

On SQLite, the embedded default, it uses the DB-API connection with plain statements,
which cost a fraction of SQLAlchemy's Core on this hot path; other databases go through
Core.
``tests/test_ledger.py`` runs both writers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import sqlalchemy as sa
from sqlmodel import Session

from mailer.store.database import Database
from mailer.store.models import (
    Delivery,
    DeliveryStatus,
    Membership,
    MembershipStatus,
    Send,
    SendList,
    SendStatus,
    Subscriber,
    SubscriberStatus,
    table_of,
    utcnow,
)

DELIVERY = table_of(Delivery)
SEND = table_of(Send)
SUBSCRIBER = table_of(Subscriber)
MEMBERSHIP = table_of(Membership)
SEND_LIST = table_of(SendList)
D = DeliveryStatus

# A final outcome: (status, attempts, message_id, error, sent_at, updated_at, id).
Final = tuple[str, int, str, str, dt.datetime | None, dt.datetime, int]
# A mark: (status, updated_at, id), for rows handed back untried.
Mark = tuple[str, dt.datetime, int]
# Why a claimed row was skipped, when the person is still active: no longer on any list.
OFF_THE_LISTS = "unsubscribed from the lists of this send"


class Written(NamedTuple):
    """What a commit found: whether the send is still ours, and the rows now in flight."""

    ours: bool
    claimed: list[int]


class LedgerWriter(Protocol):
    def write(
        self,
        finals: Sequence[Final],
        marks: Sequence[Mark],
        claims: Sequence[int],
        beat: dt.datetime | None,
    ) -> Written:
        """Commit the outcomes, hand-backs and claims in one transaction (see the module
        doc); the claimed ids that are now in flight, in the order asked."""
        ...

    def close(self) -> None: ...


def _sqlite_time(moment: dt.datetime) -> str:
    # The text SQLAlchemy writes for a naive UTC DateTime on SQLite, so both paths agree.
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


# Whether the person of a ledger row may be mailed now (the rule of
# mailer.store.people.eligible_query, for one row).
_ELIGIBLE = f"""EXISTS (
    SELECT 1 FROM subscriber s WHERE s.id = delivery.subscriber_id
    AND s.status = '{SubscriberStatus.ACTIVE.value}' AND s.email IS NOT NULL
    AND EXISTS (
        SELECT 1 FROM membership m JOIN send_list sl ON sl.list_id = m.list_id
        WHERE m.subscriber_id = s.id AND sl.send_id = delivery.send_id
        AND m.status = '{MembershipStatus.SUBSCRIBED.value}'))"""
_REASON = f"""coalesce(
    (SELECT CASE s.status WHEN '{SubscriberStatus.ACTIVE.value}' THEN '{OFF_THE_LISTS}'
     ELSE s.status END FROM subscriber s WHERE s.id = delivery.subscriber_id),
    '{SubscriberStatus.ERASED.value}')"""


class SQLiteLedgerWriter:
    """Plain statements on the DB-API connection (its pragmas come from mailer.db)."""

    FINAL = (
        "UPDATE delivery SET status = ?, attempts = attempts + ?, message_id = ?, "
        "last_error = ?, sent_at = ?, updated_at = ? WHERE id = ?"
    )
    MARK = "UPDATE delivery SET status = ?, updated_at = ? WHERE id = ?"
    SKIP = (
        f"UPDATE delivery SET status = '{D.SKIPPED.value}', updated_at = ?, "
        f"last_error = {_REASON} WHERE status = '{D.PENDING.value}' AND id IN ({{ids}}) "
        f"AND NOT {_ELIGIBLE}"
    )
    CLAIM = (
        f"UPDATE delivery SET status = '{D.IN_FLIGHT.value}', updated_at = ? "
        f"WHERE status = '{D.PENDING.value}' AND id IN ({{ids}}) RETURNING id"
    )
    BEAT = "UPDATE send SET heartbeat_at = ? WHERE id = ? AND claimed_by = ?"
    OURS = "SELECT count(*) FROM send WHERE id = ? AND status = 'sending' AND claimed_by = ?"

    def __init__(self, database: Database, send_id: int, owner: str) -> None:
        self.raw: Any = database.writer.raw_connection()
        self.send_id, self.owner = send_id, owner

    def write(
        self,
        finals: Sequence[Final],
        marks: Sequence[Mark],
        claims: Sequence[int],
        beat: dt.datetime | None,
    ) -> Written:
        cursor = self.raw.cursor()
        claimed: list[int] = []
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
                        (s, n, mid, err, stamp(sent) if sent else None, stamp(now), i)
                        for s, n, mid, err, sent, now, i in finals
                    ],
                )
            if marks:
                cursor.executemany(self.MARK, [(s, stamp(now), i) for s, now, i in marks])
            if claims:
                now = _sqlite_time(utcnow())
                ids = ", ".join("?" * len(claims))
                cursor.execute(self.SKIP.format(ids=ids), (now, *claims))
                found = {
                    row[0] for row in cursor.execute(self.CLAIM.format(ids=ids), (now, *claims))
                }
                claimed = [i for i in claims if i in found]
            if beat is not None:
                cursor.execute(self.BEAT, (_sqlite_time(beat), self.send_id, self.owner))
            ours = bool(cursor.execute(self.OURS, (self.send_id, self.owner)).fetchone()[0])
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


def _eligible() -> sa.ColumnElement[bool]:
    s, m, sl, d = SUBSCRIBER.c, MEMBERSHIP.c, SEND_LIST.c, DELIVERY.c
    on_a_list = (
        sa.select(m.subscriber_id)
        .join(SEND_LIST, sl.list_id == m.list_id)
        .where(
            m.subscriber_id == s.id,
            sl.send_id == d.send_id,
            m.status == MembershipStatus.SUBSCRIBED,
        )
        .exists()
    )
    return (
        sa.select(s.id)
        .where(
            s.id == d.subscriber_id,
            s.status == SubscriberStatus.ACTIVE,
            s.email.is_not(None),
            on_a_list,
        )
        .exists()
    )


def _reason() -> sa.ColumnElement[str]:
    s = SUBSCRIBER.c
    status = (
        sa.select(
            sa.case(
                (s.status == SubscriberStatus.ACTIVE, sa.literal(OFF_THE_LISTS)), else_=s.status
            )
        )
        .where(s.id == DELIVERY.c.subscriber_id)
        .scalar_subquery()
    )
    return sa.func.coalesce(status, sa.literal(SubscriberStatus.ERASED.value))


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
        self,
        finals: Sequence[Final],
        marks: Sequence[Mark],
        claims: Sequence[int],
        beat: dt.datetime | None,
    ) -> Written:
        conn = self.session.connection()
        d = DELIVERY.c
        claimed: list[int] = []
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
            if claims:
                now = utcnow()
                mine = sa.and_(d.status == D.PENDING, d.id.in_(list(claims)))
                conn.execute(
                    sa.update(DELIVERY)
                    .where(mine, sa.not_(_eligible()))
                    .values(status=D.SKIPPED, updated_at=now, last_error=_reason())
                )
                found = set(
                    conn.execute(
                        sa.update(DELIVERY)
                        .where(mine)
                        .values(status=D.IN_FLIGHT, updated_at=now)
                        .returning(d.id)
                    ).scalars()
                )
                claimed = [i for i in claims if i in found]
            if beat is not None:
                conn.execute(
                    sa.update(SEND)
                    .where(SEND.c.id == self.send_id, SEND.c.claimed_by == self.owner)
                    .values(heartbeat_at=beat)
                )
            ours = conn.execute(
                sa.select(sa.func.count()).where(
                    SEND.c.id == self.send_id,
                    SEND.c.status == SendStatus.SENDING,
                    SEND.c.claimed_by == self.owner,
                )
            ).scalar_one()
            self.session.commit()
            return Written(bool(ours), claimed)
        except BaseException:
            self.session.rollback()
            raise

    def close(self) -> None:
        self.session.close()


def ledger_writer(database: Database, send_id: int, owner: str) -> LedgerWriter:
    """The fastest writer for the database: plain statements on SQLite, Core elsewhere."""
    sqlite = database.writer.dialect.name == "sqlite"
    return (SQLiteLedgerWriter if sqlite else CoreLedgerWriter)(database, send_id, owner)
