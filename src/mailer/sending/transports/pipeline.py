"""mailer's SMTP client: connections on an event loop, pipelined, fed bytes ready for the
wire. Sends run many of them on their loop; one-off messages (proofs, notices, alerts,
``mailer doctor``) use one through the blocking face of :mod:`.smtp`.

A connection is opened, secured (STARTTLS or implicit TLS, the certificate verified) and
authenticated (a password, or an OAuth 2.0 token with AUTH XOAUTH2) by aiosmtplib, a
maintained client. Then this module takes the connection over
(``transport.set_protocol``) with a protocol that reads replies *in order*, so commands
can be written ahead of their replies:

- When the server announces PIPELINING (RFC 2920), MAIL, RCPT and DATA go in one write,
  then the message and its final ``.`` together with the MAIL, RCPT and DATA of the
  connection's next message (the message content may open a group of commands, RFC 2920
  section 3.1), so a message costs one round trip instead of four.
- Without PIPELINING, each command waits for its reply, as RFC 5321 asks.

The message bytes come dot-stuffed (from :class:`mailer.sending.message.MessageTemplate`
for a send, from :mod:`.smtp` for a one-off message); nothing here scans a message.

What a failure means for the ledger (see :mod:`mailer.sending.transports.base`): a refusal
at MAIL, RCPT or DATA, or a line lost before the final ``.`` was written, means the
message was not delivered. Once the final ``.`` is written, a lost line or a reply later
than ``timeout`` means nobody knows: :class:`~mailer.errors.DeliveryUnknown`.

Replies are read by :class:`~mailer.sending.transports.replies.Replies`, which gives the
line up when one comes that no command asked for; a reply no server may give to its
command (354 to RCPT, 250 to DATA, a line that is not a reply) says the same, that replies
and commands are out of step. Errors are mapped by the one table of
:mod:`~mailer.sending.transports.outcomes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiosmtplib

from mailer.config import SMTPSettings
from mailer.errors import MailerError, PermanentSendError
from mailer.sending.transports.base import Outgoing
from mailer.sending.transports.outcomes import (
    DataRefused,
    ErrorContext,
    LineLost,
    OutOfStep,
    RecipientRefused,
    Refused,
    Reply,
    ReplyMissing,
    SenderRefused,
    outcome,
)
from mailer.sending.transports.replies import CLOSE_WITHIN, Replies

__all__ = ["SMTPConnection", "TokenSupplier"]

# Addresses were validated where they entered; this is the last line of defence against a
# value that would end a command early or start another.
_UNSAFE = re.compile(r"[\x00-\x20<>\x7f]")

# Gives a connection an OAuth 2.0 access token (fresh or cached) for AUTH XOAUTH2.
TokenSupplier = Callable[[], Awaitable[str]]


def _ok(reply: Reply) -> bool:
    return 200 <= reply.code < 300


def _answers(reply: Reply, data: bool = False) -> Reply:
    """``reply`` if a server may give it to its command (354 or a refusal to DATA; a
    success or a refusal to anything else), else :class:`LineLost`: the replies are out of
    step with the commands, and the connection must go."""
    success = reply.code == 354 if data else 200 <= reply.code < 300
    if success or 400 <= reply.code < 600:
        return reply
    raise OutOfStep(f"the server's replies are out of step with the commands ({reply})")


class SMTPConnection:
    """One SMTP connection of a send (see the module doc)."""

    name = "smtp"
    wire = True

    def __init__(
        self,
        settings: SMTPSettings,
        ssl_context: ssl.SSLContext,
        local_hostname: str,
        tokens: TokenSupplier | None = None,
    ) -> None:
        """``tokens`` gives the access token of AUTH XOAUTH2 (``auth = "oauth2"``)."""
        self.settings = settings
        self.tokens = tokens
        self.ssl_context = ssl_context
        self.local_hostname = local_hostname
        self.pipelining = False
        self.smtputf8 = False
        self._replies: Replies | None = None
        # The message whose MAIL, RCPT and DATA were written with the previous message.
        self._ahead: Outgoing | None = None

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def context(self, message: Outgoing | None = None) -> ErrorContext:
        """What the error table needs: the connection's stage, server and settings."""
        s = self.settings
        return ErrorContext(
            "connect" if message is None else "send",
            s.host,
            s.port,
            s.security,
            s.auth,
            s.timeout,
            message.mail_from if message is not None else "",
            message.to if message is not None else "",
        )

    @property
    def ready(self) -> bool:
        """Whether the connection is open and in step (connect would do nothing)."""
        return self._replies is not None and self._replies.lost is None

    async def connect(self) -> None:
        if self.ready and self._ahead is None:
            # Idle since its last reply: let the loop read what came meanwhile (two turns:
            # the first polls the socket, the second runs the read), so a line no command
            # asked for drops this connection now, not after the next command is written.
            for _ in range(2):
                await asyncio.sleep(0)
        if self.ready:
            return
        self._drop()
        s = self.settings
        # Fetched before the line is opened: an identity provider's refusal leaves nothing
        # to close.
        token = await self.tokens() if self.tokens is not None else None
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout,
            local_hostname=self.local_hostname,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            tls_context=self.ssl_context,
        )
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
            # The login is this client's, not aiosmtplib's connect(): a refused one leaves
            # the connection here to drop at once (see _abandon).
            if token is not None:
                if "xoauth2" not in client.server_auth_methods:
                    raise aiosmtplib.SMTPException("the server does not offer AUTH XOAUTH2")
                await client.auth_xoauth2(s.username or "", token)
            elif s.username:
                await client.login(s.username, s.password or "")
            left = bytes(getattr(client.protocol, "_buffer", b""))
            if left.strip():
                # Lines after the last reply aiosmtplib read: they would be taken for the
                # replies to this connection's first commands.
                text = left.decode("utf-8", "replace").strip()[:200]
                raise OutOfStep(f"the server sent a line no command asked for ({text!r})")
        except (aiosmtplib.SMTPException, OSError, MailerError) as exc:
            await _abandon(client)
            mapped = outcome(exc, self.context())
            if mapped is None or mapped is exc:
                raise
            raise mapped from exc
        except BaseException:
            client.close()
            raise
        self.pipelining = client.supports_extension("pipelining")
        self.smtputf8 = client.supports_extension("smtputf8")
        transport: Any = client.transport
        replies = Replies(transport)
        transport.set_protocol(replies)
        self._replies = replies

    def holds(self, message: Outgoing) -> bool:
        return self._ahead is message and self._replies is not None

    async def deliver(self, message: Outgoing, follow: Outgoing | None = None) -> str:
        replies = self._replies
        try:
            if replies is None or replies.lost is not None:
                raise LineLost("not connected")
            return await self._transaction(replies, message, follow)
        except BaseException as exc:
            # A refusal leaves the connection usable; anything else (a lost line, a late
            # reply, "421 closing") may leave replies in flight that would be misread.
            if isinstance(exc, Refused):
                if exc.reply.code == 421:
                    self._drop()
            elif not isinstance(exc, MailerError):
                self._drop()
            mapped = outcome(exc, self.context(message))
            if mapped is None or mapped is exc:
                raise
            raise mapped from exc

    def _envelope(self, message: Outgoing) -> bytes:
        for address in (message.mail_from, message.to):
            if _UNSAFE.search(address):
                raise PermanentSendError(f"{address!r} cannot be used in SMTP", bounce=False)
        if message.smtputf8:
            if not self.smtputf8:
                # The server cannot take this one mailbox, which says nothing against it.
                raise PermanentSendError(
                    f"the SMTP server {self.where} does not accept internationalised "
                    f"addresses (SMTPUTF8) such as {message.to}",
                    bounce=False,
                )
            return (
                f"MAIL FROM:<{message.mail_from}> SMTPUTF8\r\nRCPT TO:<{message.to}>\r\n"
            ).encode()
        return f"MAIL FROM:<{message.mail_from}>\r\nRCPT TO:<{message.to}>\r\n".encode("ascii")

    async def _transaction(
        self, replies: Replies, message: Outgoing, follow: Outgoing | None
    ) -> str:
        timeout = self.settings.timeout
        if not self.pipelining:
            return await self._one_at_a_time(replies, message)
        if self._ahead is not message:
            replies.write(self._envelope(message) + b"DATA\r\n", 3)
        self._ahead = None
        got: list[Reply] = []
        try:
            for data in (False, False, True):
                got.append(_answers(await replies.reply(timeout), data))
        except (OSError, TimeoutError) as exc:
            # The line is lost, late or out of step: it cannot be used again. But "421
            # closing" at MAIL is followed by a closed line: report the 421 (unless the
            # replies were out of step, when no reply read so far can be trusted).
            self._drop()
            if isinstance(exc, OutOfStep):
                raise
            refused = _first_refusal(got)
            if refused is not None:
                raise refused from None
            raise
        refused = _first_refusal(got)
        if refused is not None:
            if got[2].code == 354:
                # A server that took DATA after refusing the envelope wants a (lone) end.
                replies.write(b".\r\n", 1)
                await replies.reply(timeout)
            else:
                await self._reset(replies)
            raise refused
        ahead = b""
        if follow is not None:
            try:
                ahead = self._envelope(follow) + b"DATA\r\n"
            except (PermanentSendError, UnicodeError):
                ahead = b""  # its own delivery will say why; not written ahead
        replies.write(b"".join((message.data, b".\r\n", ahead)), 4 if ahead else 1)
        if ahead:
            self._ahead = follow
        return await self._final(replies, timeout, len(ahead))

    async def _one_at_a_time(self, replies: Replies, message: Outgoing) -> str:
        timeout = self.settings.timeout
        mail, _, rcpt = self._envelope(message).partition(b"\r\n")
        replies.write(mail + b"\r\n", 1)
        reply = _answers(await replies.reply(timeout))
        if not _ok(reply):
            raise SenderRefused(reply)
        replies.write(rcpt, 1)
        reply = _answers(await replies.reply(timeout))
        if not _ok(reply):
            await self._reset(replies)
            raise RecipientRefused(reply)
        replies.write(b"DATA\r\n", 1)
        reply = _answers(await replies.reply(timeout), data=True)
        if reply.code != 354:
            await self._reset(replies)
            raise DataRefused(reply)
        replies.write(message.data + b".\r\n", 1)
        return await self._final(replies, timeout)

    async def _final(self, replies: Replies, timeout: float, after: int = 0) -> str:
        """The reply to the end of the data; ``after`` bytes were written after the dot."""
        await replies.drain()
        try:
            reply = await replies.reply(timeout)
        except (OSError, TimeoutError) as exc:
            if replies.unsent > after:
                # The final dot never left this process: the server cannot have the message.
                raise LineLost(f"{exc} while the message was being written") from exc
            raise ReplyMissing(str(exc)) from exc
        if not (_ok(reply) or 400 <= reply.code < 600):
            # Not an answer to the end of the data: the server's own answer is unknown.
            self._drop()
            raise ReplyMissing(f"the server's replies are out of step ({reply})")
        if not _ok(reply):
            raise Refused(reply)
        return str(reply)

    async def _reset(self, replies: Replies) -> None:
        """End a refused transaction, so the next MAIL is not "nested"."""
        if replies.lost is None:
            replies.write(b"RSET\r\n", 1)
            await replies.reply(self.settings.timeout)

    def _drop(self) -> None:
        replies, self._replies, self._ahead = self._replies, None, None
        if replies is not None:
            replies.transport.abort()

    async def disconnect(self) -> None:
        replies, self._replies, self._ahead = self._replies, None, None
        if replies is None:
            return
        if replies.lost is None:
            with contextlib.suppress(OSError, TimeoutError):
                replies.write(b"QUIT\r\n", 1)
                await replies.reply(min(self.settings.timeout, 5.0))
        replies.transport.close()
        try:
            await asyncio.wait_for(replies.closed.wait(), CLOSE_WITHIN)
        except TimeoutError:
            replies.transport.abort()  # a TLS peer that never answers close_notify
            await replies.closed.wait()


async def _abandon(client: aiosmtplib.SMTP) -> None:
    """Drop a connection that failed to open, at once: no goodbye (not even TLS's) that
    would need the loop to go on turning, as a one-off message's loop does not."""
    transport: Any = client.transport
    if transport is not None:
        transport.abort()
    client.close()
    if transport is not None:
        # The socket is closed by a callback of the loop's next turns.
        for _ in range(2):
            await asyncio.sleep(0)


def _first_refusal(got: list[Reply]) -> Refused | None:
    """The first refusal among the replies to MAIL, RCPT and DATA read so far."""
    for reply, kind in zip(got, (SenderRefused, RecipientRefused, DataRefused), strict=False):
        if reply.code != 354 if kind is DataRefused else not _ok(reply):
            return kind(reply)
    return None
