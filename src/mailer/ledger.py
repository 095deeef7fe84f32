"""The single writer of a send's ledger rows, committing the marks of all connections together.

A connection thread calls :meth:`Ledger.record` with the outcome of its previous message
and the id of the row it is about to send; the call returns once both are committed. The
writer thread takes whatever has arrived from every connection and commits it in one
transaction (group commit).

Every message waits for one commit, so a commit must be cheap. On SQLite, the embedded
default, the writer uses the DB-API connection directly with three prepared statements.
Through SQLAlchemy's Core a commit cycle took about 3 ms and capped one connection at
about 450 messages a second; directly, the whole engine runs at about 1,300 a second on one
connection and 2,100 on four (bench/send_path.py), faster than an SMTP client can hand
messages over. Other databases go through Core.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlmodel import Session

from mailer import store
from mailer.db import Database
from mailer.errors import StateError
from mailer.models import Delivery, DeliveryStatus, Send, table_of, utcnow

log = logging.getLogger("mailer.sender")
D = DeliveryStatus
DELIVERY = table_of(Delivery)
SEND = table_of(Send)
# How often the send's heartbeat is refreshed: with the rows being written, and on its own
# when nothing moves (a long rate-limit wait, a slow server), so the claim never looks stale.
HEARTBEAT_EVERY = 1.0
HEARTBEAT_IDLE = 5.0
# A writer that finds the database locked (a large import committing) keeps trying this long.
BUSY_RETRY_FOR = 120.0


@dataclass
class Outcome:
    """What happened to one ledger row; ``PENDING`` hands a row back untried."""

    delivery_id: int
    status: DeliveryStatus
    attempts: int = 0
    message_id: str = ""
    error: str = ""
    subscriber_id: int | None = None
    # A permanent failure that shows the address is bad: the subscriber is marked bounced.
    bounce: bool = False


# A final outcome: (status, attempts, message_id, error, sent_at, updated_at, id).
Final = tuple[str, int, str, str, dt.datetime | None, dt.datetime, int]
# A mark: (status, updated_at, id), for in-flight and handed-back rows.
Mark = tuple[str, dt.datetime, int]


class _Backend(Protocol):
    def write(
        self, finals: Sequence[Final], marks: Sequence[Mark], beat: dt.datetime | None
    ) -> None: ...

    def close(self) -> None: ...


def _sqlite_time(moment: dt.datetime) -> str:
    # The text SQLAlchemy writes for a naive UTC DateTime on SQLite, so both paths agree.
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class _SQLiteBackend:
    """Prepared statements on the DB-API connection (its pragmas come from mailer.db)."""

    FINAL = (
        "UPDATE delivery SET status = ?, attempts = attempts + ?, message_id = ?, "
        "last_error = ?, sent_at = ?, updated_at = ? WHERE id = ?"
    )
    MARK = "UPDATE delivery SET status = ?, updated_at = ? WHERE id = ?"
    BEAT = "UPDATE send SET heartbeat_at = ? WHERE id = ? AND claimed_by = ?"

    def __init__(self, database: Database, send_id: int, owner: str) -> None:
        self.raw: Any = database.writer.raw_connection()
        self.send_id, self.owner = send_id, owner

    def write(
        self, finals: Sequence[Final], marks: Sequence[Mark], beat: dt.datetime | None
    ) -> None:
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
            cursor.execute("COMMIT")
        except BaseException:
            if self.raw.in_transaction:
                cursor.execute("ROLLBACK")
            raise
        finally:
            cursor.close()

    def close(self) -> None:
        self.raw.close()


class _CoreBackend:
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
    ) -> None:
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
            self.session.commit()
        except BaseException:
            self.session.rollback()
            raise

    def close(self) -> None:
        self.session.close()


class Ledger:
    """The single writer of a send's ledger rows, committing in groups."""

    def __init__(self, database: Database, send_id: int, owner: str) -> None:
        self.database = database
        sqlite = database.writer.dialect.name == "sqlite"
        self._backend: _Backend = (_SQLiteBackend if sqlite else _CoreBackend)(
            database, send_id, owner
        )
        self._cond = threading.Condition()
        self._items: list[tuple[Outcome | None, int | None, threading.Event]] = []
        self._closed = False
        self._last_beat = 0.0
        self.done = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ledger", daemon=True)
        self._thread.start()

    def record(self, outcome: Outcome | None, begin: int | None = None) -> None:
        """Durably record ``outcome`` and mark row ``begin`` in flight; block until done."""
        if outcome is None and begin is None:
            return
        event = threading.Event()
        with self._cond:
            if self.error is not None:
                raise StateError(f"the ledger could not be written: {self.error}")
            self._items.append((outcome, begin, event))
            self._cond.notify()
        event.wait()
        if self.error is not None:
            raise StateError(f"the ledger could not be written: {self.error}")

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        self._backend.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._items and not self._closed:
                    self._cond.wait(HEARTBEAT_IDLE)
                items, self._items = self._items, []
                if not items and self._closed:
                    return
            try:
                self._write(items)
            except BaseException as exc:  # the waiting threads must learn of it
                log.exception("ledger write failed")
                self.error = exc
            for _, _, event in items:
                event.set()

    def _write(self, items: list[tuple[Outcome | None, int | None, threading.Event]]) -> None:
        now = utcnow()
        finals: list[Final] = []
        marks: list[Mark] = []
        for outcome, begin, _ in items:
            if outcome is not None and outcome.delivery_id:
                if outcome.status == D.PENDING:
                    # Handed back untried (the server was unavailable): pending again.
                    marks.append((D.PENDING.value, now, outcome.delivery_id))
                else:
                    sent = now if outcome.status == D.SENT else None
                    finals.append(
                        (
                            outcome.status.value,
                            outcome.attempts,
                            outcome.message_id,
                            outcome.error[:1000],
                            sent,
                            now,
                            outcome.delivery_id,
                        )
                    )
            if begin is not None:
                marks.append((D.IN_FLIGHT.value, now, begin))
        tick = time.monotonic()
        beat = now if tick - self._last_beat >= HEARTBEAT_EVERY else None
        if not (finals or marks or beat):
            return
        self._retry_when_busy(lambda: self._backend.write(finals, marks, beat))
        if beat is not None:
            self._last_beat = tick
        self.done += len(finals)
        bounced = [
            o.subscriber_id for o, _, _ in items if o is not None and o.bounce and o.subscriber_id
        ]
        if bounced:
            # Rare, so through the store's own rules; if this is lost to a crash, the next
            # send to the address bounces again and records it then.
            with self.database.session(write=True) as session:
                store.mark_bounced(session, bounced)

    @staticmethod
    def _retry_when_busy(write: Callable[[], None]) -> None:
        deadline = time.monotonic() + BUSY_RETRY_FOR
        while True:
            try:
                write()
                return
            except (sqlite3.OperationalError, sa.exc.OperationalError) as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                log.info("the database is busy; retrying the ledger write")
                time.sleep(0.2)
