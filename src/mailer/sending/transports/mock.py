"""A scripted transport for tests: ``MockTransport(handler)``, like httpx's.

``handler(envelope)`` answers each message the way a server would: it returns a reply (the
message was accepted) or raises :class:`~mailer.errors.TemporarySendError`,
:class:`~mailer.errors.PermanentSendError`, :class:`~mailer.errors.DeliveryUnknown` or
:class:`~mailer.errors.TransportUnavailable`. Without a handler every message is accepted.
Accepted messages are kept in a :class:`Mailbag` shared by every connection of a send, so a
test sees all that was delivered. ``on_open`` may raise to script a server that cannot be
reached, and ``smtputf8=False`` a server without SMTPUTF8.

On the engine's event loop the handler runs in the loop itself, one message at a time, so
a test on a fake clock is deterministic: a handler that advances the clock stands for the
time a message takes on the network.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from mailer.sending.transports.base import Outgoing, TransportBase


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    to: str
    data: bytes


Handler = Callable[[Envelope], str | None]


@dataclass
class Mailbag:
    """Every message accepted by the transports that share it, in order."""

    messages: list[Envelope] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def recipients(self) -> list[str]:
        with self.lock:
            return [m.to for m in self.messages]


class MockTransport(TransportBase):
    name = "mock"

    def __init__(
        self,
        handler: Handler | None = None,
        bag: Mailbag | None = None,
        *,
        on_open: Callable[[], None] | None = None,
        smtputf8: bool = True,
    ) -> None:
        self.handler = handler
        self.bag = bag if bag is not None else Mailbag()
        self.on_open = on_open
        self.smtputf8 = smtputf8
        self.opened = False

    def open(self) -> None:
        if not self.opened:
            if self.on_open is not None:
                self.on_open()
            self.opened = True

    def send(self, mail_from: str, to: str, data: bytes) -> str:
        envelope = Envelope(mail_from, to, data)
        reply = self.handler(envelope) if self.handler is not None else None
        with self.bag.lock:
            self.bag.messages.append(envelope)
            return reply or f"250 queued as {len(self.bag.messages)}"

    def close(self) -> None:
        self.opened = False

    async def connect(self) -> None:
        self.open()

    async def deliver(self, message: Outgoing, follow: Outgoing | None = None) -> str:
        # Give the other connections their turn first, as a real round trip would.
        await asyncio.sleep(0)
        return self.send(message.mail_from, message.to, message.data)

    async def disconnect(self) -> None:
        self.close()
