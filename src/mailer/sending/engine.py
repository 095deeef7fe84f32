"""Runs a send from its ledger: connections, retries, rate limits, pause and resume.

How a recipient's row moves, and why nobody is mailed twice or missed without a word:

1. The recipients were fixed in the ledger when the send started (``pending`` rows).
2. Each connection keeps a small batch of rows claimed ahead (:mod:`mailer.sending.ledger`).
   Claiming a row checks its person's current status in the same transaction, so someone
   who unsubscribed, bounced or complained since the send started is ``skipped``; the
   others become ``in-flight``, committed before any byte of their message is written.
3. A row becomes ``sent`` only after the server accepted its message, ``failed-*`` when
   the server refused it, and ``unknown`` when the whole message was written and no reply
   came: the server may have taken it, so it is never sent again unless someone asks
   (``mailer send SLUG --resend-unknown``). Outcomes are committed in batches.
4. After a crash, the rows left ``in-flight`` (at most a batch per connection of the
   worker that died) are settled when another worker finds it dead, or when the send is
   resumed: by the dead worker's journal (:mod:`mailer.sending.journal`) if it can be
   read, the rows never begun go back to ``pending`` and only the copies on the wire (two
   per connection) become ``unknown``; without it, all of them do. mailer guarantees at
   most one copy per person, except the rows it reports as unknown.

Any number of workers (``mailer worker`` processes on any machines sharing the database,
``mailer send`` from a terminal) may run one send at once, each with its own connections
and its own lease on the send (:mod:`mailer.sending.workers` says how they join and
leave, and :mod:`mailer.store.ledger_writer` how their claims keep apart).

All connections of a send run as tasks on one asyncio event loop, on a thread of its own:
the thread that called :func:`run` only waits, watches for Ctrl-C (or SIGTERM, which
``mailer send`` turns into the same) and reports progress. Every wait of the engine (rate
limits, retry backoff) goes through the injected :class:`~mailer.clock.Clock`, so tests
run it against a scripted transport in milliseconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from mailer.clock import Clock, SystemClock
from mailer.config import Settings
from mailer.sending import workers
from mailer.sending.journal import Journal
from mailer.sending.ledger import BATCH, Ledger
from mailer.sending.message import Content, DkimSigner, MessageTemplate
from mailer.sending.ratelimit import SharedRateLimiter, limiter_for
from mailer.sending.sender import Sender
from mailer.sending.transports import ConnectionFactory
from mailer.store import for_sending as store
from mailer.store.for_sending import Database, DeliveryStatus, PauseReason, SendStatus

log = logging.getLogger("mailer.sender")
D = DeliveryStatus
Progress = Callable[[int, int], None]
# How often the waiting thread reports progress and looks for a stop from outside.
WATCH_EVERY = 0.2
# Rounds in a row that send nothing before a worker gives up on rows it cannot claim.
MAX_IDLE_ROUNDS = 3


class Terminated(KeyboardInterrupt):
    """SIGTERM, which ``mailer send`` handles as Ctrl-C: finish what is in hand, pause."""


@dataclass
class RunResult:
    send_id: int
    slug: str
    status: SendStatus
    reason: str
    total: int
    counts: dict[str, int]
    # Addresses left in flight by a worker that stopped without recording them (an
    # earlier run, or another worker of the send that died): now unknown, not sent again.
    unknown_in_flight: list[str] = field(default_factory=list)
    # Ledger transactions of this run (bench/send_smtp.py reports rows per commit).
    commits: int = 0
    # Other workers still sending it, when this one left a send that goes on.
    others: int = 0
    # Whether this worker finished or paused the send (not another worker, nor a person).
    changed: bool = True


@dataclass(frozen=True)
class _Prepared:
    template: MessageTemplate
    signer: DkimSigner | None
    slug: str


def _prepare(settings: Settings, database: Database, send_id: int) -> _Prepared:
    """Everything that can fail on configuration, done before the send is claimed."""
    with database.session() as session:
        send = store.get_send(session, send_id)
        content = Content(send.slug, send.subject, send.html, send.text)
        names = store.list_slugs_of(session, send_id)
    list_id = f"{'-'.join(names) or 'newsletter'}.{settings.sender.domain}"
    template = MessageTemplate(settings, content, list_id=list_id, send_id=send_id)
    return _Prepared(template, DkimSigner.from_environment(), send.slug)


def run(
    settings: Settings,
    database: Database,
    send_id: int,
    factory: ConnectionFactory,
    *,
    connections: int = 1,
    clock: Clock | None = None,
    on_progress: Progress | None = None,
    stop: threading.Event | None = None,
    batch: int = BATCH,
    seen: workers.SendAsSeen | None = None,
) -> RunResult:
    """Send (or resume, or join) one send until it is finished or paused, this worker is
    interrupted, or it has nothing left to claim while other workers finish the rest.

    ``stop`` lets a caller (the worker, on SIGTERM) stop this worker from outside.
    ``seen``: the send as a worker saw it when it chose to take it up by itself; it is
    joined only if it is still so (StateError if not).
    """
    clock = clock or SystemClock()
    prepared = _prepare(settings, database, send_id)
    worker = store.new_worker_id()
    lease = dt.timedelta(seconds=settings.worker.lease)
    # Before the first claim: a worker that dies with rows in flight and no journal has
    # all of them reported unknown.
    journal = Journal.create(settings, send_id, worker)
    try:
        return _run(
            settings,
            database,
            send_id,
            factory,
            worker,
            lease,
            journal,
            prepared,
            connections,
            clock,
            on_progress,
            stop,
            batch,
            seen,
        )
    finally:
        # Every row this run began has its outcome committed, or is left for a reaper
        # that then reports it unknown: the journal has nothing more to say.
        journal.close()


def _run(
    settings: Settings,
    database: Database,
    send_id: int,
    factory: ConnectionFactory,
    worker: str,
    lease: dt.timedelta,
    journal: Journal,
    prepared: _Prepared,
    connections: int,
    clock: Clock,
    on_progress: Progress | None,
    stop: threading.Event | None,
    batch: int,
    seen: workers.SendAsSeen | None,
) -> RunResult:
    joined = workers.join(database, send_id, worker, connections, lease, seen)
    if joined.started:
        log.info("started %s (send %s): %d recipients", joined.slug, send_id, joined.total)
    else:
        log.info("working on %s (send %s) as %s", joined.slug, send_id, worker)
    _warn_unknown(joined.slug, joined.unknown)
    run = _Run(settings, database, send_id, worker, factory, prepared, clock, lease, journal)
    unknown = list(joined.unknown)
    idle_rounds = 0
    while True:
        state, ledger = run.round(connections, batch, joined.total, on_progress, stop)
        unknown += ledger.reaped
        pause, detail = state.pause_reason, state.pause_detail
        if run.interrupted and pause is None:
            pause, detail = PauseReason.INTERRUPTED, "interrupted"
        idle_rounds = 0 if ledger.done else idle_rounds + 1
        if idle_rounds >= MAX_IDLE_ROUNDS:
            pause = PauseReason.ERROR
            detail = "rows are pending, but this worker found none it could claim"
        left = workers.leave(database, send_id, worker, pause, detail)
        if left.next != workers.Next.AGAIN:
            break
        log.info("rows of %s came back from a worker that left: sending them", joined.slug)
    if left.lost_lease:
        log.warning(
            "another worker presumed this one dead and took over its rows of %s (send %s)",
            joined.slug,
            send_id,
        )
    if run.failure and not isinstance(run.failure[0], Exception):
        raise run.failure[0]
    return _result(database, send_id, joined, left, unknown, run.commits)


class _Run:
    """The rounds of one worker on one send: each a fresh event loop with its connections,
    ledger and rate limiter, run on a thread of its own while the calling thread waits."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        send_id: int,
        worker: str,
        factory: ConnectionFactory,
        prepared: _Prepared,
        clock: Clock,
        lease: dt.timedelta,
        journal: Journal,
    ) -> None:
        self.settings, self.database, self.send_id = settings, database, send_id
        self.worker, self.factory, self.prepared = worker, factory, prepared
        self.clock, self.lease, self.journal = clock, lease, journal
        self.interrupted = False
        self.failure: list[BaseException] = []
        self.commits = 0

    def round(
        self,
        connections: int,
        batch: int,
        total: int,
        on_progress: Progress | None,
        stop: threading.Event | None,
    ) -> tuple[Sender, Ledger]:
        with self.database.session() as session:
            finished_before = store.finished_count(session.connection(), self.send_id)
        limiter = limiter_for(self.settings, self.database, self.worker, self.clock)
        if isinstance(limiter, SharedRateLimiter):
            limiter.open()
        p = self.prepared
        state = Sender(
            self.settings,
            p.template,
            p.signer,
            limiter,
            self.clock,
            self.factory,
            connections,
            self.journal,
        )
        state.external_stop = stop
        # Under a rate limit a row is claimed only once its turn has come, so the check of
        # its person's status stays as late as it can be.
        ledger = Ledger(
            self.database,
            self.send_id,
            self.worker,
            connections,
            batch=1 if limiter.active else batch,
            on_lost=state.lost,
            lease=self.lease,
            journal=self.journal,
        )
        finished = threading.Event()

        def loop() -> None:
            try:
                asyncio.run(state.main(ledger))
            except BaseException as exc:  # reported by the waiting thread
                self.failure.append(exc)
            finally:
                finished.set()

        def progress() -> None:
            if on_progress:
                on_progress(finished_before + ledger.done, total)

        sender = threading.Thread(target=loop, name=f"send-{self.send_id}", daemon=True)
        sender.start()
        # The wait is on an Event, not on Thread.join: a join that Ctrl-C interrupts can
        # take the thread for finished while it still runs (Python 3.11), and the process
        # would exit with messages in hand.
        while not finished.is_set():
            try:
                finished.wait(WATCH_EVERY)
                if stop is not None and stop.is_set():
                    state.interrupted(PauseReason.WORKER_STOPPED, "the worker stopped")
                progress()
            except Terminated:
                self.interrupted = True
                state.interrupted(PauseReason.INTERRUPTED, "stopped by SIGTERM")
            except KeyboardInterrupt:
                self.interrupted = True
                state.interrupted(PauseReason.INTERRUPTED, "interrupted (Ctrl-C)")
        sender.join()
        progress()
        if self.failure:
            state.pause_reason = state.pause_reason or PauseReason.ERROR
            state.pause_detail = state.pause_detail or f"internal error: {self.failure[0]}"
        self.commits += ledger.commits
        return state, ledger


def _warn_unknown(slug: str, unknown: list[str]) -> None:
    if unknown:
        log.warning(
            "%d message(s) were in flight when a sender of %s stopped: their outcome is "
            "unknown and they are not sent again (mailer send %s --resend-unknown does, "
            "when asked)",
            len(unknown),
            slug,
            slug,
        )


def _result(
    database: Database,
    send_id: int,
    joined: workers.Joined,
    left: workers.Left,
    unknown: list[str],
    commits: int,
) -> RunResult:
    with database.session() as session:
        send = store.get_send(session, send_id)
        report = store.send_report(session, send, failed_limit=0)
    status = SendStatus(send.status)
    log.info(
        "%s %s (send %s): %d sent, %d failed, %d unknown, %d skipped, %d left%s",
        "finished" if status == SendStatus.SENT else str(status),
        joined.slug,
        send_id,
        report.sent,
        report.counts.get(D.FAILED_TEMPORARY, 0) + report.counts.get(D.FAILED_PERMANENT, 0),
        report.counts.get(D.UNKNOWN, 0),
        report.counts.get(D.SKIPPED, 0),
        report.counts.get(D.PENDING, 0) + report.counts.get(D.IN_FLIGHT, 0),
        f"; {left.others} other worker(s) go on" if status == SendStatus.SENDING else "",
    )
    return RunResult(
        send_id,
        joined.slug,
        status,
        send.status_reason if status != SendStatus.SENDING else "",
        joined.total,
        report.counts,
        unknown,
        commits,
        others=left.others if status == SendStatus.SENDING else 0,
        changed=left.changed,
    )
