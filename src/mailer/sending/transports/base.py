"""The transport contract: what the sending engine needs from a way of delivering mail.

A transport delivers one finished message to one recipient and says how it went:

- returns normally: the message was accepted (the return value is the server's reply);
- raises :class:`~mailer.errors.TemporarySendError`: not delivered, try again later (4xx,
  or the line dropped before the whole message was sent);
- raises :class:`~mailer.errors.PermanentSendError`: this recipient will never take it (5xx);
- raises :class:`~mailer.errors.DeliveryUnknown`: the whole message was sent and no final
  reply came, so it may have been accepted: never retried on its own;
- raises :class:`~mailer.errors.TransportUnavailable`: nothing can be sent right now
  (server down, credentials refused); the send pauses and nobody is marked failed.

Two faces of the same contract:

- :class:`Transport`, blocking (``open``/``send``/``close``), for one-off messages: proofs
  and the web side's notices;
- :class:`Connection`, on an event loop (``connect``/``deliver``/``disconnect``), which the
  engine runs many of at once. ``deliver(message, follow)`` may also write the envelope of
  ``follow``, the connection's next message, with this one's data (SMTP PIPELINING, RFC
  2920); the engine then delivers ``follow`` next on the same connection.

:class:`TransportBase` gives every blocking transport the event-loop face by running it in
a worker thread, so a test's or a benchmark's transport needs only ``send``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One copy on its way: envelope and bytes (dot-stuffed when the transport is ``wire``)."""

    mail_from: str
    to: str
    data: bytes
    # Whether the envelope needs SMTPUTF8 (a mailbox whose part before the @ is not ASCII).
    smtputf8: bool = False


class Transport(Protocol):
    name: str

    def open(self) -> None:
        """Make the connection ready (or raise TransportUnavailable); a no-op when ready."""
        ...

    def send(self, mail_from: str, to: str, data: bytes) -> str:
        """Deliver ``data`` to ``to``; return the server's acceptance reply."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Connection(Protocol):
    """One connection of a send, used by one task of the engine's event loop."""

    name: str
    # The data must be dot-stuffed, as it travels after SMTP's DATA.
    wire: bool
    # Known after connect(): whether follow-up envelopes may be written ahead.
    pipelining: bool
    # Known after connect(): whether internationalised mailboxes can be delivered.
    smtputf8: bool

    async def connect(self) -> None:
        """Make the connection ready (or raise TransportUnavailable); a no-op when ready."""
        ...

    async def deliver(self, message: Outgoing, follow: Outgoing | None = None) -> str:
        """Deliver ``message``; return the server's acceptance reply."""
        ...

    def holds(self, message: Outgoing) -> bool:
        """Whether ``message``'s envelope is already on its way (written ahead with the
        previous message), so it must be delivered next, even by a send that is stopping."""
        ...

    async def disconnect(self) -> None: ...


class TransportBase:
    """Context-manager plumbing shared by the transports, and the event-loop face of a
    blocking transport (each call runs in a worker thread)."""

    name = "base"
    wire = False
    pipelining = False
    smtputf8 = True

    def open(self) -> None:
        """Nothing to open for transports without a connection."""

    def send(self, mail_from: str, to: str, data: bytes) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; safe to call twice."""

    async def connect(self) -> None:
        await asyncio.to_thread(self.open)

    async def deliver(self, message: Outgoing, follow: Outgoing | None = None) -> str:
        return await asyncio.to_thread(self.send, message.mail_from, message.to, message.data)

    def holds(self, message: Outgoing) -> bool:
        return False

    async def disconnect(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
