"""What mailer's one SMTP client meets, mapped onto what the send (or a one-off message)
does: one case per row of the one table, while connecting and while sending.

The most specific row must win: ``aiosmtplib.SMTPAuthenticationError`` is a refusal, not
a server that is down; a connection error that hides a TLS failure is named by it.
"""

from __future__ import annotations

import ssl

import aiosmtplib
import pytest

from mailer.errors import (
    DeliveryUnknown,
    MailerError,
    PermanentSendError,
    TemporarySendError,
    TransportUnavailable,
    map_exception,
)
from mailer.sending.transports import outcomes
from mailer.sending.transports.outcomes import (
    DataRefused,
    ErrorContext,
    LineLost,
    RecipientRefused,
    Refused,
    ReplyMissing,
    SenderRefused,
)

R = outcomes.Reply
HOST, PORT = "relay.example.org", 587
TO = "jo@example.org"
SENDING = ErrorContext("send", HOST, PORT, "starttls", "password", 30.0, "news@example.org", TO)
# Implicit TLS on the STARTTLS port: the likeliest mistake, whose hint the TLS case checks.
CONNECTING = ErrorContext("connect", HOST, PORT, "tls", "password", 30.0)


def _cert_error() -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError("certificate verify failed")
    exc.verify_message = "self-signed certificate"
    return exc


def _ssl_error(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower().replace('_', ' ')} (_ssl.c:1006)")
    exc.reason = reason
    return exc


SEND_CASES = [
    (SenderRefused(R(553, "5.7.1 sender not allowed")), TransportUnavailable, None, "553"),
    (SenderRefused(R(451, "4.3.0 busy")), TemporarySendError, None, "451 4.3.0 busy"),
    (RecipientRefused(R(550, "5.1.1 no such user")), PermanentSendError, True, "550 5.1.1"),
    (RecipientRefused(R(451, "4.3.0 try later")), TemporarySendError, None, "451 4.3.0"),
    (RecipientRefused(R(452, "4.2.2 mailbox full")), TemporarySendError, None, "452"),
    (DataRefused(R(554, "5.5.1 no valid recipients")), PermanentSendError, False, "554"),
    (Refused(R(554, "5.7.1 message refused")), PermanentSendError, False, "5.7.1"),
    (Refused(R(552, "5.1.1 mailbox gone")), PermanentSendError, True, "552"),
    (Refused(R(421, "4.4.2 closing")), TemporarySendError, None, "421"),
    (ReplyMissing("no reply within 30 s"), DeliveryUnknown, None, "may have been"),
    (TimeoutError("no reply within 30 s"), TemporarySendError, None, "no reply"),
    (LineLost("the server closed the connection"), TemporarySendError, None, "lost"),
    (ConnectionResetError(104, "Connection reset by peer"), TemporarySendError, None, "lost"),
    (UnicodeEncodeError("ascii", "zoë", 2, 3, "no"), PermanentSendError, False, "cannot be sent"),
]


@pytest.mark.parametrize(
    ("exc", "kind", "bounce", "fragment"),
    SEND_CASES,
    ids=[f"{type(c[0]).__name__}-{i}" for i, c in enumerate(SEND_CASES)],
)
def test_a_send_error_maps_to_the_right_outcome(
    exc: BaseException, kind: type[MailerError], bounce: bool | None, fragment: str
) -> None:
    mapped = outcomes.outcome(exc, SENDING)
    assert type(mapped) is kind
    assert fragment in str(mapped)
    if bounce is not None:
        assert isinstance(mapped, PermanentSendError) and mapped.bounce is bounce


def _wrapped(inner: BaseException) -> aiosmtplib.SMTPConnectError:
    outer = aiosmtplib.SMTPConnectError(f"Error connecting to {HOST} on port {PORT}: {inner}")
    outer.__cause__ = inner
    return outer


CONNECT_CASES = [
    (aiosmtplib.SMTPAuthenticationError(535, "5.7.8 bad credentials"), "refused the username"),
    (aiosmtplib.SMTPConnectResponseError(554, "go away"), "refused the connection (554 go away)"),
    (aiosmtplib.SMTPConnectTimeoutError("timed out"), "did not answer within 30 s"),
    (aiosmtplib.SMTPServerDisconnected("Unexpected EOF"), "cannot connect"),
    (_wrapped(_cert_error()), "certificate that cannot be trusted (self-signed certificate)"),
    (
        _wrapped(_ssl_error("WRONG_VERSION_NUMBER")),
        'port 587 speaks plain SMTP first (STARTTLS): set security = "starttls", or use port '
        '465 with security = "tls"',
    ),
    (
        aiosmtplib.SMTPException("SMTP STARTTLS extension not supported by server."),
        "does not offer STARTTLS",
    ),
    (aiosmtplib.SMTPConnectError("Error connecting: refused"), "cannot connect"),
    (ConnectionRefusedError(111, "Connection refused"), "cannot connect"),
    (TimeoutError(), "did not answer within 30 s"),
    (LineLost("the server sent a line no command asked for ('250 hello')"), "no command"),
    (UnicodeEncodeError("ascii", "zoë", 2, 3, "no"), "cannot be sent"),
]


@pytest.mark.parametrize(("exc", "fragment"), CONNECT_CASES)
def test_a_connection_error_pauses_the_send_and_says_why(exc: BaseException, fragment: str) -> None:
    mapped = outcomes.outcome(exc, CONNECTING)
    assert isinstance(mapped, TransportUnavailable | PermanentSendError)
    if not isinstance(exc, UnicodeError):
        assert type(mapped) is TransportUnavailable
    assert fragment in str(mapped)
    assert "_ssl.c" not in str(mapped)


def test_every_row_of_the_table_has_a_case() -> None:
    rows = {kind for kind, _ in outcomes.table(SENDING)}
    assert rows == {kind for kind, _ in outcomes.table(CONNECTING)}

    def row_of(exc: BaseException) -> type[BaseException]:
        return min((k for k in rows if isinstance(exc, k)), key=type(exc).__mro__.index)

    cases = [c[0] for c in SEND_CASES] + [outcomes.cause(c[0]) for c in CONNECT_CASES]
    assert {row_of(exc) for exc in cases} == rows


def test_a_login_refused_with_a_token_says_what_to_change_in_the_tenant() -> None:
    context = ErrorContext("connect", "smtp.office365.com", 587, "starttls", "oauth2")
    refused = aiosmtplib.SMTPAuthenticationError(535, "5.7.3 Authentication unsuccessful")
    text = str(outcomes.outcome(refused, context))
    assert "refused the token" in text
    assert "SMTP.SendAsApp" in text and "SMTP AUTH" in text and "service principal" in text


def test_the_most_specific_row_wins_whatever_the_order() -> None:
    table = [
        (OSError, lambda e: TemporarySendError("line")),
        (aiosmtplib.SMTPConnectError, lambda e: TransportUnavailable("unreachable")),
    ]
    mapped = map_exception(aiosmtplib.SMTPConnectError("x"), table)
    assert isinstance(mapped, TransportUnavailable)
    assert map_exception(ValueError("x"), table) is None
    assert isinstance(map_exception(OSError("x"), list(reversed(table))), TemporarySendError)
