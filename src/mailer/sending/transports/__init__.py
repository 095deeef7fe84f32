"""Ways of delivering a finished message, chosen by name (``[transport] name`` or
``MAILER_TRANSPORT``): ``outbox`` (the default) and ``smtp``; ``MockTransport`` scripts a
server for tests.

SMTP has one client (:mod:`.pipeline`), whose replies and errors one table maps onto
outcomes (:mod:`.outcomes`). :func:`connector` opens the connections a send runs on its
event loop; :func:`factory` opens the blocking face of the same client (:mod:`.smtp`) for
one-off messages: proofs, notices, alerts and ``mailer doctor --smtp``.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

from mailer import oauth
from mailer.config import Settings, SMTPSettings
from mailer.errors import ConfigError
from mailer.sending.transports.base import Connection, Outgoing, Transport, TransportBase
from mailer.sending.transports.mock import Envelope, Mailbag, MockTransport
from mailer.sending.transports.outbox import OutboxTransport
from mailer.sending.transports.pipeline import SMTPConnection, TokenSupplier
from mailer.sending.transports.smtp import SMTPTransport

# Opens a transport (both faces): what callers pass, for one-off messages and for sends.
TransportFactory = Callable[[], TransportBase]
# Opens one more connection of a send, on its event loop (what the engine takes).
ConnectionFactory = Callable[[], Connection]

__all__ = [
    "Connection",
    "ConnectionFactory",
    "Envelope",
    "Mailbag",
    "MockTransport",
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
    "tokens",
]


def tokens(smtp: SMTPSettings) -> TokenSupplier | None:
    """What gives SMTP connections their OAuth 2.0 token, when ``auth = "oauth2"``."""
    if smtp.auth != "oauth2" or smtp.oauth is None:
        return None
    return oauth.source(smtp.oauth).supply


def factory(settings: Settings, slug: str) -> TransportFactory:
    """A function that opens a blocking transport of the configured kind, for one-off
    messages (proofs, the web side's notices)."""
    name = settings.transport.name
    if name == "outbox":
        folder = settings.outbox_dir / slug
        return lambda: OutboxTransport(folder)
    if name == "smtp":
        smtp = settings.transport.smtp
        return lambda: SMTPTransport(smtp, tokens=tokens(smtp))
    raise ConfigError(f"unknown transport {name!r}")


def connector(settings: Settings, slug: str) -> ConnectionFactory:
    """A function that opens one more connection of a send, for the engine's event loop."""
    if settings.transport.name == "smtp":
        smtp = settings.transport.smtp
        # Made once per send: loading the CA bundle and asking the resolver for this host's
        # name are not worth repeating for every connection.
        context = ssl.create_default_context(cafile=smtp.ca_file)
        hostname = socket.getfqdn()
        supplier = tokens(smtp)
        return lambda: SMTPConnection(smtp, context, hostname, supplier)
    return factory(settings, slug)


def connections(settings: Settings) -> int:
    """How many connections a send opens at once."""
    return settings.transport.smtp.connections if settings.transport.name == "smtp" else 2
