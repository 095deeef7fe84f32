"""What an SMTP server's reply, or an error on the way to it, means for a copy: the one
table of mailer's SMTP client, for sends and one-off messages alike.

The outcomes are those of :mod:`mailer.sending.transports.base`: delivered (no error),
:class:`~mailer.errors.TemporarySendError` (try again later),
:class:`~mailer.errors.PermanentSendError` (never), :class:`~mailer.errors.DeliveryUnknown`
(the whole message went and no final reply came) and
:class:`~mailer.errors.TransportUnavailable` (nothing can be sent: the send pauses).

:func:`table` maps an exception onto one of them. The row of the most specific class wins
(:func:`mailer.errors.map_exception`), so order does not matter: a refused login
(``aiosmtplib.SMTPAuthenticationError``) is not a server that is down, and a connection
error that hides a certificate or TLS failure is named by that failure (:func:`cause`).
While connecting, every failure means the server is unavailable; once connected, a lost
line means "try again". A TLS failure names the likely fix (the port and ``security``
that go together), in one line, never with OpenSSL's text alone.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal, NamedTuple

import aiosmtplib

from mailer.errors import (
    DeliveryUnknown,
    ErrorTable,
    MailerError,
    PermanentSendError,
    TemporarySendError,
    TransportUnavailable,
    map_exception,
)

__all__ = [
    "DataRefused",
    "ErrorContext",
    "LineLost",
    "OutOfStep",
    "RecipientRefused",
    "Refused",
    "Reply",
    "ReplyMissing",
    "SenderRefused",
    "cause",
    "classify",
    "outcome",
    "table",
]


class Reply(NamedTuple):
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {' '.join(self.text.split())}".strip()


class LineLost(ConnectionError):
    """The connection closed (or was never there, or its replies fell out of step with
    its commands) before the message was complete."""


class OutOfStep(LineLost):
    """A reply no server may give to its command, or a line no command asked for: the
    replies no longer match the commands, so none can be trusted on this connection."""


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


def classify(reply: Reply, *, at_rcpt: bool = False) -> TemporarySendError | PermanentSendError:
    """4xx (or anything not 5xx): try again later. 5xx: never; and the address is bad (a
    bounce) when it was refused at RCPT TO or the enhanced status says so (5.1.x), not
    when the message was."""
    text = str(reply)
    if not 500 <= reply.code < 600:
        return TemporarySendError(text)
    enhanced = text.split(" ", 2)[1] if text.count(" ") >= 1 else ""
    return PermanentSendError(text, bounce=at_rcpt or enhanced.startswith("5.1."))


@dataclass(frozen=True)
class ErrorContext:
    """What an error message needs to say: the stage, the server and how it is reached,
    the sender and the recipient."""

    stage: Literal["connect", "send"]
    host: str
    port: int
    security: str = "none"
    auth: str = "password"
    timeout: float = 30.0
    mail_from: str = ""
    to: str = ""

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


# The hint for a login the server refused, by method.
_LOGIN_HINT = {
    "password": "check MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD",
    "oauth2": (
        "the token was refused for MAILER_SMTP_USERNAME: in Microsoft 365, give the app "
        "registration the SMTP.SendAsApp permission (admin consent granted), register its "
        "service principal in Exchange with access to that mailbox, and enable SMTP AUTH "
        "for the mailbox; elsewhere, check the token's scope (MAILER_OAUTH_SCOPE)"
    ),
}


def _tls_hint(c: ErrorContext) -> str:
    """The settings that go with the port, for a failure that suggests they do not."""
    if c.security == "tls":
        return (
            f'port {c.port} speaks plain SMTP first (STARTTLS): set security = "starttls", '
            'or use port 465 with security = "tls"'
        )
    return (
        f"port {c.port} may expect TLS from the first byte (as port 465 does): set "
        'security = "tls" there, or use port 587 with security = "starttls"'
    )


def _tls_failure(e: ssl.SSLError, c: ErrorContext) -> MailerError:
    reason = str(getattr(e, "reason", None) or type(e).__name__)
    where = f"TLS with the SMTP server {c.where} failed"
    if c.security == "tls" and reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"):
        # The first reply was plain text ("220 ..."), read as a TLS record.
        return TransportUnavailable(f"{where}: {_tls_hint(c)}")
    if "PROTOCOL_VERSION" in reason or reason == "UNSUPPORTED_PROTOCOL":
        return TransportUnavailable(
            f"{where}: it offers no TLS version this machine accepts (1.2 or later); ask "
            "the relay's operator to update it"
        )
    return TransportUnavailable(
        f"{where} ({reason}): check that the port and security go together (587 with "
        '"starttls", 465 with "tls"), and MAILER_SMTP_CA_FILE for a private authority'
    )


def table(c: ErrorContext) -> ErrorTable:
    """The one table (see the module doc) for an error at stage ``c.stage``."""
    connecting = c.stage == "connect"

    def unreachable(e: BaseException) -> MailerError:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return TransportUnavailable(f"cannot connect to the SMTP server {c.where}: {reason}")

    def lost(e: BaseException) -> MailerError:
        if connecting:
            return unreachable(e)
        return TemporarySendError(f"connection to {c.where} lost before the message was sent: {e}")

    def late(e: BaseException) -> MailerError:
        if not connecting:
            return TemporarySendError(f"{c.where}: {e or 'no reply in time'}")
        hint = "" if c.security == "tls" else f": {_tls_hint(c)}"
        return TransportUnavailable(
            f"the SMTP server {c.where} did not answer within {c.timeout:g} s{hint}"
        )

    def sender_refused(e: SenderRefused) -> MailerError:
        if 500 <= e.reply.code < 600:
            # The server refuses our sender address: every recipient would fail alike.
            hint = ""
            if e.reply.code == 530 and c.security == "none":
                hint = ': it wants STARTTLS first, set security = "starttls"'
            return TransportUnavailable(
                f"the SMTP server {c.where} refused the sender {c.mail_from} ({e.reply}){hint}"
            )
        return TemporarySendError(str(e.reply))

    def refused_login(e: aiosmtplib.SMTPAuthenticationError) -> MailerError:
        what = "the token" if c.auth == "oauth2" else "the username or password"
        return TransportUnavailable(
            f"the SMTP server {c.where} refused {what} ({Reply(e.code, e.message)}): "
            f"{_LOGIN_HINT.get(c.auth, _LOGIN_HINT['password'])}"
        )

    def library(e: aiosmtplib.SMTPException) -> MailerError:
        text = str(e)
        if "STARTTLS extension not supported" in text:
            return TransportUnavailable(
                f"the SMTP server {c.where} does not offer STARTTLS: check the port (587 "
                'for "starttls", 465 for "tls"); "none" only for a relay on this machine'
            )
        if "XOAUTH2" in text:
            return TransportUnavailable(
                f"the SMTP server {c.where} does not offer AUTH XOAUTH2: use the host of "
                'your provider\'s OAuth submission (smtp.office365.com), or auth = "password"'
            )
        return TransportUnavailable(f"the SMTP server {c.where}: {text}")

    return [
        # -- replies to our commands ----------------------------------------------------
        (SenderRefused, sender_refused),
        (RecipientRefused, lambda e: classify(e.reply, at_rcpt=True)),
        (Refused, lambda e: classify(e.reply)),
        (
            ReplyMissing,
            lambda e: DeliveryUnknown(
                f"{c.where} received the whole message and sent no reply "
                f"({e.__cause__ or e}): it may have been accepted"
            ),
        ),
        # -- opening, securing and logging in (aiosmtplib) --------------------------------
        (aiosmtplib.SMTPAuthenticationError, refused_login),
        (
            aiosmtplib.SMTPResponseException,
            lambda e: TransportUnavailable(
                f"the SMTP server {c.where} refused the connection ({Reply(e.code, e.message)})"
            ),
        ),
        (aiosmtplib.SMTPTimeoutError, late),
        (aiosmtplib.SMTPServerDisconnected, unreachable),
        (aiosmtplib.SMTPConnectError, unreachable),
        (aiosmtplib.SMTPException, library),
        (
            ssl.SSLCertVerificationError,
            lambda e: TransportUnavailable(
                f"the SMTP server {c.where} has a certificate that cannot be trusted "
                f"({e.verify_message}): set MAILER_SMTP_CA_FILE for a private authority"
            ),
        ),
        (ssl.SSLError, lambda e: _tls_failure(e, c)),
        # -- the line itself ------------------------------------------------------------
        (TimeoutError, late),
        (OSError, lost),
        (
            UnicodeError,
            lambda e: PermanentSendError(
                f"{c.where}: the address cannot be sent as it is ({e})", bounce=False
            ),
        ),
    ]


def cause(exc: BaseException) -> BaseException:
    """A certificate or TLS failure hidden inside a connection error, or ``exc`` itself."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def outcome(exc: BaseException, c: ErrorContext) -> MailerError | None:
    """What ``exc`` means for the copy (or the send), or None for an error this table does
    not know, which the caller re-raises. One of ours passes through as it is."""
    if isinstance(exc, MailerError):
        return exc
    return map_exception(cause(exc) if c.stage == "connect" else exc, table(c))
