"""The blocking face of mailer's SMTP client, for one-off messages: proofs, the web side's
notices, alerts and ``mailer doctor --smtp``.

:class:`SMTPTransport` holds one :class:`~mailer.sending.transports.pipeline.SMTPConnection`
(the client a send runs many of) on an event loop of its own, and runs each call to the
end: ``open`` connects, ``send`` delivers one message, ``close`` says goodbye. The
connection is opened on first use and opened again after a drop. Replies and errors mean
what they mean for a send (:mod:`~mailer.sending.transports.outcomes`).

A one-off message comes as bytes from the email package or the message template, not
ready for the wire: ``send`` gives it CRLF line endings and dot-stuffs it, as every SMTP
client library does for each message (a send's messages come stuffed once per issue).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import ssl
from collections.abc import Coroutine
from typing import Any, TypeVar

from mailer.addresses import ascii_address
from mailer.config import SMTPSettings
from mailer.errors import PermanentSendError, TemporarySendError
from mailer.sending.message import crlf, stuff
from mailer.sending.transports.base import Outgoing, TransportBase
from mailer.sending.transports.pipeline import SMTPConnection, TokenSupplier

__all__ = ["SMTPTransport", "deliverable"]

T = TypeVar("T")


def deliverable(address: str, smtputf8: bool) -> str:
    """``address`` as the server can take it: as it is, or with its domain in ASCII for a
    server without SMTPUTF8. A mailbox that is not ASCII before the @ needs SMTPUTF8 (RFC
    6531): without it the server cannot take this one address, which says nothing against
    the address itself (not a bounce)."""
    if address.isascii() or smtputf8:
        return address
    found = ascii_address(address)
    if found is None:
        raise PermanentSendError(
            f"the server does not accept internationalised addresses (SMTPUTF8) such as {address}",
            bounce=False,
        )
    return found


class SMTPTransport(TransportBase):
    name = "smtp"

    def __init__(
        self,
        settings: SMTPSettings,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        tokens: TokenSupplier | None = None,
    ) -> None:
        self.settings = settings
        self.ssl_context = ssl_context or ssl.create_default_context(cafile=settings.ca_file)
        self.local_hostname = local_hostname
        self.tokens = tokens
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: SMTPConnection | None = None

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` to its end on this transport's own loop."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._loop.run_until_complete(work)
        # Called from a coroutine (whose loop this blocks, as any blocking call would):
        # a thread's stack may hold only one running loop, so this one runs on another.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(self._loop.run_until_complete, work).result()

    def _connection(self) -> SMTPConnection:
        if self._conn is None:
            hostname = self.local_hostname or socket.getfqdn()
            self._conn = SMTPConnection(self.settings, self.ssl_context, hostname, self.tokens)
        return self._conn

    def open(self) -> None:
        self._run(self._connection().connect())

    def send(self, mail_from: str, to: str, data: bytes) -> str:
        return self._run(self._send(mail_from, to, data))

    async def _send(self, mail_from: str, to: str, data: bytes) -> str:
        conn = self._connection()
        reused = conn.ready
        await conn.connect()
        envelope_to = deliverable(to, conn.smtputf8)
        envelope_from = deliverable(mail_from, conn.smtputf8)
        wire = stuff(crlf(data))
        if not wire.endswith(b"\r\n"):
            wire += b"\r\n"
        utf8 = not (envelope_to.isascii() and envelope_from.isascii())
        message = Outgoing(envelope_from, envelope_to, wire, utf8)
        try:
            return await conn.deliver(message)
        except TemporarySendError:
            if not reused or conn.ready:
                raise
            # A connection that idled since its last message was closed or put out of step
            # meanwhile (a server's idle timeout, a line it added): the message never left,
            # so it goes once more on a new one.
            await conn.connect()
            return await conn.deliver(message)

    def close(self) -> None:
        loop, conn, self._conn = self._loop, self._conn, None
        if loop is None:
            return
        try:
            if conn is not None:
                self._run(conn.disconnect())
            self._run(loop.shutdown_asyncgens())
        finally:
            self._loop = None
            loop.close()
