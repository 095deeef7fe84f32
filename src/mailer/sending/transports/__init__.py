"""Ways of delivering a finished message, chosen by name (``[transport] name`` or
``MAILER_TRANSPORT``): ``outbox`` (the default) and ``smtp``; ``MockTransport`` scripts a
server for tests."""

from __future__ import annotations

from collections.abc import Callable

from mailer.config import Settings
from mailer.errors import ConfigError
from mailer.sending.transports.base import Transport, TransportBase
from mailer.sending.transports.mock import Envelope, Mailbag, MockTransport
from mailer.sending.transports.outbox import OutboxTransport
from mailer.sending.transports.smtp import SMTPTransport

TransportFactory = Callable[[], Transport]

__all__ = [
    "Envelope",
    "Mailbag",
    "MockTransport",
    "OutboxTransport",
    "SMTPTransport",
    "Transport",
    "TransportBase",
    "TransportFactory",
    "connections",
    "factory",
]


def factory(settings: Settings, slug: str) -> TransportFactory:
    """A function that opens one more connection of the configured transport."""
    name = settings.transport.name
    if name == "outbox":
        folder = settings.outbox_dir / slug
        return lambda: OutboxTransport(folder)
    if name == "smtp":
        smtp = settings.transport.smtp
        return lambda: SMTPTransport(smtp)
    raise ConfigError(f"unknown transport {name!r}")


def connections(settings: Settings) -> int:
    """How many connections a send opens at once."""
    return settings.transport.smtp.connections if settings.transport.name == "smtp" else 2
