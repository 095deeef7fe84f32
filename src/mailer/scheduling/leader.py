"""Jobs that only one worker may run at a time, and the lease that says which one runs them.

Any number of ``mailer worker`` processes, on one machine or several, may share a
database, and all of them may send. Two jobs must be run by one of them only:

- ``scheduler``: deciding that a schedule is due and starting its send; any worker then
  runs the send it started;
- ``bounces``: reading the bounce mailbox, so that no message is handled twice at once.

For each job, the worker that takes the lease runs it and keeps the lease by renewing it
every quarter of its length (``[worker] lease``, 30 seconds by default); the others are
standbys and try to take it at each of their looks. A worker that stops lets go, and a
standby takes over at its next look. A worker that dies keeps the lease until it
expires, then a standby takes over: at once if the dead worker was on the same machine
(its process is gone), within a lease and a poll otherwise, a minute with the defaults.
Every write made on the job's behalf confirms the lease in its own transaction
(:meth:`JobLease.confirm`), so a worker that stalled past its lease can never act alongside
the one that replaced it. Leases are judged by the database server's clock on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mailer.errors import LeaseLost, MailerError, StateError
from mailer.store import leases, sends
from mailer.store.database import Database

if TYPE_CHECKING:
    from sqlmodel import Session

log = logging.getLogger("mailer.worker")
SCHEDULER = "scheduler"
BOUNCES = "bounces"
# Seconds a lease lasts unless renewed, as a worker's lease on a send ([worker] lease): a
# standby takes over within this and one poll.
DEFAULT_TTL = 30.0
WHAT = {SCHEDULER: "the scheduler", BOUNCES: "the reader of the bounce mailbox"}


class JobLease:
    """This process's hold on one job: taken, renewed, confirmed with each write, let go."""

    def __init__(
        self,
        database: Database,
        name: str,
        *,
        ttl: float = DEFAULT_TTL,
        holder: str | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.database = database
        self.name = name
        self.what = WHAT.get(name, name)
        self.ttl = dt.timedelta(seconds=ttl)
        # The process, as a send's holder is named: a standby on the same machine can tell
        # from the process table that it is gone.
        self.holder = holder or sends.this_process()
        # None: the database's clock (tests move time with a clock of their own).
        self.clock = clock
        self.term: int | None = None
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        return self.term is not None

    def take(self) -> bool:
        """Take the lease, or renew it if this process holds it; False while another does."""
        with self._lock:
            before = self.term
            with self.database.session(write=True) as session:
                term = leases.take(session, self.name, self.holder, self._now(session), self.ttl)
                other = leases.get(session, self.name) if term is None else None
            self.term = term
        if term is not None and term != before:
            log.info("%s is now %s (lease term %d)", self.holder, self.what, term)
        elif term is None and before is not None:
            who = other.holder if other is not None and other.holder else "nobody"
            log.warning("%s is no longer %s: %s took it over", self.holder, self.what, who)
        return term is not None

    def renew(self) -> bool:
        """Renew a lease this process holds; False if it holds none, or lost it. A database
        that cannot be reached is logged and the lease presumed held: every write on its
        behalf confirms it anyway."""
        if self.term is None:
            return False
        try:
            return self.take()
        except MailerError as exc:
            log.warning("could not renew the lease of %s: %s", self.what, exc)
            return True

    def confirm(self, session: Session) -> None:
        """Renew the lease within ``session``'s transaction, or raise :class:`LeaseLost`:
        the writes of that transaction then commit only if the lease is still held."""
        term = self.term
        until = self._now(session) + self.ttl
        if term is None or not leases.confirm(session, self.name, self.holder, term, until):
            raise LeaseLost(f"another worker took over as {self.what}")

    def release(self) -> None:
        """Let go, so that a standby takes over at its next look instead of at the expiry."""
        with self._lock:
            term, self.term = self.term, None
            if term is None:
                return
            try:
                with self.database.session(write=True) as session:
                    let_go = leases.release(session, self.name, self.holder, term)
            except MailerError as exc:
                log.warning("could not let go of the lease of %s: %s", self.what, exc)
                return
        if let_go:
            log.info("%s let go of %s", self.holder, self.what)

    def holder_now(self) -> str | None:
        """Who holds the lease now, if anyone holds it unexpired."""
        with self.database.session() as session:
            found = leases.get(session, self.name)
            moment = self._now(session)
        if found is None or found.holder is None or found.expires_at is None:
            return None
        return found.holder if found.expires_at >= moment else None

    def _now(self, session: Session) -> dt.datetime:
        return self.clock() if self.clock is not None else leases.now(session)

    @contextmanager
    def kept(self) -> Iterator[None]:
        """Renew the lease every quarter of its length while the block runs: for work that
        may outlast it outside a running worker (``--once``, a command)."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.ttl.total_seconds() / 4):
                self.renew()

        thread = threading.Thread(target=renew, name=f"lease-{self.name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


@contextmanager
def exclusively(lease: JobLease, advice: str) -> Iterator[None]:
    """Hold ``lease`` for the block, renewed, then let go; StateError naming the holder,
    with ``advice``, if another process holds it."""
    if not lease.take():
        holder = lease.holder_now() or "another mailer process"
        raise StateError(f"{holder} is {lease.what} right now: {advice}")
    try:
        with lease.kept():
            yield
    finally:
        lease.release()
