"""The transport contract: what the sending engine needs from a way of delivering mail.

A transport delivers one finished message to one recipient and says how it went:

- returns normally: the message was accepted (the return value is the server's reply);
- raises :class:`~mailer.errors.TemporarySendError`: try again later (4xx, dropped line);
- raises :class:`~mailer.errors.PermanentSendError`: this recipient will never take it (5xx);
- raises :class:`~mailer.errors.TransportUnavailable`: nothing can be sent right now
  (server down, credentials refused); the send pauses and nobody is marked failed.

Transports are used by one thread each; the engine opens one per connection.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self


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


class TransportBase:
    """Context-manager plumbing shared by the transports."""

    name = "base"

    def open(self) -> None:
        """Nothing to open for transports without a connection."""

    def close(self) -> None:
        """Release connections; safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
