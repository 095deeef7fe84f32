"""SMTP delivery with smtplib: plain, STARTTLS or implicit TLS, with optional AUTH.

Each transport owns one connection, opened on first use and reopened after a drop. Server
replies are mapped onto the three outcomes of :mod:`mailer.transports.base`.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl

from mailer.config import SMTPSettings
from mailer.errors import PermanentSendError, TemporarySendError, TransportUnavailable
from mailer.transports.base import TransportBase


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}"


class SMTPTransport(TransportBase):
    name = "smtp"

    def __init__(self, settings: SMTPSettings, ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.ssl_context = ssl_context or ssl.create_default_context(cafile=settings.ca_file)
        self.conn: smtplib.SMTP | None = None

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def connect(self) -> smtplib.SMTP:
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
            raise _connect_error(self.where, exc) from exc

    def open(self) -> None:
        if self.conn is None:
            self.connect()

    def send(self, mail_from: str, to: str, data: bytes) -> str:
        conn = self.conn or self.connect()
        options: list[str] = []
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
        except smtplib.SMTPRecipientsRefused as exc:
            code, message = exc.recipients[to]
            self._after_error(code)
            raise _classify(code, message, at_rcpt=True) from exc
        except smtplib.SMTPSenderRefused as exc:
            self._after_error(exc.smtp_code)
            if 500 <= exc.smtp_code < 600:
                # The server refuses our sender address: every recipient would fail alike.
                raise TransportUnavailable(
                    f"the SMTP server refused the sender {mail_from} "
                    f"({_reply(exc.smtp_code, exc.smtp_error)})"
                ) from exc
            raise TemporarySendError(_reply(exc.smtp_code, exc.smtp_error)) from exc
        except smtplib.SMTPResponseException as exc:
            self._after_error(exc.smtp_code)
            raise _classify(exc.smtp_code, exc.smtp_error) from exc
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise TemporarySendError(
                f"connection to {self.where} lost: {exc or 'disconnected'}"
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentSendError(f"{self.where}: {exc}", bounce=False) from exc
        except (smtplib.SMTPException, UnicodeError) as exc:
            self._drop()
            raise TemporarySendError(f"{self.where}: {exc}") from exc
        if refused:
            code, message = refused[to]
            raise _classify(code, message, at_rcpt=True)
        return "250 accepted"

    def _after_error(self, code: int) -> None:
        # 421 means the server is closing the line; anything else leaves it usable.
        if code == 421:
            self._drop()

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


def _classify(
    code: int, message: bytes | str, *, at_rcpt: bool = False
) -> TemporarySendError | PermanentSendError:
    """4xx: try again later. 5xx: never; and the address is bad (a bounce) when it was
    refused at RCPT TO or the enhanced status says so (5.1.x), not when the message was."""
    text = _reply(code, message)
    if not 500 <= code < 600:
        return TemporarySendError(text)
    enhanced = text.split(" ", 2)[1] if text.count(" ") >= 1 else ""
    return PermanentSendError(text, bounce=at_rcpt or enhanced.startswith("5.1."))


def _connect_error(where: str, exc: BaseException) -> BaseException:
    """What a failure to open the connection means for the send: it pauses."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return TransportUnavailable(
            f"the SMTP server {where} refused the username or password "
            f"({_reply(exc.smtp_code, exc.smtp_error)}): check MAILER_SMTP_USERNAME and "
            "MAILER_SMTP_PASSWORD"
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return TransportUnavailable(f"the SMTP server {where} does not offer {exc}")
    if isinstance(exc, smtplib.SMTPResponseException):
        return TransportUnavailable(
            f"the SMTP server {where} refused the connection "
            f"({_reply(exc.smtp_code, exc.smtp_error)})"
        )
    if isinstance(exc, OSError | smtplib.SMTPException):
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return TransportUnavailable(f"cannot connect to the SMTP server {where}: {reason}")
    return exc
