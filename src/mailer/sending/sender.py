"""The tasks of one run of a send, on its event loop: one per connection, each taking the
rows the ledger claimed for it, rendering each message for its connection, delivering it,
and recording what happened (see :mod:`mailer.sending.engine` for the whole flow).

A temporary failure is retried on the same connection after a backoff, while the
connection goes on with other rows; with PIPELINING, the next row's envelope goes ahead
with the current message (:meth:`Sender._lookahead`). Stopping (a pause from anywhere,
Ctrl-C, SIGTERM, the server unavailable, too many failures in a row) lets every
connection finish what is on the wire and hands the rest back as pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass

from mailer.clock import Clock
from mailer.config import Settings
from mailer.errors import (
    DeliveryUnknown,
    PermanentSendError,
    TemporarySendError,
    TransportUnavailable,
)
from mailer.sending.journal import Journal
from mailer.sending.ledger import Ledger, Outcome
from mailer.sending.message import DkimSigner, MessageTemplate, Recipient, stuff
from mailer.sending.ratelimit import DailyLimitReached, RateLimiter, SharedRateLimiter, Slot
from mailer.sending.transports import Connection, ConnectionFactory, Outgoing
from mailer.sending.transports.smtp import deliverable
from mailer.sending.verp import envelope_sender
from mailer.store.for_sending import DeliveryStatus, LedgerRow, PauseReason

log = logging.getLogger("mailer.sender")
D = DeliveryStatus


@dataclass
class Item:
    """A claimed row on its way: its attempts, and its message as last rendered."""

    row: LedgerRow
    attempts: int = 0
    due: float = 0.0  # a retry waits until then (clock.monotonic())
    message: Outgoing | None = None
    message_id: str = ""
    mode: tuple[bool, bool] | None = None  # (wire, smtputf8) it was rendered for
    begun: bool = False  # in the journal as begun (its envelope may be on the wire)


class Sender:
    """The state of one run of a send, shared by its connection tasks."""

    def __init__(
        self,
        settings: Settings,
        template: MessageTemplate,
        signer: DkimSigner | None,
        limiter: RateLimiter | SharedRateLimiter,
        clock: Clock,
        factory: ConnectionFactory,
        connections: int,
        journal: Journal | None = None,
    ) -> None:
        self.settings, self.template, self.signer = settings, template, signer
        self.journal = journal or Journal()
        self.limiter, self.clock, self.factory = limiter, clock, factory
        self.connections = connections
        self.pause_reason: PauseReason | None = None
        self.pause_detail = ""
        self.external_stop: threading.Event | None = None
        # Set from the waiting thread (Ctrl-C, SIGTERM, the worker stopping); read here.
        self.interrupt: tuple[PauseReason, str] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._errors_in_a_row = 0
        self._ascii: dict[str, str] = {}
        self.stop_event: asyncio.Event
        self.ledger: Ledger

    # -- stopping ---------------------------------------------------------------------------

    def request_pause(self, reason: PauseReason, detail: str) -> None:
        if self.pause_reason is None:
            self.pause_reason, self.pause_detail = reason, detail
            log.warning("pausing: %s", detail)
        self._stop()

    def _stop(self) -> None:
        if not self.stop_event.is_set():
            self.stop_event.set()
            self.ledger.stop()

    def lost(self) -> None:
        """The send was paused or cancelled from anywhere, or another worker presumed this
        one dead: stop, without a reason of ours."""
        self._stop()

    def stopped(self) -> bool:
        if self.interrupt is not None and self.pause_reason is None:
            self.request_pause(*self.interrupt)
        elif self.external_stop is not None and self.external_stop.is_set():
            self.request_pause(PauseReason.WORKER_STOPPED, "the worker stopped")
        return self.stop_event.is_set()

    def interrupted(self, reason: PauseReason, detail: str) -> None:
        """Called from the waiting thread: stop at the next message, and wake any wait."""
        self.interrupt = (reason, detail)
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop has just finished
                loop.call_soon_threadsafe(self.stopped)

    def _count(self, error: bool) -> None:
        limit = self.settings.transport.pause_after_errors
        self._errors_in_a_row = self._errors_in_a_row + 1 if error else 0
        if limit > 0 and self._errors_in_a_row >= limit:
            self.request_pause(PauseReason.FAILURES, f"{limit} failures in a row")

    # -- the event loop ---------------------------------------------------------------------

    async def main(self, ledger: Ledger) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        self.ledger = ledger
        committer = asyncio.create_task(ledger.run())
        try:
            await asyncio.gather(*(self.connection(c) for c in range(self.connections)))
        finally:
            # The slots of a shared rate limit are freed first, for the other workers.
            await self.limiter.close()
            try:
                await ledger.close(committer)
            except Exception as exc:  # the rows stay in flight; a resume reports them
                log.error("could not record the last outcomes: %s", exc)
                self.request_pause(PauseReason.ERROR, f"the ledger could not be written: {exc}")

    async def connection(self, c: int) -> None:
        conn: Connection | None = None
        retries: list[Item] = []
        follow: Item | None = None
        try:
            while True:
                slot: Slot | None = None
                if follow is not None and not (
                    self.stop_event.is_set()
                    and not (conn is not None and follow.message and conn.holds(follow.message))
                ):
                    # Its envelope is on the wire (or the send goes on): it goes next.
                    item, follow = follow, None
                else:
                    if follow is not None:  # stopping, and never started: back to pending
                        self.ledger.record(c, Outcome(follow.row.id, D.PENDING))
                        follow = None
                    if self.stopped() or self.ledger.error is not None:
                        break
                    if self.limiter.active:
                        # The connection is made first, so its set-up never bunches messages
                        # together at the server.
                        conn = await self._connected(conn)
                        if conn is None:
                            break
                        try:
                            slot = await self.limiter.acquire(self.stopped)
                        except DailyLimitReached as exc:
                            self.request_pause(PauseReason.DAILY_LIMIT, str(exc))
                            break
                        if slot is None:
                            break
                    found = await self._next(c, retries)
                    if found is None:
                        self.limiter.done(slot)
                        if not retries:
                            break
                        wait = min(r.due for r in retries) - self.clock.monotonic()
                        await self.clock.sleep_async(wait, self.stop_event)
                        continue
                    item = found
                try:
                    conn, follow = await self._deliver(c, conn, item, retries)
                finally:
                    self.limiter.done(slot)
        except Exception as exc:  # never die silently: stop the run and say why
            log.exception("connection %d failed", c)
            self.request_pause(PauseReason.ERROR, f"internal error: {exc}")
        finally:
            for item in [*retries, *([follow] if follow is not None else [])]:
                self.ledger.record(c, Outcome(item.row.id, D.PENDING))
            if conn is not None:
                await self._close(c, conn)

    @staticmethod
    async def _close(c: int, conn: Connection) -> None:
        try:
            await conn.disconnect()
        except Exception as exc:  # closing is a courtesy to the server
            log.info("closing connection %d: %s", c, exc)

    async def _connected(self, conn: Connection | None) -> Connection | None:
        """``conn`` (or a new connection) ready to send; None if the server is unavailable."""
        try:
            conn = conn or self.factory()
            await conn.connect()
            return conn
        except TransportUnavailable as exc:
            self.request_pause(PauseReason.UNAVAILABLE, f"server unavailable: {exc}")
            return None

    async def _next(self, c: int, retries: list[Item]) -> Item | None:
        """A retry that is due, else a fresh row; None when neither is there yet."""
        now = self.clock.monotonic()
        due = [r for r in retries if r.due <= now]
        if due:
            retries.remove(due[0])
            return due[0]
        if not self.ledger.room(c):
            return None
        row = await self.ledger.take(c)
        return Item(row) if row is not None else None

    def _lookahead(self, c: int, conn: Connection, retries: list[Item]) -> Item | None:
        """The next message to write ahead with this one (PIPELINING), if one is ready now."""
        if not conn.pipelining or self.limiter.active or self.stopped():
            return None
        now = self.clock.monotonic()
        due = [r for r in retries if r.due <= now]
        if due:
            item: Item | None = due[0]
            retries.remove(due[0])
        else:
            row = self.ledger.take_nowait(c) if self.ledger.room(c) else None
            item = Item(row) if row is not None else None
        if item is None:
            return None
        try:
            self._message(item, conn)
        except PermanentSendError:
            retries.append(item)  # its own turn says why
            return None
        return item

    async def _deliver(
        self, c: int, conn: Connection | None, item: Item, retries: list[Item]
    ) -> tuple[Connection | None, Item | None]:
        """Try ``item`` once on ``conn``; record its outcome or queue its retry.

        Returns the connection (None once it must not be used again) and the message
        written ahead with this one, which must go next.
        """
        row = item.row
        follow: Item | None = None
        t = self.settings.transport
        try:
            conn = conn or self.factory()
            await conn.connect()
            message = self._message(item, conn)
            follow = self._lookahead(c, conn, retries)
            # In the journal before any byte of either envelope is written (see journal).
            self._begin(item)
            if follow is not None:
                self._begin(follow)
            await conn.deliver(message, follow.message if follow is not None else None)
        except PermanentSendError as exc:
            self._count(error=True)
            self._record(c, item, D.FAILED_PERMANENT, str(exc), bounce=exc.bounce)
        except DeliveryUnknown as exc:
            self._count(error=True)
            self._record(c, item, D.UNKNOWN, str(exc))
        except TemporarySendError as exc:
            self._count(error=True)
            item.attempts += 1
            if self.stop_event.is_set():
                # Stopping: not worth a failure; it goes back to pending for the resume.
                self.ledger.record(c, Outcome(row.id, D.PENDING))
            elif item.attempts >= t.max_attempts:
                self._record(c, item, D.FAILED_TEMPORARY, str(exc), tried=False)
            else:
                item.due = self.clock.monotonic() + t.retry_backoff * 2 ** (item.attempts - 1)
                self._back(item)
                retries.append(item)
        except TransportUnavailable as exc:
            self.request_pause(PauseReason.UNAVAILABLE, f"server unavailable: {exc}")
            self.ledger.record(c, Outcome(row.id, D.PENDING))
            if follow is not None:
                self.ledger.record(c, Outcome(follow.row.id, D.PENDING))
            if conn is not None:
                await self._close(c, conn)
            return None, None
        except Exception as exc:  # a bug or an unmapped error: this row, not the run
            log.exception("delivering to subscriber %s failed", row.subscriber_id)
            self._count(error=True)
            self._record(c, item, D.FAILED_TEMPORARY, f"internal error: {exc}")
            if follow is not None:
                # Its envelope went out on a line now closed, without its message.
                self._back(follow)
                retries.append(follow)
            if conn is not None:
                await self._close(c, conn)
            return None, None
        else:
            self._count(error=False)
            self._record(c, item, D.SENT)
        return conn, follow

    def _begin(self, item: Item) -> None:
        if not item.begun:
            self.journal.begun(item.row.id)
            item.begun = True

    def _back(self, item: Item) -> None:
        """``item`` was not delivered and waits for another try: not begun any more."""
        if item.begun:
            self.journal.back(item.row.id)
            item.begun = False

    def _record(
        self,
        c: int,
        item: Item,
        status: DeliveryStatus,
        error: str = "",
        *,
        bounce: bool = False,
        tried: bool = True,
    ) -> None:
        attempts = item.attempts + (1 if tried else 0)
        message_id = item.message_id if status in (D.SENT, D.UNKNOWN) else ""
        subscriber = item.row.subscriber_id
        self.ledger.record(
            c, Outcome(item.row.id, status, attempts, message_id, error, subscriber, bounce)
        )

    def _message(self, item: Item, conn: Connection) -> Outgoing:
        """The row's message for this connection: rendered once per kind of connection."""
        mode = (conn.wire, conn.smtputf8)
        if item.message is not None and item.mode == mode:
            return item.message
        row = item.row
        address = self._deliverable(row.email, conn.smtputf8)
        mail_from = self._deliverable(envelope_sender(self.settings, row.id), conn.smtputf8)
        recipient = Recipient(row.email, row.name or "", row.subscriber_id or 0, row.id)
        shown = address if address != row.email else None
        if self.signer is None:
            message_id, data = self.template.render(recipient, wire=conn.wire, address=shown)
        else:
            message_id, data = self.template.render(recipient, address=shown)
            data = self.signer.sign(data)
            if conn.wire:
                data = stuff(data)
        utf8 = not (address.isascii() and mail_from.isascii())
        item.message = Outgoing(mail_from, address, data, utf8)
        item.message_id, item.mode = message_id, mode
        return item.message

    def _deliverable(self, address: str, smtputf8: bool) -> str:
        """The address as the server can take it (:func:`deliverable`), kept per address."""
        if address.isascii() or smtputf8:
            return address
        if address not in self._ascii:
            self._ascii[address] = deliverable(address, smtputf8)
        return self._ascii[address]
