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

import sqlalchemy as sa

from mailer import sends
from mailer.config import Settings
from mailer.db import Database
from mailer.errors import PermanentSendError, TemporarySendError, TransportUnavailable
from mailer.ledger import Ledger, Outcome
from mailer.message import Content, DkimSigner, MessageTemplate, Recipient
from mailer.models import DeliveryStatus, SendStatus, as_utc, utcnow
from mailer.ratelimit import Clock, RateLimiter, SystemClock
from mailer.transports import Transport, TransportFactory

log = logging.getLogger("mailer.sender")
D = DeliveryStatus
FETCH = 500
# The reason a send is paused when the worker running it stops; the next worker resumes it.
WORKER_STOPPED = "the worker stopped"
# The start of the reason when the server was down or refused the login; the worker tries
# such a send again every few minutes, a person with `mailer send SLUG --resume`.
UNAVAILABLE = "server unavailable: "
DELIVERY = sends.DELIVERY
SEND = sends.SEND
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
        self.pause_reason = ""
        self._lock = threading.Lock()
        self._errors_in_a_row = 0

    def request_pause(self, reason: str) -> None:
        with self._lock:
            if not self.pause_reason:
                self.pause_reason = reason
                log.warning("pausing: %s", reason)
        self.stop.set()

    def _count(self, error: bool) -> None:
        limit = self.settings.transport.pause_after_errors
        with self._lock:
            self._errors_in_a_row = self._errors_in_a_row + 1 if error else 0
            too_many = limit > 0 and self._errors_in_a_row >= limit
        if too_many:
            self.request_pause(f"{limit} failures in a row")

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
                transport.send(self.settings.sender.from_address, row.email, data)
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
                if self.stop.wait(t.retry_backoff * 2 ** (attempt - 1)):
                    return Outcome(row.id, D.PENDING, attempt, "", str(exc))
                continue
            except TransportUnavailable as exc:
                self.request_pause(f"{UNAVAILABLE}{exc}")
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
                self.ledger.record(previous, begin=row.id)
                previous = None
                try:
                    previous = self.deliver(box, factory, row)
                except Exception as exc:  # a bug or an unmapped error: this row, not the run
                    log.exception("delivering to %s failed", row.email)
                    self._count(error=True)
                    previous = Outcome(row.id, D.FAILED_TEMPORARY, 1, "", f"internal error: {exc}")
        except BaseException as exc:  # never die silently: stop the run and say why
            log.exception("connection thread failed")
            self.request_pause(f"internal error: {exc}")
        finally:
            try:
                self.ledger.record(previous)
            except Exception as exc:  # the row stays in flight; resume sends it again
                log.error("could not record the last outcome: %s", exc)
                self.request_pause(f"the ledger could not be written: {exc}")
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
    d = DELIVERY.c
    with database.session(write=True) as session:
        sends.claim(session, send_id, owner)
        session.commit()
        send = sends.get(session, send_id)
        if send.total is None:
            total = sends.fix_recipients(session, send)
            log.info("started %s (send %s): %d recipients", send.slug, send_id, total)
        else:
            total = send.total
            log.info("resuming %s (send %s)", send.slug, send_id)
        conn = session.connection()
        resent = list(
            conn.execute(
                sa.select(d.email).where(d.send_id == send_id, d.status == D.IN_FLIGHT)
            ).scalars()
        )
        if resent:
            log.warning(
                "%d message(s) were in flight when %s stopped; sending them again: %s",
                len(resent),
                send.slug,
                ", ".join(resent),
            )
            sends.reset_for_retry(session, send_id, [D.IN_FLIGHT])
            conn = session.connection()
        finished_before = conn.execute(
            sa.select(sa.func.count()).where(d.send_id == send_id, d.status != D.PENDING)
        ).scalar_one()
        hour_ago = utcnow() - timedelta(hours=1)
        recent = [
            as_utc(t).timestamp()
            for t in conn.execute(sa.select(d.sent_at).where(d.sent_at >= hour_ago)).scalars()
        ]

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
            state.request_pause("interrupted (Ctrl-C)")
        except BaseException as exc:
            state.request_pause(f"internal error: {exc}")
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
                    if clock.monotonic() - last_check >= 0.5:
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
                        state.request_pause("interrupted (Ctrl-C)")
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
    """Queue ``item``, ticking while the queue is full; False when the run stopped."""
    while True:
        try:
            work.put(item, timeout=0.2)
            return True
        except queue.Full:
            if tick is not None:
                tick()
                if state.stop.is_set():
                    return False


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
    marks = {"check": state.clock.monotonic()}

    def tick() -> None:
        now = state.clock.monotonic()
        if now - marks["check"] < 0.5:
            return
        marks["check"] = now
        _check(conn, send_id, owner, state)
        progress()

    d = DELIVERY.c
    while not state.stop.is_set():
        rows = conn.execute(
            sa.select(d.id, d.subscriber_id, d.email, d.name)
            .where(d.send_id == send_id, d.status == D.PENDING, d.id > last_id)
            .order_by(d.id)
            .limit(FETCH)
        ).all()
        conn.rollback()
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
        state.request_pause(WORKER_STOPPED)
        return
    row = conn.execute(
        sa.select(SEND.c.status, SEND.c.claimed_by).where(SEND.c.id == send_id)
    ).first()
    conn.rollback()
    if row is None or row.status != SendStatus.SENDING or row.claimed_by != owner:
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
        report = sends.report(session, send, failed_limit=0)
        unfinished = report.counts.get(D.PENDING, 0) + report.counts.get(D.IN_FLIGHT, 0)
        status, reason = SendStatus(send.status), send.status_reason
        if status == SendStatus.SENDING and send.claimed_by == owner:
            if unfinished == 0:
                status, reason = SendStatus.SENT, ""
            else:
                status = SendStatus.PAUSED
                reason = state.pause_reason or ("interrupted" if interrupted else "stopped")
            sends.transition(session, send_id, status, reason, owner=owner)
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
