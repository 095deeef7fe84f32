"""SMTP delivery of one-off messages (proofs, the web side's notices) with smtplib: plain,
STARTTLS or implicit TLS, with optional AUTH. Sends go through :mod:`.pipeline` instead.

Each transport owns one connection, opened on first use and reopened after a drop. What
smtplib raises is mapped onto the outcomes of :mod:`mailer.sending.transports.base` by two
tables, one for opening the connection and one for sending, in which the most specific
exception class wins (:func:`mailer.errors.map_exception`): ``smtplib.SMTPException`` is an
``OSError``, so a "not supported" reply must not be taken for a dropped line.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from dataclasses import dataclass

from mailer.config import SMTPSettings
from mailer.errors import (
    ErrorTable,
    MailerError,
    PermanentSendError,
    TemporarySendError,
    TransportUnavailable,
    map_exception,
)
from mailer.sending.transports.base import TransportBase
from mailer.subscribers.addresses import ascii_address


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}"


def classify(
    code: int, message: bytes | str, *, at_rcpt: bool = False
) -> TemporarySendError | PermanentSendError:
    """4xx: try again later. 5xx: never; and the address is bad (a bounce) when it was
    refused at RCPT TO or the enhanced status says so (5.1.x), not when the message was."""
    text = _reply(code, message)
    if not 500 <= code < 600:
        return TemporarySendError(text)
    enhanced = text.split(" ", 2)[1] if text.count(" ") >= 1 else ""
    return PermanentSendError(text, bounce=at_rcpt or enhanced.startswith("5.1."))


@dataclass(frozen=True)
class _Context:
    """What an error message needs to say: the server, and the sender and recipient."""

    where: str
    mail_from: str = ""
    to: str = ""


def _connect_table(c: _Context) -> ErrorTable:
    def refused_login(e: smtplib.SMTPAuthenticationError) -> MailerError:
        return TransportUnavailable(
            f"the SMTP server {c.where} refused the username or password "
            f"({_reply(e.smtp_code, e.smtp_error)}): check MAILER_SMTP_USERNAME and "
            "MAILER_SMTP_PASSWORD"
        )

    def unreachable(e: BaseException) -> MailerError:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return TransportUnavailable(f"cannot connect to the SMTP server {c.where}: {reason}")

    return [
        (smtplib.SMTPAuthenticationError, refused_login),
        (
            smtplib.SMTPNotSupportedError,
            lambda e: TransportUnavailable(f"the SMTP server {c.where} does not offer {e}"),
        ),
        (
            smtplib.SMTPResponseException,
            lambda e: TransportUnavailable(
                f"the SMTP server {c.where} refused the connection "
                f"({_reply(e.smtp_code, e.smtp_error)})"
            ),
        ),
        (
            ssl.SSLCertVerificationError,
            lambda e: TransportUnavailable(
                f"the SMTP server {c.where} has a certificate that cannot be trusted "
                f"({e.verify_message}): set MAILER_SMTP_CA_FILE for a private authority"
            ),
        ),
        (smtplib.SMTPException, unreachable),
        (OSError, unreachable),
    ]


def _send_table(c: _Context) -> ErrorTable:
    def rcpt_refused(e: smtplib.SMTPRecipientsRefused) -> MailerError:
        code, message = e.recipients.get(c.to, next(iter(e.recipients.values())))
        return classify(code, message, at_rcpt=True)

    def sender_refused(e: smtplib.SMTPSenderRefused) -> MailerError:
        if 500 <= e.smtp_code < 600:
            # The server refuses our sender address: every recipient would fail alike.
            return TransportUnavailable(
                f"the SMTP server refused the sender {c.mail_from} "
                f"({_reply(e.smtp_code, e.smtp_error)})"
            )
        return TemporarySendError(_reply(e.smtp_code, e.smtp_error))

    def lost(e: BaseException) -> MailerError:
        return TemporarySendError(f"connection to {c.where} lost: {e or 'disconnected'}")

    return [
        (smtplib.SMTPRecipientsRefused, rcpt_refused),
        (smtplib.SMTPSenderRefused, sender_refused),
        (
            smtplib.SMTPNotSupportedError,
            lambda e: PermanentSendError(f"{c.where}: {e}", bounce=False),
        ),
        (smtplib.SMTPResponseException, lambda e: classify(e.smtp_code, e.smtp_error)),
        (smtplib.SMTPServerDisconnected, lost),
        (smtplib.SMTPException, lambda e: TemporarySendError(f"{c.where}: {e}")),
        (TimeoutError, lost),
        (OSError, lost),
        (
            UnicodeError,
            lambda e: PermanentSendError(
                f"{c.where}: the message cannot be sent as it is ({e})", bounce=False
            ),
        ),
    ]


def _line_unusable(exc: BaseException) -> bool:
    """Whether the connection must be dropped after ``exc``: a reply other than 421 (the
    server closing) or a "not supported" leaves it usable; anything else does not."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return any(code == 421 for code, _ in exc.recipients.values())
    return not isinstance(exc, smtplib.SMTPNotSupportedError)


class SMTPTransport(TransportBase):
    name = "smtp"

    def __init__(self, settings: SMTPSettings, ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.ssl_context = ssl_context or ssl.create_default_context(cafile=settings.ca_file)
        self.conn: smtplib.SMTP | None = None

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _connect(self) -> smtplib.SMTP:
        """Open, secure and authenticate a connection; closed again if any step fails."""
        s = self.settings
        conn: smtplib.SMTP | None = None
        try:
            if s.security == "tls":
                conn = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=self.ssl_context)
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            conn.ehlo()
            if s.security == "starttls":
                conn.starttls(context=self.ssl_context)
                conn.ehlo()
            if s.username:
                conn.login(s.username, s.password or "")
            self.conn = conn
            return conn
        except (OSError, smtplib.SMTPException) as exc:
            if conn is not None:
                conn.close()
            mapped = map_exception(exc, _connect_table(_Context(self.where)))
            raise (mapped or exc) from exc

    def open(self) -> None:
        if self.conn is None:
            self._connect()

    def send(self, mail_from: str, to: str, data: bytes) -> str:
        conn = self.conn or self._connect()
        options: list[str] = []
        if not to.isascii() and not conn.has_extn("smtputf8"):
            # Only the part before the @ needs SMTPUTF8: a domain goes in its ASCII form.
            to = ascii_address(to) or to
        if not (to.isascii() and mail_from.isascii()):
            # An internationalised mailbox needs SMTPUTF8 (RFC 6531); without it the server
            # cannot take this one address, which says nothing against the address itself.
            if not conn.has_extn("smtputf8"):
                raise PermanentSendError(
                    f"the SMTP server {self.where} does not accept internationalised "
                    f"addresses (SMTPUTF8) such as {to}",
                    bounce=False,
                )
            options.append("SMTPUTF8")
        try:
            refused = conn.sendmail(mail_from, [to], data, mail_options=options)
        except (OSError, smtplib.SMTPException, UnicodeError) as exc:
            if _line_unusable(exc):
                self._drop()
            mapped = map_exception(exc, _send_table(_Context(self.where, mail_from, to)))
            raise (mapped or exc) from exc
        if refused:
            code, message = refused[to]
            raise classify(code, message, at_rcpt=True)
        return "250 accepted"

    def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (OSError, smtplib.SMTPException):
            conn.close()


def send_error(exc: BaseException, where: str, mail_from: str = "", to: str = "") -> MailerError:
    """What an exception raised while sending means for the send (tests use this too)."""
    mapped = map_exception(exc, _send_table(_Context(where, mail_from, to)))
    if mapped is None:
        raise TypeError(f"no mapping for {type(exc).__name__}")
    return mapped


def connect_error(exc: BaseException, where: str) -> MailerError:
    """What an exception raised while connecting means for the send: it pauses."""
    mapped = map_exception(exc, _connect_table(_Context(where)))
    if mapped is None:
        raise TypeError(f"no mapping for {type(exc).__name__}")
    return mapped
