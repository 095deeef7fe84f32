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
4. After a crash, the rows left ``in-flight`` (at most a batch per connection) become
   ``unknown`` when the send is resumed, for the same reason: mailer guarantees at most
   one copy per person, except the rows it reports as unknown.

All connections of a send run as tasks on one asyncio event loop, on a thread of its own:
the thread that called :func:`run` only waits, watches for Ctrl-C (or SIGTERM, which
``mailer send`` turns into the same) and reports progress. Every wait of the engine (rate
limits, retry backoff) goes through the injected :class:`~mailer.clock.Clock`, so tests
run it against a scripted transport in milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from mailer.clock import Clock, SystemClock
from mailer.config import Settings
from mailer.sending.ledger import BATCH, Ledger
from mailer.sending.message import Content, DkimSigner, MessageTemplate
from mailer.sending.ratelimit import RateLimiter
from mailer.sending.sender import Sender
from mailer.sending.transports import ConnectionFactory
from mailer.store import deliveries, sends
from mailer.store.database import Database
from mailer.store.models import DeliveryStatus, SendStatus, utcnow
from mailer.store.status import PauseReason

log = logging.getLogger("mailer.sender")
D = DeliveryStatus
Progress = Callable[[int, int], None]
# How often the waiting thread reports progress and looks for a stop from outside.
WATCH_EVERY = 0.2


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
    # Addresses left in flight by an earlier run that stopped without recording them: now
    # unknown, and not sent again.
    unknown_in_flight: list[str] = field(default_factory=list)
    # Ledger transactions of this run (bench/send_smtp.py reports rows per commit).
    commits: int = 0


@dataclass(frozen=True)
class _Prepared:
    template: MessageTemplate
    signer: DkimSigner | None
    slug: str


def _prepare(settings: Settings, database: Database, send_id: int) -> _Prepared:
    """Everything that can fail on configuration, done before the send is claimed."""
    with database.session() as session:
        send = sends.get(session, send_id)
        content = Content(send.slug, send.subject, send.html, send.text)
        names = sends.list_slugs_of(session, send_id)
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
) -> RunResult:
    """Send (or resume) one send until it is finished, paused or interrupted.

    ``stop`` lets a caller (the worker, on SIGTERM) pause the send from outside.
    """
    clock = clock or SystemClock()
    prepared = _prepare(settings, database, send_id)
    owner = sends.this_process()
    with database.session(write=True) as session:
        sends.claim(session, send_id, owner)
        session.commit()
        send = sends.get(session, send_id)
        if send.total is None:
            total = deliveries.fix_recipients(session, send)
            log.info("started %s (send %s): %d recipients", send.slug, send_id, total)
        else:
            total = send.total
            log.info("resuming %s (send %s)", send.slug, send_id)
        unknown = deliveries.in_flight_to_unknown(session.connection(), send_id)
        session.commit()
        conn = session.connection()
        if unknown:
            log.warning(
                "%d message(s) were in flight when %s stopped: their outcome is unknown and "
                "they are not sent again (mailer send %s --resend-unknown does, when asked)",
                len(unknown),
                send.slug,
                send.slug,
            )
        finished_before = deliveries.finished_count(conn, send_id)
        recent = deliveries.sent_since(conn, utcnow() - timedelta(hours=1))

    smtp = settings.transport.smtp
    limiter = RateLimiter(smtp.rate_per_second, smtp.rate_per_hour, clock, recent)
    state = Sender(
        settings, prepared.template, prepared.signer, limiter, clock, factory, connections
    )
    state.external_stop = stop
    # Under a rate limit a row is claimed only once its turn has come, so the check of
    # its person's status stays as late as it can be.
    ledger = Ledger(
        database,
        send_id,
        owner,
        connections,
        batch=1 if limiter.active else batch,
        on_lost=state.lost,
    )
    failure: list[BaseException] = []
    finished = threading.Event()

    def loop() -> None:
        try:
            asyncio.run(state.main(ledger))
        except BaseException as exc:  # reported by the waiting thread
            failure.append(exc)
        finally:
            finished.set()

    def progress() -> None:
        if on_progress:
            on_progress(finished_before + ledger.done, total)

    sender = threading.Thread(target=loop, name=f"send-{send_id}", daemon=True)
    sender.start()
    interrupted = False
    # The wait is on an Event, not on Thread.join: a join that Ctrl-C interrupts can take
    # the thread for finished while it still runs (Python 3.11), and the process would
    # exit with messages in hand.
    while not finished.is_set():
        try:
            finished.wait(WATCH_EVERY)
            if stop is not None and stop.is_set():
                state.interrupted(PauseReason.WORKER_STOPPED, "the worker stopped")
            progress()
        except Terminated:
            interrupted = True
            state.interrupted(PauseReason.INTERRUPTED, "stopped by SIGTERM")
        except KeyboardInterrupt:
            interrupted = True
            state.interrupted(PauseReason.INTERRUPTED, "interrupted (Ctrl-C)")
    sender.join()
    progress()
    if failure:
        state.pause_reason = state.pause_reason or PauseReason.ERROR
        state.pause_detail = state.pause_detail or f"internal error: {failure[0]}"
    result = _finish(database, send_id, owner, prepared.slug, total, state, unknown, interrupted)
    result.commits = ledger.commits
    if failure and not isinstance(failure[0], Exception):
        raise failure[0]
    return result


def _finish(
    database: Database,
    send_id: int,
    owner: str,
    slug: str,
    total: int,
    state: Sender,
    unknown: list[str],
    interrupted: bool,
) -> RunResult:
    with database.session(write=True) as session:
        send = sends.get(session, send_id)
        report = deliveries.report(session, send, failed_limit=0)
        unfinished = report.counts.get(D.PENDING, 0) + report.counts.get(D.IN_FLIGHT, 0)
        status, reason = SendStatus(send.status), send.status_reason
        if status == SendStatus.SENDING and send.claimed_by == owner:
            pause: PauseReason | None = None
            if unfinished == 0:
                status, reason = SendStatus.SENT, ""
            else:
                status = SendStatus.PAUSED
                pause = state.pause_reason or PauseReason.INTERRUPTED
                reason = state.pause_detail or ("interrupted" if interrupted else "stopped")
            sends.transition(session, send_id, status, reason, owner=owner, pause=pause)
        else:
            # Paused or cancelled by someone else: now that nothing is in flight, let go.
            sends.release(session, send_id, owner)
        log.info(
            "%s %s (send %s): %d sent, %d failed, %d unknown, %d skipped, %d left",
            "finished" if status == SendStatus.SENT else str(status),
            slug,
            send_id,
            report.sent,
            report.counts.get(D.FAILED_TEMPORARY, 0) + report.counts.get(D.FAILED_PERMANENT, 0),
            report.counts.get(D.UNKNOWN, 0),
            report.counts.get(D.SKIPPED, 0),
            unfinished,
        )
        return RunResult(send_id, slug, status, reason, total, report.counts, unknown)
