"""The send's ledger as the engine sees it: rows claimed in batches, outcomes in batches.

Each connection of a send keeps a small batch of claimed rows ahead of what it is sending.
When its batch runs low, the ledger claims more for it, and for every other connection
that is low too, in one transaction that also records every outcome that has come in
since the last one (:mod:`mailer.store.ledger_writer` says what that transaction checks). The
rows claimed are handed to a connection only once that transaction is committed, so a row
is ``in-flight`` in the database before any byte of its message reaches a socket, and it
is ``sent`` only once the server has accepted it and that outcome is committed.

**The crash bound.** A connection never holds more than ``batch`` rows that the database
calls in flight: the ones waiting in its batch, the one or two it is sending (one more
with PIPELINING, whose envelope goes ahead with the previous message) and those whose
outcome is known but not yet committed. So after a crash (``kill -9``) of one worker at
most ``batch`` rows per connection of that worker are ``in-flight`` with its name (32
with 4 connections and the default batch of 8), and every other row is either
``pending`` (never tried), in flight with a live worker, or has its real outcome. Of
those, the worker's journal (:mod:`mailer.sending.journal`) names the ones it had begun
and the outcomes it knew: when it is read, only the copies on the wire are ``unknown``
(``ON_THE_WIRE`` per connection); without it, all of them. Rows
that were claimed and never written are handed back as ``pending`` whenever the engine
stops on its own (pause, Ctrl-C, SIGTERM, the server unavailable), for this worker or
another to send.

The database work runs on one thread of its own, so the event loop goes on sending while
a transaction commits; one commit covers many messages of every connection (group
commit). bench/send_smtp.py measures the batch size that keeps the commit off the
critical path.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailer.errors import StoreError
from mailer.sending.journal import Journal, Journals
from mailer.sending.threads import JobThread
from mailer.store import for_sending as store
from mailer.store.for_sending import (
    LEASE,
    Database,
    DeliveryStatus,
    Final,
    LedgerRow,
    Mark,
    Written,
    ledger_writer,
    retry_while_busy,
    utcnow,
)

log = logging.getLogger("mailer.sender")
D = DeliveryStatus
# Rows a connection keeps claimed ahead of what it is sending (the crash bound above); it
# asks for more when half are gone. bench/send_smtp.py: from 4 up the commit is off the
# critical path (1 and 2 cost a third of the rate); 8 keeps a margin over that and half
# the crash bound of 16, at the same speed.
BATCH = 8
# How often the worker's lease is renewed with the rows being written, and on its own when
# nothing moves (a long rate-limit wait, a slow server), so it never expires while the
# worker lives; with a short lease, more often (see _Store).
HEARTBEAT_EVERY = 1.0
HEARTBEAT_IDLE = 5.0
# How often a worker looks for other workers of its send that died, to turn the rows they
# held in flight into unknown.
REAP_EVERY = 5.0
# With nothing to commit, whether the send was paused from elsewhere is read this often.
CHECK_EVERY = 0.5
# Outcomes waiting for a commit are written once there are this many, even with nothing
# to claim, so `mailer status` and the progress bar keep up.
FLUSH_AT = 64


@dataclass
class Outcome:
    """What happened to one ledger row."""

    delivery_id: int
    status: DeliveryStatus
    attempts: int = 0
    message_id: str = ""
    error: str = ""
    subscriber_id: int | None = None
    # A permanent failure that shows the address is bad: the subscriber is marked bounced.
    bounce: bool = False


@dataclass
class _Cycle:
    ours: bool
    rows: list[list[LedgerRow]]
    exhausted: bool


class _Store:
    """The database side, used only on the ledger's own thread."""

    def __init__(self, database: Database, send_id: int, owner: str, lease: dt.timedelta) -> None:
        self.database, self.send_id, self.owner = database, send_id, owner
        self.writer = ledger_writer(database, send_id, owner, lease)
        self.reader = database.engine.connect()
        self.ahead: deque[LedgerRow] = deque()
        self.queued: set[int] = set()
        self.last_id = 0
        self.fresh_since_rescan = False
        self.exhausted = False
        self.last_beat = 0.0
        self.last_reap = time.monotonic()
        # Beats come often enough that a lease outlives several missed ones.
        seconds = lease.total_seconds()
        self.beat_busy = min(HEARTBEAT_EVERY, seconds / 6)
        self.beat_idle = min(HEARTBEAT_IDLE, seconds / 3)
        self.reap_every = min(REAP_EVERY, seconds / 2)
        self.unknown: list[str] = []

    def cycle(self, finals: list[Outcome], handed_back: list[int], wants: list[int]) -> _Cycle:
        need = sum(wants)
        picked: list[list[LedgerRow]] = [[] for _ in wants]
        claims: list[int] = []
        if need and self.writer.reads_ahead:
            self._read_ahead(need)
            for mine, want in zip(picked, wants, strict=True):
                mine.extend(self._pop() for _ in range(min(want, len(self.ahead))))
            claims = [row.id for rows in picked for row in rows]
        tick = time.monotonic()
        busy = finals or handed_back or claims or (need and not self.writer.reads_ahead)
        due = self.beat_busy if busy else self.beat_idle
        beat = store.machine_now() if tick - self.last_beat >= due else None
        if not (busy or beat):
            ours = store.is_sending(self.reader, self.send_id, self.owner)
            return _Cycle(ours, [[] for _ in wants], self.exhausted and not self.ahead)
        want = 0 if self.writer.reads_ahead else need
        written = self._write(_finals(finals), _marks(handed_back), claims, beat, want)
        if beat is not None:
            self.last_beat = tick
        if self.writer.reads_ahead:
            claimed = set(written.claimed)
            rows = [[row for row in mine if row.id in claimed] for mine in picked]
            if len(claimed) < len(claims):
                # Another worker is claiming the rows just ahead: leave them to it, and go
                # on from further along the ledger (what it leaves is read again at the end).
                self.ahead.clear()
                self.queued.clear()
        else:
            rows = _deal(written.rows, wants)
            if want and not written.found:
                self.exhausted = True
        bounced = [o.subscriber_id for o in finals if o.bounce and o.subscriber_id]
        if bounced:
            # Rare, so through the store's own rules; if this is lost to a crash, the next
            # send to the address bounces again and records it then.
            with self.database.session(write=True) as session:
                store.mark_bounced(session, bounced)
        if tick - self.last_reap >= self.reap_every:
            self.last_reap = tick
            self._reap()
        return _Cycle(written.ours, rows, self.exhausted and not self.ahead)

    def _read_ahead(self, need: int) -> None:
        """Fill the rows read ahead (SQLite). At the end of the ledger it reads once more
        from the start, for rows that other workers handed back behind this one."""
        while len(self.ahead) < need and not self.exhausted:
            rows = store.pending_after(self.reader, self.send_id, self.last_id)
            if rows:
                self.last_id = rows[-1].id
                fresh = [row for row in rows if row.id not in self.queued]
                self.ahead.extend(fresh)
                self.queued.update(row.id for row in fresh)
                self.fresh_since_rescan = self.fresh_since_rescan or bool(fresh)
            elif self.fresh_since_rescan:
                self.last_id, self.fresh_since_rescan = 0, False
            else:
                self.exhausted = True

    def _pop(self) -> LedgerRow:
        row = self.ahead.popleft()
        self.queued.discard(row.id)
        return row

    def _reap(self) -> None:
        """Turn the rows of workers of this send that died into unknown, now rather than
        when the send ends (their leases expire while this one goes on)."""
        journals = Journals(self.database.settings)
        try:
            with self.database.session(write=True) as session:
                found = store.reap_dead_workers(session.connection(), self.send_id, journals)
        except StoreError as exc:  # it is only a look: the next one may do it
            log.info("could not look for workers that died: %s", exc)
            return
        journals.discard()
        if found:
            self.unknown.extend(found)
            log.warning(
                "%d message(s) of send %s were in flight with a worker that died: their "
                "outcome is unknown and they are not sent again",
                len(found),
                self.send_id,
            )

    def _write(
        self,
        finals: list[Final],
        marks: list[Mark],
        claims: list[int],
        beat: dt.datetime | None,
        want: int,
    ) -> Written:
        return retry_while_busy(
            lambda: self.writer.write(finals, marks, claims, beat, want),
            pause=0.2,
            on_retry=lambda: log.info("the database is busy; retrying the ledger write"),
        )

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


def _deal(rows: Sequence[LedgerRow], wants: list[int]) -> list[list[LedgerRow]]:
    """Rows claimed by number, in ledger order, dealt out to the connections that asked."""
    dealt: list[list[LedgerRow]] = []
    at = 0
    for want in wants:
        dealt.append(list(rows[at : at + want]))
        at += want
    return dealt


def _finals(outcomes: list[Outcome]) -> list[Final]:
    now = utcnow()
    return [
        (
            o.status.value,
            o.attempts,
            o.message_id,
            o.error[:1000],
            now if o.status == D.SENT else None,
            now,
            o.delivery_id,
        )
        for o in outcomes
    ]


def _marks(ids: list[int]) -> list[Mark]:
    now = utcnow()
    return [(D.PENDING.value, now, i) for i in ids]


class Ledger:
    """Claims rows for the connections of a send and records their outcomes, in batches.

    Used from the engine's event loop; the database work runs on a thread of its own.
    """

    def __init__(
        self,
        database: Database,
        send_id: int,
        owner: str,
        connections: int,
        batch: int = BATCH,
        on_lost: Callable[[], None] | None = None,
        lease: dt.timedelta = LEASE,
        journal: Journal | None = None,
    ) -> None:
        self.batch = max(1, batch)
        self._journal = journal or Journal()
        self._store = _Store(database, send_id, owner, lease)
        self._thread = JobThread()
        self._ready: list[deque[LedgerRow]] = [deque() for _ in range(connections)]
        self._busy = [0] * connections
        self._asked = [False] * connections
        self._arrived = [asyncio.Event() for _ in range(connections)]
        self._outcomes: list[Outcome] = []
        self._handed_back: list[int] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._exhausted = False
        self._on_lost = on_lost
        self.done = 0
        self.commits = 0
        self.error: BaseException | None = None
        # Set once a commit finds the send no longer this worker's to send (`mailer pause`
        # or `mailer cancel` from anywhere, or its lease taken by a worker that presumed it
        # dead).
        self.claim_lost = False
        self.stopping = False

    # -- what the connections call ---------------------------------------------------------

    async def take(self, conn: int) -> LedgerRow | None:
        """The next claimed row for connection ``conn``; None when there is none left, or the
        send is stopping."""
        while True:
            row = self.take_nowait(conn)
            if row is not None:
                return row
            nothing_left = self._exhausted and not self._asked[conn]
            if self.stopping or self.error is not None or nothing_left:
                return None
            self._ask(conn)
            await self._arrived[conn].wait()
            self._arrived[conn].clear()

    def room(self, conn: int) -> bool:
        """Whether ``conn`` may take another row without holding more than a batch (rows
        waiting for a retry count)."""
        return self._busy[conn] < self.batch

    def take_nowait(self, conn: int) -> LedgerRow | None:
        """The next claimed row for ``conn`` if one is ready, else None (and more asked for)."""
        ready = self._ready[conn]
        if self.stopping or not ready:
            if not self.stopping and not self._exhausted:
                self._ask(conn)
            return None
        row = ready.popleft()
        self._busy[conn] += 1
        if len(ready) + self._busy[conn] <= self.batch // 2:
            self._ask(conn)
        return row

    def record(self, conn: int, outcome: Outcome) -> None:
        """The outcome of a row ``conn`` took; ``PENDING`` hands it back untried."""
        self._busy[conn] -= 1
        # The journal first: if the process dies before the commit, the reaper reads it.
        if outcome.status == D.PENDING:
            self._journal.back(outcome.delivery_id)
            self._handed_back.append(outcome.delivery_id)
        else:
            self._journal.ended(outcome.delivery_id, outcome.status, outcome.message_id)
            self._outcomes.append(outcome)
        if len(self._outcomes) >= FLUSH_AT or outcome.status == D.PENDING:
            self._wake.set()

    def stop(self) -> None:
        """Take no more rows; the ones claimed and not yet taken go back to pending."""
        self.stopping = True
        for conn, ready in enumerate(self._ready):
            self._handed_back.extend(row.id for row in ready)
            ready.clear()
            self._arrived[conn].set()
        self._wake.set()

    def _ask(self, conn: int) -> None:
        if not self._asked[conn]:
            self._asked[conn] = True
            self._wake.set()

    # -- the committer ---------------------------------------------------------------------

    async def run(self) -> None:
        """Commit what has come in, claim what is asked for; until :meth:`close`."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), CHECK_EVERY)
            self._wake.clear()
            finals, self._outcomes = self._outcomes, []
            handed_back, self._handed_back = self._handed_back, []
            asked = list(self._asked)
            # When one connection runs low, every connection is topped up in the same
            # commit: the others would ask soon, and each commit costs the same however
            # many rows it claims.
            claiming = any(asked) and not self.stopping and not self._exhausted
            wants = [
                max(self.batch - len(self._ready[c]) - self._busy[c], 0) if claiming else 0
                for c in range(len(self._ready))
            ]
            closing = self._closing
            try:
                cycle = await self._thread.call(self._store.cycle, finals, handed_back, wants)
            except BaseException as exc:  # the connections must learn of it, and stop
                log.exception("ledger write failed")
                self.error = exc
                self.stop()
                for event in self._arrived:
                    event.set()
                return
            self.commits += 1
            self.done += len(finals)
            for conn, rows in enumerate(cycle.rows):
                if asked[conn]:
                    self._asked[conn] = False
                if self.stopping:
                    self._handed_back.extend(row.id for row in rows)
                else:
                    self._ready[conn].extend(rows)
                self._arrived[conn].set()
            if cycle.exhausted and not self._exhausted:
                self._exhausted = True
                for event in self._arrived:
                    event.set()
            if not cycle.ours and not self.claim_lost:
                self.claim_lost = True
                if self._on_lost is not None:
                    self._on_lost()
            if closing and not (self._outcomes or self._handed_back):
                return

    @property
    def reaped(self) -> list[str]:
        """Addresses in flight with other workers of the send that died, found while this
        one sent: now unknown."""
        return list(self._store.unknown)

    async def close(self, task: asyncio.Task[None]) -> None:
        """Once every connection has finished: commit the last outcomes and hand-backs."""
        self.stop()
        self._closing = True
        self._wake.set()
        await task
        await self._thread.call(self._store.close)
        self._thread.close()
        if self.error is not None:
            raise self.error
