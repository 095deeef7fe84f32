"""SMTP for sends: connections on one event loop, pipelined, fed bytes ready for the wire.

A connection is opened, secured (STARTTLS or implicit TLS, the certificate verified) and
authenticated by aiosmtplib, a maintained client. Then this module takes the connection
over (``transport.set_protocol``) with a protocol that reads replies *in order*, so
commands can be written ahead of their replies:

- When the server announces PIPELINING (RFC 2920), MAIL, RCPT and DATA go in one write,
  then the message and its final ``.`` together with the MAIL, RCPT and DATA of the
  connection's next message (the message content may open a group of commands, RFC 2920
  section 3.1), so a message costs one round trip instead of four.
- Without PIPELINING, each command waits for its reply, as RFC 5321 asks.

The message bytes come dot-stuffed from :class:`mailer.sending.message.MessageTemplate`;
nothing here scans a message.

What a failure means for the ledger (see :mod:`mailer.sending.transports.base`): a refusal
at MAIL, RCPT or DATA, or a line lost before the final ``.`` was written, means the
message was not delivered. Once the final ``.`` is written, a lost line or a reply later
than ``timeout`` means nobody knows: :class:`~mailer.errors.DeliveryUnknown`.

The replies are read by :class:`~mailer.sending.transports.replies.Replies`. Errors are
mapped onto mailer's by two tables, one for connecting and one for sending, in
which the most specific exception class wins (:func:`mailer.errors.map_exception`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass
from typing import Any

import aiosmtplib

from mailer.config import SMTPSettings
from mailer.errors import (
    DeliveryUnknown,
    ErrorTable,
    MailerError,
    PermanentSendError,
    TemporarySendError,
    TransportUnavailable,
    map_exception,
)
from mailer.sending.transports.base import Outgoing
from mailer.sending.transports.replies import CLOSE_WITHIN, LineLost, Replies, Reply
from mailer.sending.transports.smtp import classify

__all__ = ["LineLost", "Reply", "SMTPConnection", "connect_table", "send_table"]

# Addresses were validated where they entered; this is the last line of defence against a
# value that would end a command early or start another.
_UNSAFE = re.compile(r"[\x00-\x20<>\x7f]")


class ReplyMissing(Exception):
    """The whole message was written and its final reply never came."""


class Refused(Exception):
    """The server answered a command with something other than success."""

    stage = "the message"

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class SenderRefused(Refused):
    stage = "MAIL FROM"


class RecipientRefused(Refused):
    stage = "RCPT TO"


class DataRefused(Refused):
    stage = "DATA"


@dataclass(frozen=True)
class _Context:
    """What an error message needs to say: the server, and the sender and recipient."""

    where: str
    mail_from: str = ""
    to: str = ""
    timeout: float = 0.0


def connect_table(c: _Context) -> ErrorTable:
    def unreachable(e: BaseException) -> MailerError:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return TransportUnavailable(f"cannot connect to the SMTP server {c.where}: {reason}")

    return [
        (
            aiosmtplib.SMTPAuthenticationError,
            lambda e: TransportUnavailable(
                f"the SMTP server {c.where} refused the username or password "
                f"({Reply(e.code, e.message)}): check MAILER_SMTP_USERNAME and "
                "MAILER_SMTP_PASSWORD"
            ),
        ),
        (
            aiosmtplib.SMTPResponseException,
            lambda e: TransportUnavailable(
                f"the SMTP server {c.where} refused the connection ({Reply(e.code, e.message)})"
            ),
        ),
        (
            aiosmtplib.SMTPTimeoutError,
            lambda e: TransportUnavailable(
                f"the SMTP server {c.where} did not answer within {c.timeout:g} s"
            ),
        ),
        (
            ssl.SSLCertVerificationError,
            lambda e: TransportUnavailable(
                f"the SMTP server {c.where} has a certificate that cannot be trusted "
                f"({e.verify_message}): set MAILER_SMTP_CA_FILE for a private authority"
            ),
        ),
        (
            aiosmtplib.SMTPException,
            lambda e: TransportUnavailable(f"the SMTP server {c.where}: {e}"),
        ),
        (aiosmtplib.SMTPConnectError, unreachable),
        (OSError, unreachable),
    ]


def send_table(c: _Context) -> ErrorTable:
    def sender_refused(e: SenderRefused) -> MailerError:
        if 500 <= e.reply.code < 600:
            # The server refuses our sender address: every recipient would fail alike.
            return TransportUnavailable(
                f"the SMTP server {c.where} refused the sender {c.mail_from} ({e.reply})"
            )
        return TemporarySendError(str(e.reply))

    def lost(e: BaseException) -> MailerError:
        return TemporarySendError(f"connection to {c.where} lost before the message was sent: {e}")

    return [
        (SenderRefused, sender_refused),
        (RecipientRefused, lambda e: classify(e.reply.code, e.reply.text, at_rcpt=True)),
        (Refused, lambda e: classify(e.reply.code, e.reply.text)),
        (
            ReplyMissing,
            lambda e: DeliveryUnknown(
                f"{c.where} received the whole message and sent no reply "
                f"({e.__cause__ or e}): it may have been accepted"
            ),
        ),
        (TimeoutError, lambda e: TemporarySendError(f"{c.where}: {e}")),
        (OSError, lost),
        (
            UnicodeError,
            lambda e: PermanentSendError(
                f"{c.where}: the address cannot be sent as it is ({e})", bounce=False
            ),
        ),
    ]


def _cause(exc: BaseException) -> BaseException:
    """A certificate failure hidden inside a connection error, or ``exc`` itself."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def _ok(reply: Reply) -> bool:
    return 200 <= reply.code < 300


class SMTPConnection:
    """One SMTP connection of a send (see the module doc)."""

    name = "smtp"
    wire = True

    def __init__(
        self, settings: SMTPSettings, ssl_context: ssl.SSLContext, local_hostname: str
    ) -> None:
        self.settings = settings
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

    async def connect(self) -> None:
        if self._replies is not None and self._replies.lost is None:
            return
        self._drop()
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout,
            local_hostname=self.local_hostname,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            tls_context=self.ssl_context,
            username=s.username or None,
            password=(s.password or "") if s.username else None,
        )
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            cause = _cause(exc)
            mapped = map_exception(cause, connect_table(_Context(self.where, timeout=s.timeout)))
            raise (mapped or exc) from exc
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
                if exc.reply.code in (0, 421):
                    self._drop()
            elif not isinstance(exc, MailerError):
                self._drop()
            context = _Context(self.where, message.mail_from, message.to, self.settings.timeout)
            mapped = map_exception(exc, send_table(context))
            if mapped is None:
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
            replies.write(self._envelope(message) + b"DATA\r\n")
        self._ahead = None
        got: list[Reply] = []
        try:
            for _ in range(3):
                got.append(await replies.reply(timeout))
        except (OSError, TimeoutError):
            # "421 closing" at MAIL is followed by a closed line: report the 421.
            refused = _first_refusal(got)
            if refused is not None:
                raise refused from None
            raise
        refused = _first_refusal(got)
        if refused is not None:
            if got[2].code == 354:
                # A server that took DATA after refusing the envelope wants a (lone) end.
                replies.write(b".\r\n")
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
        replies.write(b"".join((message.data, b".\r\n", ahead)))
        if ahead:
            self._ahead = follow
        return await self._final(replies, timeout, len(ahead))

    async def _one_at_a_time(self, replies: Replies, message: Outgoing) -> str:
        timeout = self.settings.timeout
        mail, _, rcpt = self._envelope(message).partition(b"\r\n")
        replies.write(mail + b"\r\n")
        reply = await replies.reply(timeout)
        if not _ok(reply):
            raise SenderRefused(reply)
        replies.write(rcpt)
        reply = await replies.reply(timeout)
        if not _ok(reply):
            await self._reset(replies)
            raise RecipientRefused(reply)
        replies.write(b"DATA\r\n")
        reply = await replies.reply(timeout)
        if reply.code != 354:
            await self._reset(replies)
            raise DataRefused(reply)
        replies.write(message.data + b".\r\n")
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
        if not _ok(reply):
            raise Refused(reply)
        return str(reply)

    async def _reset(self, replies: Replies) -> None:
        """End a refused transaction, so the next MAIL is not "nested"."""
        if replies.lost is None:
            replies.write(b"RSET\r\n")
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
                replies.write(b"QUIT\r\n")
                await replies.reply(min(self.settings.timeout, 5.0))
        replies.transport.close()
        try:
            await asyncio.wait_for(replies.closed.wait(), CLOSE_WITHIN)
        except TimeoutError:
            replies.transport.abort()  # a TLS peer that never answers close_notify
            await replies.closed.wait()


def _first_refusal(got: list[Reply]) -> Refused | None:
    """The first refusal among the replies to MAIL, RCPT and DATA read so far."""
    for reply, kind in zip(got, (SenderRefused, RecipientRefused, DataRefused), strict=False):
        if reply.code != 354 if kind is DataRefused else not _ok(reply):
            return kind(reply)
    return None
