"""mailer's one SMTP client against real servers (aiosmtpd): the blocking face that proofs,
notices, alerts and `mailer doctor` use, a server that sends lines nobody asked for, TLS
set up the wrong way round, and AUTH XOAUTH2 with tokens from an identity provider on
loopback (tests/oauth_server.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mailer import config, oauth
from mailer.sending import transports
from oauth_server import SECRET, IdentityProvider
from send_helpers import addresses, ledger, make_list, smtp_env
from smtp_server import Handler, SMTPServer

SLUG = "2025-11"


@pytest.fixture
def approved(cli: Any, newsletter: Path) -> Path:
    make_list(cli, newsletter, "practitioners", addresses(12))
    assert cli("approve", SLUG, "--by", "Sam Patel").exit_code == 0
    return newsletter


# -- lines no command asked for ------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-at-a-time"])
def test_a_server_that_adds_a_line_after_its_replies_never_gets_a_copy_recorded_wrongly(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch, pipelining: bool
) -> None:
    # After each message's reply, a refusal the client never asked for: read as the reply
    # to the next MAIL FROM, it would refuse the sender and pause the whole send, and
    # shift every later reply onto the wrong command.
    handler = Handler(pipelining=pipelining, stray="554 5.7.1 not asked for")
    with SMTPServer(handler) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_CONNECTIONS="2")
        r = cli("send", SLUG, "--list", "practitioners", "--yes")
        assert r.exit_code == 0, r.output
    got = Counter(server.handler.recipients())
    status = ledger(approved)
    assert set(got.values()) == {1}  # nobody twice
    # Exactly the copies the server took are recorded as sent; the others were retried.
    assert {email for email, s in status.items() if s == "sent"} == set(got)
    assert set(status.values()) <= {"sent", "failed-temporary"}
    assert len(got) >= 2  # each connection's first message, at least
    if not pipelining:
        # The line comes with the reply, while the connection then idles: it is dropped
        # and opened again before the next message, which nothing delays.
        assert set(status.values()) == {"sent"}
    for item in server.received:  # each message whole, with its own recipient
        (to,) = item.rcpt_tos
        assert item.message["To"] is not None and to in str(item.message["To"])


def test_proofs_survive_a_stray_line_between_them(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SMTPServer(Handler(stray="220 hello again")) as server:
        smtp_env(monkeypatch, server.port)
        r = cli("send", SLUG, "--to", "sam@example.org", "--to", "jo@example.org")
        assert r.exit_code == 0, r.output
    assert server.handler.recipients() == ["sam@example.org", "jo@example.org"]
    assert r.stdout.count("(250 2.0.0 Message accepted)") == 2


def test_the_blocking_face_stuffs_dots_and_ends_lines_with_crlf(
    settings: config.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = b"Subject: dots\n\n.starts with a dot\n.\nafter a lone dot\nno final newline"
    with SMTPServer(Handler()) as server:
        smtp_env(monkeypatch, server.port)
        s = config.load(settings.root)
        with transports.factory(s, "_test")() as transport:
            reply = transport.send("news@example.org", "jo@example.org", body)
    assert reply == "250 2.0.0 Message accepted"
    (item,) = server.received
    assert item.data.replace(b"\r\n", b"\n") == body + b"\n"


# -- TLS the wrong way round ---------------------------------------------------------------


def _doctor_line(cli: Any) -> str:
    r = cli("doctor", "--smtp")
    assert r.exit_code == 1
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("FAIL  smtp")]
    assert "_ssl.c" not in line and "[SSL:" not in line
    return line


def test_implicit_tls_on_a_starttls_port_names_the_fix(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with SMTPServer(tls_dir=tmp_path) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_SECURITY="tls")
        line = _doctor_line(cli)
    assert line.endswith(
        f'port {server.port} speaks plain SMTP first (STARTTLS): set security = "starttls", '
        'or use port 465 with security = "tls"'
    )


def test_starttls_on_an_implicit_tls_port_names_the_fix(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The server waits for TLS from the first byte; the client waits for its greeting.
    with SMTPServer(tls_dir=tmp_path, implicit_tls=True) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_SECURITY="starttls", MAILER_SMTP_TIMEOUT="1")
        line = _doctor_line(cli)
    assert f"did not answer within 1 s: port {server.port} may expect TLS from the first" in line
    assert 'set security = "tls" there' in line


def test_starttls_to_a_server_without_it_names_the_fix(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SMTPServer() as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_SECURITY="starttls")
        line = _doctor_line(cli)
    assert "does not offer STARTTLS: check the port (587" in line


# -- OAuth 2.0 (AUTH XOAUTH2) --------------------------------------------------------------


def _oauth_env(
    monkeypatch: pytest.MonkeyPatch, server: SMTPServer, idp: IdentityProvider, **extra: str
) -> None:
    smtp_env(
        monkeypatch,
        server.port,
        MAILER_SMTP_SECURITY="starttls",
        MAILER_SMTP_CA_FILE=str(server.ca_file),
        MAILER_SMTP_AUTH="oauth2",
        MAILER_SMTP_USERNAME="newsletter@example.org",
        **idp.env(**extra),
    )


def test_a_send_logs_in_with_a_token_and_doctor_says_so(
    cli: Any,
    approved: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with IdentityProvider(tmp_path) as idp:
        handler = Handler()
        handler.idp = idp
        with SMTPServer(handler, tls_dir=tmp_path, oauth=True) as server:
            _oauth_env(monkeypatch, server, idp)
            r = cli("doctor", "--smtp")
            assert r.exit_code == 0, r.output
            assert (
                f"ok    smtp        connected to 127.0.0.1:{server.port} (starttls) as "
                "newsletter@example.org with OAuth 2.0; nothing was sent (logged in with an "
                "OAuth 2.0 token from 127.0.0.1 (AUTH XOAUTH2))"
            ) in r.stdout
            r = cli("send", SLUG, "--list", "practitioners", "--yes")
            assert r.exit_code == 0, r.output
    assert Counter(server.handler.recipients()) == Counter(addresses(12))
    assert set(server.handler.logins) == {"newsletter@example.org"}
    # One token served every connection of the send (and doctor's) in this process.
    assert len(idp.issued) == 1
    said = r.output + caplog.text
    assert SECRET not in said and idp.issued[0] not in said


def test_a_wrong_client_secret_is_one_clear_line_without_the_secret(
    cli: Any,
    approved: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-secret-Qm9~x7"
    with IdentityProvider(tmp_path) as idp:
        handler = Handler()
        handler.idp = idp
        with SMTPServer(handler, tls_dir=tmp_path, oauth=True) as server:
            _oauth_env(monkeypatch, server, idp, MAILER_OAUTH_CLIENT_SECRET=wrong)
            r = cli("doctor", "--smtp")
            assert r.exit_code == 1
            (line,) = [x for x in r.stdout.splitlines() if x.startswith("FAIL  smtp")]
            assert line.endswith(
                "the OAuth token endpoint at 127.0.0.1 refused (invalid_client, "
                "AADSTS7000215): the client secret is wrong: copy its Value (not its ID) from "
                "the app registration's Certificates & secrets into MAILER_OAUTH_CLIENT_SECRET"
            )
            r = cli("send", SLUG, "--list", "practitioners", "--yes")
    assert r.exit_code == 1
    assert "paused" in r.output and "AADSTS7000215" in r.output
    assert "Traceback" not in r.output
    assert set(ledger(approved).values()) == {"pending"}
    assert server.received == [] and idp.issued == []
    said = r.output + caplog.text
    assert wrong not in said and SECRET not in said


def test_a_token_refused_by_the_mailbox_says_what_to_change_in_the_tenant(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with IdentityProvider(tmp_path, mailbox="someone-else@example.org") as idp:
        handler = Handler()
        handler.idp = idp
        with SMTPServer(handler, tls_dir=tmp_path, oauth=True) as server:
            _oauth_env(monkeypatch, server, idp)
            r = cli("doctor", "--smtp")
    assert r.exit_code == 1
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("FAIL  smtp")]
    assert "as newsletter@example.org with OAuth 2.0:" in line
    assert "refused the token (535 5.7.3" in line
    assert "SMTP.SendAsApp" in line and "enable SMTP AUTH for the mailbox" in line
    assert idp.issued[0] not in r.output


def test_tokens_are_kept_until_shortly_before_they_expire(
    settings: config.Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fake_clock import FakeClock

    clock = FakeClock()
    with IdentityProvider(tmp_path, expires_in=3600) as idp:
        for key, value in idp.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("MAILER_TRANSPORT", "smtp")
        monkeypatch.setenv("MAILER_SMTP_AUTH", "oauth2")
        monkeypatch.setenv("MAILER_SMTP_SECURITY", "starttls")
        monkeypatch.setenv("MAILER_SMTP_USERNAME", "newsletter@example.org")
        s = config.load(settings.root)
        assert s.transport.smtp.oauth is not None
        source = oauth.TokenSource(s.transport.smtp.oauth, clock)
        first = source.token()
        clock.sleep(3600 - oauth.REFRESH_BEFORE - 1)
        assert source.token() == first and len(idp.issued) == 1
        clock.sleep(1)  # five minutes before it expires: a new one
        second = source.token()
        assert second != first and len(idp.issued) == 2
        assert idp.requests[-1]["scope"] == ["https://outlook.office365.com/.default"]
        assert source.token() == second


def test_a_certificate_instead_of_a_secret_signs_the_request(
    settings: config.Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailer test app")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    pem = tmp_path / "app.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert_pem
    )
    with IdentityProvider(tmp_path, certificate=cert_pem) as idp:
        env = idp.env(MAILER_OAUTH_CERTIFICATE_FILE=str(pem))
        del env["MAILER_OAUTH_CLIENT_SECRET"]
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        for k, v in (
            ("MAILER_TRANSPORT", "smtp"),
            ("MAILER_SMTP_AUTH", "oauth2"),
            ("MAILER_SMTP_SECURITY", "starttls"),
            ("MAILER_SMTP_USERNAME", "newsletter@example.org"),
        ):
            monkeypatch.setenv(k, v)
        s = config.load(settings.root)
        assert s.transport.smtp.oauth is not None
        token = oauth.TokenSource(s.transport.smtp.oauth).token()
    assert idp.valid(token)
    (form,) = idp.requests
    assert "client_secret" not in form and "client_assertion" in form
