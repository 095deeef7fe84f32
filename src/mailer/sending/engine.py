"""Runs a send from its ledger: connections, retries, rate limits, pause and resume.

How a recipient's row moves, and why nothing is lost or sent twice:

1. The recipients were fixed in the ledger when the send started (``pending`` rows).
2. A connection thread takes the next pending row and asks the ledger to mark it
   ``in-flight``, in the same transaction that records the outcome of its previous message.
   It waits until that transaction is committed before it talks to the server.
3. Only after the server accepted the message is the row marked ``sent`` (committed with the
   next ``in-flight`` mark, or at the end). So after a crash (kill -9) each connection has
   at most one row ``in-flight``; every ``sent`` row really was accepted and every
   ``pending`` row was never tried.
4. On resume, ``in-flight`` rows are sent again (the documented policy, docs/sending.md:
   a rare second copy is better than a practitioner missing the newsletter), and pending
   rows continue in ledger order.

Every wait (rate limits, retry backoff) goes through the injected :class:`~mailer.clock.Clock`,
so tests run the engine against a scripted transport in milliseconds.

The ledger writer commits the marks of all connections together (group commit), so the
database is not what limits throughput.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from mailer.clock import Clock, SystemClock
from mailer.config import Settings
from mailer.errors import PermanentSendError, TemporarySendError, TransportUnavailable
from mailer.sending.ledger import Ledger, Outcome, Turn
from mailer.sending.message import Content, DkimSigner, MessageTemplate, Recipient
from mailer.sending.ratelimit import RateLimiter
from mailer.sending.transports import Transport, TransportFactory
from mailer.sending.verp import envelope_sender
from mailer.store import deliveries, sends
from mailer.store.database import Database
from mailer.store.models import DeliveryStatus, SendStatus, utcnow
from mailer.store.status import PauseReason

log = logging.getLogger("mailer.sender")
D = DeliveryStatus
# The dispatcher looks for `mailer pause` this often (clock seconds), and at least every
# CHECK_EVERY rows, so a test on a fake clock sees the pause as a real send would.
CHECK_INTERVAL = 0.5
CHECK_EVERY = 32
Progress = Callable[[int, int], None]


@dataclass
class RunResult:
    send_id: int
    slug: str
    status: SendStatus
    reason: str
    total: int
    counts: dict[str, int]
    resent_in_flight: list[str] = field(default_factory=list)


class _Run:
    """The state of one run of a send, shared by its connection threads."""

    def __init__(
        self,
        settings: Settings,
        template: MessageTemplate,
        signer: DkimSigner | None,
        limiter: RateLimiter,
        ledger: Ledger,
        clock: Clock,
    ) -> None:
        self.settings, self.template, self.signer = settings, template, signer
        self.limiter, self.ledger, self.clock = limiter, ledger, clock
        self.stop = threading.Event()
        self.external_stop: threading.Event | None = None
        self.pause_reason: PauseReason | None = None
        self.pause_detail = ""
        self._lock = threading.Lock()
        self._errors_in_a_row = 0

    def request_pause(self, reason: PauseReason, detail: str) -> None:
        with self._lock:
            if self.pause_reason is None:
                self.pause_reason, self.pause_detail = reason, detail
                log.warning("pausing: %s", detail)
        self.stop.set()

    def _count(self, error: bool) -> None:
        limit = self.settings.transport.pause_after_errors
        with self._lock:
            self._errors_in_a_row = self._errors_in_a_row + 1 if error else 0
            too_many = limit > 0 and self._errors_in_a_row >= limit
        if too_many:
            self.request_pause(PauseReason.FAILURES, f"{limit} failures in a row")

    def deliver(
        self, transport_box: list[Transport | None], factory: TransportFactory, row: Any
    ) -> Outcome:
        """Try one recipient until it is accepted, refused, out of attempts or the run stops."""
        recipient = Recipient(row.email, row.name or "", row.subscriber_id or 0, row.id)
        message_id, data = self.template.render(recipient)
        if self.signer is not None:
            data = self.signer.sign(data)
        t = self.settings.transport
        attempt = 0
        while True:
            attempt += 1
            try:
                transport = transport_box[0]
                if transport is None:
                    transport = transport_box[0] = factory()
                # The rate slot is taken only once the line is ready, so connection set-up
                # never bunches messages together at the server.
                transport.open()
                if not self.limiter.wait(self.stop):
                    return Outcome(row.id, D.PENDING)  # stopped while waiting: untried
                transport.send(envelope_sender(self.settings, row.id), row.email, data)
            except PermanentSendError as exc:
                self._count(error=True)
                return Outcome(
                    row.id, D.FAILED_PERMANENT, attempt, "", str(exc), row.subscriber_id, exc.bounce
                )
            except TemporarySendError as exc:
                self._count(error=True)
                if self.stop.is_set():
                    # Stopping: not worth a failure; it goes back to pending for the resume.
                    return Outcome(row.id, D.PENDING, attempt, "", str(exc))
                if attempt >= t.max_attempts:
                    return Outcome(
                        row.id, D.FAILED_TEMPORARY, attempt, "", str(exc), row.subscriber_id
                    )
                if not self.clock.sleep(t.retry_backoff * 2 ** (attempt - 1), self.stop):
                    return Outcome(row.id, D.PENDING, attempt, "", str(exc))
                continue
            except TransportUnavailable as exc:
                self.request_pause(PauseReason.UNAVAILABLE, f"server unavailable: {exc}")
                return Outcome(row.id, D.PENDING)
            self._count(error=False)
            return Outcome(row.id, D.SENT, attempt, message_id, "", row.subscriber_id)

    def connection(self, work: queue.Queue[Any], factory: TransportFactory) -> None:
        box: list[Transport | None] = [None]
        previous: Outcome | None = None
        try:
            while True:
                row = work.get()
                if row is None or self.stop.is_set():
                    break
                turn = self.ledger.record(previous, begin=row.id)
                previous = None
                if turn is Turn.STOP:
                    # Paused or cancelled from elsewhere: this row was marked in flight in
                    # the same commit that found out, and is handed back untried.
                    self.stop.set()
                    previous = Outcome(row.id, D.PENDING)
                    break
                if turn is Turn.SKIP:
                    continue
                try:
                    previous = self.deliver(box, factory, row)
                except Exception as exc:  # a bug or an unmapped error: this row, not the run
                    log.exception("delivering to subscriber %s failed", row.subscriber_id)
                    self._count(error=True)
                    previous = Outcome(row.id, D.FAILED_TEMPORARY, 1, "", f"internal error: {exc}")
        except BaseException as exc:  # never die silently: stop the run and say why
            log.exception("connection thread failed")
            self.request_pause(PauseReason.ERROR, f"internal error: {exc}")
        finally:
            try:
                self.ledger.record(previous)
            except Exception as exc:  # the row stays in flight; resume sends it again
                log.error("could not record the last outcome: %s", exc)
                self.request_pause(PauseReason.ERROR, f"the ledger could not be written: {exc}")
            if box[0] is not None:
                box[0].close()


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
    factory: TransportFactory,
    *,
    connections: int = 1,
    clock: Clock | None = None,
    on_progress: Progress | None = None,
    stop: threading.Event | None = None,
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
        resent = deliveries.in_flight(session.connection(), send_id)
        if resent:
            log.warning(
                "%d message(s) were in flight when %s stopped; sending them again",
                len(resent),
                send.slug,
            )
            deliveries.reset_for_retry(session, send_id, [D.IN_FLIGHT])
        conn = session.connection()
        finished_before = deliveries.finished_count(conn, send_id)
        recent = deliveries.sent_since(conn, utcnow() - timedelta(hours=1))

    smtp = settings.transport.smtp
    state = _Run(
        settings,
        prepared.template,
        prepared.signer,
        RateLimiter(smtp.rate_per_second, smtp.rate_per_hour, clock, recent),
        Ledger(database, send_id, owner),
        clock,
    )
    state.external_stop = stop

    def progress(_done: int = 0, _total: int = 0) -> None:
        if on_progress:
            on_progress(finished_before + state.ledger.done, total)

    work: queue.Queue[Any] = queue.Queue(maxsize=max(connections * 4, 16))
    threads = [
        threading.Thread(
            target=state.connection, args=(work, factory), name=f"conn-{i}", daemon=True
        )
        for i in range(connections)
    ]
    for t in threads:
        t.start()
    interrupted = False
    with database.engine.connect() as watch:
        try:
            _dispatch(watch, send_id, owner, state, work, progress)
        except KeyboardInterrupt:
            interrupted = True
            state.request_pause(PauseReason.INTERRUPTED, "interrupted (Ctrl-C)")
        except BaseException as exc:
            state.request_pause(PauseReason.ERROR, f"internal error: {exc}")
            raise
        finally:
            # Rows still queued stay pending in the ledger; drop them, tell each thread to end.
            if state.stop.is_set():
                _drain(work)
            for _ in threads:
                _put(work, None, None, state)
            last_check = 0.0
            drained = state.stop.is_set()
            for t in threads:
                while t.is_alive():
                    # Keep watching for `mailer pause` while the last messages go out.
                    if clock.monotonic() - last_check >= CHECK_INTERVAL:
                        last_check = clock.monotonic()
                        _check(watch, send_id, owner, state)
                        if state.stop.is_set() and not drained:
                            # Queued rows stay pending; the end markers go back in once.
                            drained = True
                            _drain(work)
                            for _ in threads:
                                _put(work, None, None, state)
                        progress()
                    try:
                        t.join(0.2)
                    except KeyboardInterrupt:
                        interrupted = True
                        state.request_pause(PauseReason.INTERRUPTED, "interrupted (Ctrl-C)")
            state.ledger.close()
    progress()
    return _finish(database, send_id, owner, prepared.slug, total, state, resent, interrupted)


def _drain(work: queue.Queue[Any]) -> None:
    while True:
        try:
            work.get_nowait()
        except queue.Empty:
            return


def _put(work: queue.Queue[Any], item: Any, tick: Callable[[], None] | None, state: _Run) -> bool:
    """Queue ``item``, ticking while the queue is full; False when the run stopped.

    An end marker (``tick`` None) always gets in: once the run has stopped, the rows still
    queued are dropped (they stay pending in the ledger) to make room, since connections
    that stopped on their own no longer take from the queue.
    """
    while True:
        try:
            work.put(item, timeout=0.2)
            return True
        except queue.Full:
            if tick is not None:
                tick()
                if state.stop.is_set():
                    return False
            elif state.stop.is_set():
                _drain_rows(work)


def _drain_rows(work: queue.Queue[Any]) -> None:
    """Drop queued rows but keep the end markers already queued."""
    kept = 0
    while True:
        try:
            item = work.get_nowait()
        except queue.Empty:
            break
        if item is None:
            kept += 1
    for _ in range(kept):
        work.put_nowait(None)


def _dispatch(
    conn: Any,
    send_id: int,
    owner: str,
    state: _Run,
    work: queue.Queue[Any],
    progress: Callable[[], None],
) -> None:
    """Feed pending rows to the connections in ledger order, watching for a pause."""
    last_id = 0
    marks = {"check": state.clock.monotonic(), "rows": 0}

    def tick() -> None:
        now = state.clock.monotonic()
        marks["rows"] += 1
        if now - marks["check"] < CHECK_INTERVAL and marks["rows"] < CHECK_EVERY:
            return
        marks["check"], marks["rows"] = now, 0
        _check(conn, send_id, owner, state)
        progress()

    while not state.stop.is_set():
        rows = deliveries.pending_after(conn, send_id, last_id)
        if not rows:
            return
        for row in rows:
            if not _put(work, row, tick, state):
                return
            last_id = row.id
            tick()


def _check(conn: Any, send_id: int, owner: str, state: _Run) -> None:
    """Stop when someone paused or cancelled the send (``mailer pause``) meanwhile."""
    if state.external_stop is not None and state.external_stop.is_set():
        state.request_pause(PauseReason.WORKER_STOPPED, "the worker stopped")
        return
    found = sends.status_of(conn, send_id)
    if found is None or found[0] != SendStatus.SENDING or found[1] != owner:
        state.stop.set()


def _finish(
    database: Database,
    send_id: int,
    owner: str,
    slug: str,
    total: int,
    state: _Run,
    resent: list[str],
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
            "%s %s (send %s): %d sent, %d failed, %d left",
            "finished" if status == SendStatus.SENT else str(status),
            slug,
            send_id,
            report.sent,
            report.counts.get(D.FAILED_TEMPORARY, 0) + report.counts.get(D.FAILED_PERMANENT, 0),
            unfinished,
        )
        return RunResult(send_id, slug, status, reason, total, report.counts, resent)
