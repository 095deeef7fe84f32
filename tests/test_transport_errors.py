"""What smtplib (one-off messages) and the pipelined client of a send raise, mapped onto
what the send does: one case per row of each table.

``smtplib.SMTPException`` is an ``OSError``, so the most specific row must win: a "not
supported" reply is not a dropped line, and a refused login is not a server that is down.
"""

from __future__ import annotations

import smtplib
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
from mailer.sending.transports import pipeline, smtp

WHERE = "relay.example.org:587"
TO = "jo@example.org"


def _cert_error() -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError("certificate verify failed")
    exc.verify_message = "self-signed certificate"
    return exc


SEND_CASES = [
    (
        smtplib.SMTPRecipientsRefused({TO: (550, b"5.1.1 no such user")}),
        PermanentSendError,
        True,
        "550 5.1.1 no such user",
    ),
    (
        smtplib.SMTPRecipientsRefused({TO: (451, b"4.3.0 try later")}),
        TemporarySendError,
        None,
        "451 4.3.0",
    ),
    (
        smtplib.SMTPSenderRefused(553, b"5.7.1 sender not allowed", "news@example.org"),
        TransportUnavailable,
        None,
        "refused the sender",
    ),
    (
        smtplib.SMTPSenderRefused(451, b"4.3.0 busy", "news@example.org"),
        TemporarySendError,
        None,
        "451 4.3.0 busy",
    ),
    (
        smtplib.SMTPNotSupportedError("SMTPUTF8 not supported"),
        PermanentSendError,
        False,
        "SMTPUTF8 not supported",
    ),
    (smtplib.SMTPDataError(554, b"5.7.1 message refused"), PermanentSendError, False, "554"),
    (smtplib.SMTPDataError(552, b"5.1.1 mailbox gone"), PermanentSendError, True, "552"),
    (smtplib.SMTPDataError(421, b"4.4.2 closing"), TemporarySendError, None, "421"),
    (smtplib.SMTPServerDisconnected("gone"), TemporarySendError, None, "lost"),
    (smtplib.SMTPException("odd reply"), TemporarySendError, None, "odd reply"),
    (TimeoutError("timed out"), TemporarySendError, None, "lost"),
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
    mapped = smtp.send_error(exc, WHERE, "news@example.org", TO)
    assert type(mapped) is kind
    assert fragment in str(mapped)
    if bounce is not None:
        assert isinstance(mapped, PermanentSendError) and mapped.bounce is bounce


CONNECT_CASES = [
    (smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"), "refused the username"),
    (smtplib.SMTPNotSupportedError("STARTTLS extension"), "does not offer STARTTLS"),
    (smtplib.SMTPConnectError(554, b"go away"), "refused the connection (554 go away)"),
    (_cert_error(), "certificate that cannot be trusted (self-signed certificate)"),
    (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), "cannot connect"),
    (ConnectionRefusedError(111, "Connection refused"), "cannot connect"),
]


@pytest.mark.parametrize(("exc", "fragment"), CONNECT_CASES)
def test_a_connection_error_pauses_the_send_and_says_why(exc: BaseException, fragment: str) -> None:
    mapped = smtp.connect_error(exc, WHERE)
    assert type(mapped) is TransportUnavailable
    assert fragment in str(mapped)


def test_every_row_of_each_table_has_a_case() -> None:
    context = smtp._Context(WHERE, "news@example.org", TO)
    send_rows = {kind for kind, _ in smtp._send_table(context)}
    connect_rows = {kind for kind, _ in smtp._connect_table(context)}

    def row_of(exc: BaseException, rows: set[type[BaseException]]) -> type[BaseException]:
        return min((k for k in rows if isinstance(exc, k)), key=type(exc).__mro__.index)

    assert {row_of(c[0], send_rows) for c in SEND_CASES} == send_rows
    assert {row_of(c[0], connect_rows) for c in CONNECT_CASES} == connect_rows


def test_the_most_specific_row_wins_whatever_the_order() -> None:
    table = [
        (OSError, lambda e: TemporarySendError("line")),
        (smtplib.SMTPNotSupportedError, lambda e: PermanentSendError("unsupported")),
    ]
    mapped = map_exception(smtplib.SMTPNotSupportedError("x"), table)
    assert isinstance(mapped, PermanentSendError)
    assert map_exception(ValueError("x"), table) is None
    assert isinstance(map_exception(OSError("x"), list(reversed(table))), TemporarySendError)


# -- the pipelined client of a send (mailer.sending.transports.pipeline) ---------------------

R = pipeline.Reply

PIPELINE_SEND_CASES = [
    (pipeline.SenderRefused(R(553, "5.7.1 sender not allowed")), TransportUnavailable, None, "553"),
    (pipeline.SenderRefused(R(451, "4.3.0 busy")), TemporarySendError, None, "451 4.3.0 busy"),
    (pipeline.RecipientRefused(R(550, "5.1.1 no such user")), PermanentSendError, True, "550"),
    (pipeline.RecipientRefused(R(452, "4.2.2 mailbox full")), TemporarySendError, None, "452"),
    (pipeline.DataRefused(R(554, "5.5.1 no valid recipients")), PermanentSendError, False, "554"),
    (pipeline.Refused(R(554, "5.7.1 message refused")), PermanentSendError, False, "5.7.1"),
    (pipeline.Refused(R(552, "5.1.1 mailbox gone")), PermanentSendError, True, "552"),
    (pipeline.Refused(R(421, "4.4.2 closing")), TemporarySendError, None, "421"),
    (pipeline.ReplyMissing("no reply within 30 s"), DeliveryUnknown, None, "may have been"),
    (TimeoutError("no reply within 30 s"), TemporarySendError, None, "no reply"),
    (pipeline.LineLost("the server closed the connection"), TemporarySendError, None, "lost"),
    (ConnectionResetError(104, "Connection reset by peer"), TemporarySendError, None, "lost"),
    (UnicodeEncodeError("ascii", "zoë", 2, 3, "no"), PermanentSendError, False, "cannot be sent"),
]


@pytest.mark.parametrize(
    ("exc", "kind", "bounce", "fragment"),
    PIPELINE_SEND_CASES,
    ids=[f"{type(c[0]).__name__}-{i}" for i, c in enumerate(PIPELINE_SEND_CASES)],
)
def test_a_pipelined_send_error_maps_to_the_right_outcome(
    exc: BaseException, kind: type[MailerError], bounce: bool | None, fragment: str
) -> None:
    context = pipeline._Context(WHERE, "news@example.org", TO, 30.0)
    mapped = map_exception(exc, pipeline.send_table(context))
    assert type(mapped) is kind
    assert fragment in str(mapped)
    if bounce is not None:
        assert isinstance(mapped, PermanentSendError) and mapped.bounce is bounce


PIPELINE_CONNECT_CASES = [
    (aiosmtplib.SMTPAuthenticationError(535, "5.7.8 bad credentials"), "refused the username"),
    (aiosmtplib.SMTPConnectResponseError(554, "go away"), "refused the connection (554 go away)"),
    (aiosmtplib.SMTPConnectTimeoutError("timed out"), "did not answer within 30 s"),
    (_cert_error(), "certificate that cannot be trusted (self-signed certificate)"),
    (aiosmtplib.SMTPException("STARTTLS extension not supported"), "STARTTLS extension"),
    (aiosmtplib.SMTPConnectError("Error connecting: refused"), "cannot connect"),
    (ConnectionRefusedError(111, "Connection refused"), "cannot connect"),
]


@pytest.mark.parametrize(("exc", "fragment"), PIPELINE_CONNECT_CASES)
def test_a_pipelined_connection_error_pauses_the_send_and_says_why(
    exc: BaseException, fragment: str
) -> None:
    mapped = map_exception(exc, pipeline.connect_table(pipeline._Context(WHERE, timeout=30.0)))
    assert type(mapped) is TransportUnavailable
    assert fragment in str(mapped)


def test_a_certificate_failure_inside_a_connection_error_is_named() -> None:
    wrapped = aiosmtplib.SMTPConnectError("Error connecting")
    wrapped.__cause__ = _cert_error()
    assert isinstance(pipeline._cause(wrapped), ssl.SSLCertVerificationError)


def test_every_row_of_each_pipeline_table_has_a_case() -> None:
    context = pipeline._Context(WHERE, "news@example.org", TO, 30.0)
    send_rows = {kind for kind, _ in pipeline.send_table(context)}
    connect_rows = {kind for kind, _ in pipeline.connect_table(context)}

    def row_of(exc: BaseException, rows: set[type[BaseException]]) -> type[BaseException]:
        return min((k for k in rows if isinstance(exc, k)), key=type(exc).__mro__.index)

    assert {row_of(c[0], send_rows) for c in PIPELINE_SEND_CASES} == send_rows
    assert {row_of(c[0], connect_rows) for c in PIPELINE_CONNECT_CASES} == connect_rows
