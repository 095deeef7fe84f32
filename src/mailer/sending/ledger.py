"""The single writer of a send's ledger rows, committing the marks of all connections together.

A connection thread calls :meth:`Ledger.record` with the outcome of its previous message
and the id of the row it is about to send; the call returns once both are committed. The
writer thread takes whatever has arrived from every connection and commits it in one
transaction (group commit), through the fastest writer the database has
(:func:`mailer.store.deliveries.ledger_writer`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from mailer.errors import StateError
from mailer.store import people
from mailer.store.database import Database
from mailer.store.deliveries import Final, Mark, Written, ledger_writer
from mailer.store.engine import is_busy
from mailer.store.models import DeliveryStatus, utcnow

log = logging.getLogger("mailer.sender")
D = DeliveryStatus
# How often the send's heartbeat is refreshed: with the rows being written, and on its own
# when nothing moves (a long rate-limit wait, a slow server), so the claim never looks stale.
HEARTBEAT_EVERY = 1.0
HEARTBEAT_IDLE = 5.0
# A writer that finds the database locked (a large import committing) keeps trying this long.
BUSY_RETRY_FOR = 120.0


class Turn(Enum):
    """What a connection does with the row it just asked to mark in flight."""

    SEND = "send"
    SKIP = "skip"  # the person may no longer be mailed: marked skipped
    STOP = "stop"  # the send was paused, cancelled or taken over


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


class Ledger:
    """The single writer of a send's ledger rows, committing in groups."""

    def __init__(self, database: Database, send_id: int, owner: str) -> None:
        self.database = database
        self._backend = ledger_writer(database, send_id, owner)
        self._cond = threading.Condition()
        self._items: list[tuple[Outcome | None, int | None, threading.Event]] = []
        self._closed = False
        self._last_beat = 0.0
        self.done = 0
        self.error: BaseException | None = None
        # Set once a commit finds the send no longer ours (`mailer pause`, `mailer cancel`).
        self.claim_lost = False
        # Rows whose person may no longer be mailed, found by the commit that marked them.
        self._skipped: set[int] = set()
        self.skipped = 0
        self._thread = threading.Thread(target=self._run, name="ledger", daemon=True)
        self._thread.start()

    def record(self, outcome: Outcome | None, begin: int | None = None) -> Turn:
        """Durably record ``outcome`` and mark row ``begin`` in flight; block until done.

        ``Turn.STOP`` when the send was paused, cancelled or taken over meanwhile: the row
        marked in flight must not be sent (hand it back as pending). ``Turn.SKIP`` when its
        person may no longer be mailed: the row is already marked skipped.
        """
        if outcome is None and begin is None:
            return Turn.STOP if self.claim_lost else Turn.SEND
        event = threading.Event()
        with self._cond:
            if self.error is not None:
                raise StateError(f"the ledger could not be written: {self.error}")
            self._items.append((outcome, begin, event))
            self._cond.notify()
        event.wait()
        if self.error is not None:
            raise StateError(f"the ledger could not be written: {self.error}")
        if self.claim_lost:
            return Turn.STOP
        with self._cond:
            if begin is not None and begin in self._skipped:
                self._skipped.discard(begin)
                return Turn.SKIP
        return Turn.SEND

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
        written = self._retry_when_busy(lambda: self._backend.write(finals, marks, beat))
        if not written.ours:
            self.claim_lost = True
        if written.skipped:
            with self._cond:
                self._skipped.update(written.skipped)
            self.skipped += len(written.skipped)
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
                people.mark_bounced(session, bounced)

    @staticmethod
    def _retry_when_busy(write: Callable[[], Written]) -> Written:
        deadline = time.monotonic() + BUSY_RETRY_FOR
        while True:
            try:
                return write()
            except Exception as exc:
                if not is_busy(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                log.info("the database is busy; retrying the ledger write")
                time.sleep(0.2)
