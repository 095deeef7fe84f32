"""Ways of delivering a finished message, chosen by name (``[transport] name`` or
``MAILER_TRANSPORT``): ``outbox`` (the default) and ``smtp``; ``MockTransport`` scripts a
server for tests.

:func:`factory` opens blocking transports for one-off messages (proofs, notices);
:func:`connector` opens the connections a send runs on its event loop (for SMTP, the
pipelined client of :mod:`.pipeline`).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

from mailer.config import Settings
from mailer.errors import ConfigError
from mailer.sending.transports.base import Connection, Outgoing, Transport, TransportBase
from mailer.sending.transports.mock import Envelope, Mailbag, MockTransport
from mailer.sending.transports.outbox import OutboxTransport
from mailer.sending.transports.pipeline import SMTPConnection
from mailer.sending.transports.smtp import SMTPTransport

# Opens one more connection of a send (what the engine, the service and the worker take).
TransportFactory = Callable[[], Connection]
# Opens a blocking transport for one message at a time.
OneOffFactory = Callable[[], Transport]

__all__ = [
    "Connection",
    "Envelope",
    "Mailbag",
    "MockTransport",
    "OneOffFactory",
    "OutboxTransport",
    "Outgoing",
    "SMTPConnection",
    "SMTPTransport",
    "Transport",
    "TransportBase",
    "TransportFactory",
    "connections",
    "connector",
    "factory",
]


def factory(settings: Settings, slug: str) -> OneOffFactory:
    """A function that opens a blocking transport of the configured kind, for one-off
    messages (proofs, the web side's notices)."""
    name = settings.transport.name
    if name == "outbox":
        folder = settings.outbox_dir / slug
        return lambda: OutboxTransport(folder)
    if name == "smtp":
        smtp = settings.transport.smtp
        return lambda: SMTPTransport(smtp)
    raise ConfigError(f"unknown transport {name!r}")


def connector(settings: Settings, slug: str) -> TransportFactory:
    """A function that opens one more connection of a send, for the engine's event loop."""
    if settings.transport.name == "smtp":
        smtp = settings.transport.smtp
        # Made once per send: loading the CA bundle and asking the resolver for this host's
        # name are not worth repeating for every connection.
        context = ssl.create_default_context(cafile=smtp.ca_file)
        hostname = socket.getfqdn()
        return lambda: SMTPConnection(smtp, context, hostname)
    make = factory(settings, slug)
    return lambda: _as_connection(make())


def _as_connection(transport: Transport) -> Connection:
    if not isinstance(transport, TransportBase):
        raise ConfigError(f"the {transport.name} transport cannot be used for a send")
    return transport


def connections(settings: Settings) -> int:
    """How many connections a send opens at once."""
    return settings.transport.smtp.connections if settings.transport.name == "smtp" else 2
