"""Sending: approval, recipients, the ledger, SMTP faults, pause and resume, headers, DKIM."""

from __future__ import annotations

import email
import email.policy
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailer import config, tokens
from send_helpers import addresses, ledger, make_list, smtp_env, sql
from smtp_server import Handler, SMTPServer


@pytest.fixture
def approved(cli: Any, newsletter: Path) -> Path:
    make_list(cli, newsletter, "practitioners", addresses(12))
    r = cli("approve", "2025-11", "--by", "Sam Patel")
    assert r.exit_code == 0, r.output
    assert "Approved 2025-11" in r.stdout
    return newsletter


@pytest.fixture
def server() -> Any:
    with SMTPServer() as s:
        yield s


def test_sending_to_a_list_requires_an_approval(cli: Any, newsletter: Path) -> None:
    make_list(cli, newsletter, "practitioners", addresses(3))
    r = cli("send", "2025-11", "--list", "practitioners", "--yes")
    assert r.exit_code == 1
    assert "2025-11 has not been approved" in r.stderr
    assert "mailer approve 2025-11 --by NAME" in r.stderr
    assert not (newsletter / "outbox").exists()


def test_a_change_after_approval_is_refused_and_named(cli: Any, approved: Path) -> None:
    path = approved / "issues/2025-11/issue.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("Impact Chronology", "Impact Chronologies", 1), encoding="utf-8")
    r = cli("send", "2025-11", "--list", "practitioners", "--yes")
    assert r.exit_code == 1
    assert "changed since Sam Patel approved it" in r.stderr
    assert "section 'Impact Chronologies' added" in r.stderr
    assert "section 'Impact Chronology' removed" in r.stderr
    assert "Traceback" not in r.output
    # Building and approving again makes it sendable.
    assert cli("build", "2025-11").exit_code == 0
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    assert cli("send", "2025-11", "--list", "practitioners", "--yes").exit_code == 0


def test_proof_needs_no_approval_and_writes_no_ledger(cli: Any, newsletter: Path) -> None:
    r = cli("send", "2025-11", "--to", "Editor@Example.ORG")
    assert r.exit_code == 0, r.output
    assert "Proof of 2025-11 sent to editor@example.org" in r.stdout
    files = list((newsletter / "outbox/2025-11/proofs").glob("*.eml"))
    assert len(files) == 1
    msg = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert msg["Subject"] == "[PROOF] CSCP Newsletter – November 2025"
    assert not (newsletter / "subscribers.sqlite").exists() or sql(
        newsletter, "SELECT COUNT(*) FROM delivery"
    ) == [(0,)]


def test_dry_run_counts_and_sends_nothing(cli: Any, approved: Path) -> None:
    r = cli("send", "2025-11", "--list", "practitioners", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "To:         practitioners: 12 people" in r.stdout
    assert "approved by Sam Patel" in r.stdout
    assert "Dry run: nothing was sent." in r.stdout
    assert sql(approved, "SELECT COUNT(*) FROM send") == [(0,)]


def test_declining_the_confirmation_sends_nothing(cli: Any, approved: Path) -> None:
    r = cli("send", "2025-11", "--list", "practitioners", input="n\n")
    assert r.exit_code == 1
    assert "Send to 12 people now (a rehearsal through the outbox)?" in r.stdout
    assert not (approved / "outbox/2025-11").exists()


def test_status_json_reports_every_send_for_scripts(cli: Any, approved: Path) -> None:
    assert cli("send", "2025-11", "--list", "practitioners", "--yes").exit_code == 0
    r = cli("status", "2025-11", "--json")
    assert r.exit_code == 0, r.output
    (report,) = json.loads(r.stdout)
    assert report["slug"] == "2025-11" and report["status"] == "sent"
    assert report["lists"] == ["practitioners"]
    assert report["total"] == 12 and report["sent"] == 12
    assert report["counts"]["sent"] == 12 and report["counts"]["pending"] == 0
    assert report["failed"] == [] and report["in_flight"] == []
    assert report["started_at"] and report["finished_at"]
    missing = cli("status", "2021-12", "--json")
    assert missing.exit_code == 1 and "2021-12 has never been sent" in missing.stderr


def test_outbox_send_writes_one_message_per_recipient(cli: Any, approved: Path) -> None:
    r = cli("send", "2025-11", "--list", "practitioners", "--yes")
    assert r.exit_code == 0, r.output
    assert "2025-11: sent. 12 of 12 sent, 0 failed, 0 not yet sent." in r.stdout
    files = list((approved / "outbox/2025-11").glob("*.eml"))
    assert len(files) == 12
    status = cli("status", "2025-11")
    assert "sent              12" in status.stdout
    assert set(ledger(approved).values()) == {"sent"}


def test_recipients_are_fixed_once_each_and_never_the_unsubscribed(
    cli: Any, newsletter: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = addresses(3, "both")
    make_list(cli, newsletter, "practitioners", addresses(4, "prac") + shared)
    make_list(cli, newsletter, "schools", addresses(2, "school") + shared, name="Schools DSLs")
    assert cli("subscribers", "unsubscribe", "prac0000@example.org").exit_code == 0
    assert (
        cli("subscribers", "unsubscribe", "school0000@example.org", "--list", "schools").exit_code
        == 0
    )
    assert cli("subscribers", "erase", "prac0001@example.org", "--yes").exit_code == 0
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    smtp_env(monkeypatch, server.port)
    r = cli("send", "2025-11", "--list", "practitioners", "--list", "schools", "--yes")
    assert r.exit_code == 0, r.output
    got = Counter(server.handler.recipients())
    expected = {"prac0002@example.org", "prac0003@example.org", "school0001@example.org", *shared}
    assert set(got) == expected
    assert all(n == 1 for n in got.values())
    # A later send of the same issue to a list never mails anyone twice.
    make_list(cli, newsletter, "health", [*shared, "nurse@example.org"], name="Health")
    r = cli("send", "2025-11", "--list", "health", "--yes")
    assert r.exit_code == 0, r.output
    assert Counter(server.handler.recipients())["nurse@example.org"] == 1
    assert all(n == 1 for n in Counter(server.handler.recipients()).values())


def test_headers_and_parts_as_received_by_a_real_server(
    cli: Any, approved: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp_env(monkeypatch, server.port)
    assert cli("send", "2025-11", "--list", "practitioners", "--yes").exit_code == 0
    assert len(server.received) == 12
    settings = config.load(approved)
    key = settings.require_secret_key()
    for item in server.received:
        assert item.mail_from == "newsletter@example.org"
        msg = item.message
        (to,) = item.rcpt_tos
        assert (
            msg["From"] == "Cumberland Safeguarding Children Partnership <newsletter@example.org>"
        )
        assert msg["To"].addresses[0].addr_spec == to
        assert msg["To"].addresses[0].display_name  # the subscriber's name
        assert msg["Subject"] == "CSCP Newsletter – November 2025"
        assert msg["Date"].datetime is not None
        assert re.fullmatch(r"<\d+\.\d+\.[0-9a-z]+@example\.org>", msg["Message-ID"])
        assert msg["Reply-To"] == "cscp@example.org"
        assert msg["List-Id"] == "CSCP Newsletter <practitioners.example.org>"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        https, mailto = re.findall(r"<([^>]+)>", msg["List-Unsubscribe"])
        assert https.startswith("https://news.example.org/unsubscribe/")
        assert mailto.startswith("mailto:cscp@example.org?subject=unsubscribe")
        subscriber_id, _send_id = tokens.read(key, "unsubscribe", https.rsplit("/", 1)[1])
        assert sql(approved, "SELECT email FROM subscriber WHERE id = ?", subscriber_id) == [(to,)]
        assert msg.get_content_type() == "multipart/alternative"
        text, html = msg.iter_parts()
        assert text.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
        assert text.get_content_charset() == "utf-8" and html.get_content_charset() == "utf-8"
        assert f'href="{https}"' in html.get_content()  # the footer link is the same URL
        assert https in text.get_content()
        assert "%%MAILER_" not in text.get_content() + html.get_content()
        assert max(len(line) for line in item.data.split(b"\r\n")) <= 998
    message_ids = {r.message["Message-ID"] for r in server.received}
    assert len(message_ids) == 12
    stored = {row[0] for row in sql(approved, "SELECT message_id FROM delivery")}
    assert stored == message_ids


def test_starttls_and_auth(
    cli: Any, approved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SMTPServer(tls_dir=tmp_path, user="mailer", password="s3cret") as s:
        smtp_env(
            monkeypatch,
            s.port,
            MAILER_SMTP_SECURITY="starttls",
            MAILER_SMTP_USERNAME="mailer",
            MAILER_SMTP_PASSWORD="wrong",
            MAILER_SMTP_CA_FILE=str(s.ca_file),
        )
        r = cli("send", "2025-11", "--list", "practitioners", "--yes")
        assert r.exit_code == 1
        assert "refused the username or password" in r.stderr
        assert "mailer send 2025-11 --resume" in r.stderr
        assert set(ledger(approved).values()) == {"pending"}  # nobody marked failed
        assert s.received == []
        monkeypatch.setenv("MAILER_SMTP_PASSWORD", "s3cret")
        r = cli("send", "2025-11", "--resume")
        assert r.exit_code == 0, r.output
        assert sorted(s.handler.recipients()) == addresses(12)


def test_451_is_retried_then_failed_temporary_and_550_bounces(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = Handler(temp_fail={"person0003@example.org"}, perm_fail={"person0005@example.org"})
    with SMTPServer(handler) as s:
        smtp_env(monkeypatch, s.port)
        r = cli("send", "2025-11", "--list", "practitioners", "--yes")
        assert r.exit_code == 0, r.output
        assert "10 of 12 sent, 2 failed" in r.stdout
        assert "mailer send 2025-11 --retry-failed" in r.stdout
        status = ledger(approved)
        assert status["person0003@example.org"] == "failed-temporary"
        assert status["person0005@example.org"] == "failed-permanent"
        assert sql(
            approved, "SELECT attempts FROM delivery WHERE email = 'person0003@example.org'"
        ) == [(3,)]
        assert sql(
            approved, "SELECT status FROM subscriber WHERE email = 'person0005@example.org'"
        ) == [("bounced",)]
        report = cli("status", "2025-11")
        assert (
            "person0005@example.org  failed-permanent after 1 attempt(s): 550 5.1.1"
            in report.stdout
        )
        assert (
            "person0003@example.org  failed-temporary after 3 attempt(s): 451 4.3.0"
            in report.stdout
        )
        # The server recovers; retrying sends only the temporary failure.
        handler.temp_fail.clear()
        r = cli("send", "2025-11", "--retry-failed")
        assert r.exit_code == 0, r.output
        assert "Retried 1 recipient(s)." in r.stdout
        got = Counter(s.handler.recipients())
        assert got["person0003@example.org"] == 1 and "person0005@example.org" not in got
        assert all(n == 1 for n in got.values()) and len(got) == 11


def test_a_server_that_is_down_pauses_the_send_and_resume_finishes_it(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = Handler()
    down = SMTPServer(handler)  # not started: its port refuses connections
    smtp_env(monkeypatch, down.port)
    r = cli("send", "2025-11", "--list", "practitioners", "--yes")
    assert r.exit_code == 1
    assert f"cannot connect to the SMTP server 127.0.0.1:{down.port}" in r.stderr
    assert set(ledger(approved).values()) == {"pending"}
    assert "paused" in cli("status", "2025-11").stdout
    with down:
        r = cli("send", "2025-11", "--resume")
        assert r.exit_code == 0, r.output
    assert Counter(handler.recipients()) == Counter(addresses(12))


def test_too_many_failures_in_a_row_pause_the_send(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = Handler(perm_fail=set(addresses(12)))
    (approved / "mailer.toml").write_text(
        (approved / "mailer.toml")
        .read_text()
        .replace('name = "outbox"', 'name = "outbox"\npause_after_errors = 4'),
        encoding="utf-8",
    )
    with SMTPServer(handler) as s:
        smtp_env(monkeypatch, s.port, MAILER_SMTP_CONNECTIONS="1")
        r = cli("send", "2025-11", "--list", "practitioners", "--yes")
    assert r.exit_code == 1
    assert "4 failures in a row" in r.stderr
    counts = Counter(ledger(approved).values())
    assert counts["failed-permanent"] == 4 and counts["pending"] == 8


def test_dkim_signature_covers_the_unsubscribe_headers_and_verifies(
    cli: Any, approved: Path, server: SMTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    (tmp_path / "dkim.pem").write_bytes(pem)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import base64

    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    smtp_env(
        monkeypatch,
        server.port,
        MAILER_DKIM_SELECTOR="news",
        MAILER_DKIM_DOMAIN="example.org",
        MAILER_DKIM_KEY_FILE=str(tmp_path / "dkim.pem"),
    )
    assert cli("send", "2025-11", "--list", "practitioners", "--yes").exit_code == 0
    assert len(server.received) == 12

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"news._domainkey.example.org."
        return record

    for item in server.received:
        signature = item.message["DKIM-Signature"]
        signed = (
            re.search(r"h=([^;]+)", signature.replace("\r\n", "").replace(" ", "")).group(1).lower()
        )
        for header in (
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "list-unsubscribe",
            "list-unsubscribe-post",
        ):
            assert header in signed.split(":")
        assert dkim.verify(item.data, dnsfunc=dns)
        tampered = item.data.replace(
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: nope"
        )
        assert not dkim.verify(tampered, dnsfunc=dns)
