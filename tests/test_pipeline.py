"""Sends over SMTP, through the pipelined client, against a real server (aiosmtpd).

Every case a relay can put a sender in: PIPELINING or not, STARTTLS and implicit TLS, a
refusal at MAIL, RCPT or the end of DATA, a line dropped before the message was complete
(retried) or after it (unknown: never guessed), and a reply later than the timeout.
"""

from __future__ import annotations

import email
import email.policy
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mailer import config, urls
from mailer.operations import service
from mailer.store.database import open_db
from send_helpers import addresses, ledger, make_list, smtp_env, sql
from smtp_server import Handler, SMTPServer

SLUG = "2025-11"


@pytest.fixture
def approved(cli: Any, newsletter: Path) -> Path:
    make_list(cli, newsletter, "practitioners", addresses(12))
    assert cli("approve", SLUG, "--by", "Sam Patel").exit_code == 0
    return newsletter


def _send(cli: Any) -> Any:
    return cli("send", SLUG, "--list", "practitioners", "--yes")


def text_part(data: bytes) -> str:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    text, _html = msg.iter_parts()  # type: ignore[attr-defined]
    return str(text.get_content())


DOTS = ".starts with a dot\n..two dots\n.\nafter a lone dot\n"


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-at-a-time"])
def test_every_message_arrives_once_and_whole(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch, pipelining: bool
) -> None:
    # Lines that start with a dot right where a personal link is spliced in, and a line
    # holding one dot, which would end the message early if it were not stuffed.
    with SMTPServer(Handler(pipelining=pipelining)) as server:
        smtp_env(monkeypatch, server.port)
        settings = config.load(approved)
        with open_db(settings) as database:
            send_id = service.create(settings, SLUG, ["practitioners"], database=database)
        placeholder = f"\n{urls.UNSUBSCRIBE_PLACEHOLDER}\n"
        (text,) = sql(approved, "SELECT text FROM send WHERE id = ?", send_id)[0]
        assert placeholder in text
        dotted = text.replace(placeholder, placeholder + DOTS, 1)
        sql(approved, "UPDATE send SET text = ?", dotted)
        r = cli("send", SLUG, "--resume")
        assert r.exit_code == 0, r.output
    assert Counter(server.handler.recipients()) == Counter(addresses(12))
    assert set(ledger(approved).values()) == {"sent"}
    for item in server.received:
        body = text_part(item.data).replace("\r\n", "\n")
        # The dots come right after the personal unsubscribe link, where it was spliced in.
        before, _ = body.split(DOTS, 1)
        assert "/unsubscribe/" in before.splitlines()[-1]


def test_a_refused_message_does_not_disturb_the_one_written_ahead_of_its_reply(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = addresses(12)
    handler = Handler(
        data_reply={people[3]: "554 5.7.1 message refused", people[7]: "452 4.3.1 out of room"}
    )
    with SMTPServer(handler) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_CONNECTIONS="1")
        r = _send(cli)
        assert r.exit_code == 0, r.output
    got = Counter(server.handler.recipients())
    assert got == Counter(p for p in people if p not in (people[3], people[7]))
    status = ledger(approved)
    assert status[people[3]] == "failed-permanent"
    assert status[people[7]] == "failed-temporary"
    assert sql(approved, "SELECT attempts FROM delivery WHERE email = ?", people[7]) == [(3,)]
    # Refused for its content, not for the address: not a bounce.
    assert sql(approved, "SELECT status FROM subscriber WHERE email = ?", people[3]) == [
        ("active",)
    ]


def test_a_sender_address_the_server_refuses_pauses_the_send(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = Handler(mail_reply="553 5.7.1 sender not allowed")
    with SMTPServer(handler) as server:
        smtp_env(monkeypatch, server.port)
        r = _send(cli)
    assert r.exit_code == 1
    assert "refused the sender newsletter@example.org (553 5.7.1 sender not allowed)" in r.stderr
    assert "mailer send 2025-11 --resume" in r.stderr
    assert set(ledger(approved).values()) == {"pending"}
    assert server.received == []


def test_a_line_dropped_before_the_message_was_sent_is_retried(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = addresses(12)
    with SMTPServer(Handler(drop_at_rcpt={people[4]})) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_CONNECTIONS="1")
        r = _send(cli)
        assert r.exit_code == 0, r.output
    assert server.handler.drops == 1
    assert Counter(server.handler.recipients()) == Counter(people)
    assert set(ledger(approved).values()) == {"sent"}


def test_a_line_dropped_after_the_whole_message_is_unknown_and_never_guessed(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = addresses(12)
    # The server takes the 5th message whole, then drops the line without a reply: it may
    # or may not deliver it, so mailer must neither call it sent nor send it again.
    with SMTPServer(Handler(drop_after=4)) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_CONNECTIONS="1")
        r = _send(cli)
        assert r.exit_code == 0, r.output
        assert server.handler.drops == 1
        status = ledger(approved)
        (unknown,) = [e for e, s in status.items() if s == "unknown"]
        assert Counter(server.handler.recipients()) == Counter(p for p in people if p != unknown)
        assert "1 unknown" in r.stdout and "--resend-unknown" in r.stdout
        shown = cli("status", SLUG).stdout
        assert "unknown           1" in shown and unknown in shown
        # Sending them again is the user's call, after seeing how many.
        declined = cli("send", SLUG, "--resend-unknown", input="n\n")
        assert declined.exit_code == 1
        assert "1 copy of 2025-11 (send 1) may or may not have been delivered" in declined.stdout
        assert Counter(server.handler.recipients())[unknown] == 0
        r = cli("send", SLUG, "--resend-unknown", "--yes")
        assert r.exit_code == 0, r.output
        assert "Sent again to 1 recipient(s)" in r.stdout
    assert Counter(server.handler.recipients()) == Counter(people)
    assert set(ledger(approved).values()) == {"sent"}


def test_every_mode_that_mails_people_shows_who_and_asks_and_a_no_sends_nothing(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --list and --resend-unknown mail people nobody has said yes to yet: each shows who
    # gets what and how many, then asks; a no, or no answer at all (a script without
    # --yes), sends nothing and exits 1.
    def declined(*mode: str) -> list[Any]:
        runs = [cli("send", SLUG, *mode, input=answer) for answer in ("n\n", "")]
        assert [r.exit_code for r in runs] == [1, 1]
        assert runs[0].stdout.endswith(" now? [y/N]: n\nNothing was sent.\n")
        return runs

    with SMTPServer(Handler(drop_after=4)) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_CONNECTIONS="1")
        no, _ = declined("--list", "practitioners")
        assert "To:         practitioners: 12 people" in no.stdout
        assert "Send to 12 people now?" in no.stdout
        assert server.received == []
        assert sql(approved, "SELECT COUNT(*) FROM send") == [(0,)]

        assert _send(cli).exit_code == 0  # the line drops once: one copy is unknown
        (unknown,) = [e for e, s in ledger(approved).items() if s == "unknown"]
        no, _ = declined("--resend-unknown")
        assert "1 copy of 2025-11 (send 1) may or may not have been delivered" in no.stdout
        assert "Send these 1 again now?" in no.stdout
        assert Counter(server.handler.recipients())[unknown] == 0
        assert ledger(approved)[unknown] == "unknown"

        # A dry run shows the same and sends nothing, even with --yes; the modes with
        # nothing to show refuse it rather than send.
        dry = cli("send", SLUG, "--resend-unknown", "--dry-run", "--yes")
        assert dry.exit_code == 0, dry.output
        assert "1 copy of 2025-11 (send 1) may or may not" in dry.stdout
        assert dry.stdout.endswith("Dry run: nothing was sent.\n")
        for mode in (("--resume",), ("--retry-failed",), ("--to", "me@example.org")):
            refused = cli("send", SLUG, *mode, "--dry-run")
            assert refused.exit_code == 1
            assert "--dry-run works with --list or --resend-unknown" in refused.output
            assert "Traceback" not in refused.output
        assert Counter(server.handler.recipients())[unknown] == 0
        assert "me@example.org" not in server.handler.recipients()
        assert ledger(approved)[unknown] == "unknown"


def test_a_reply_later_than_the_timeout_is_unknown_and_sent_once(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = addresses(12)
    # The server takes the message and answers only after the client stopped waiting.
    with SMTPServer(Handler(late={people[2]})) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_CONNECTIONS="2", MAILER_SMTP_TIMEOUT="1")
        r = _send(cli)
        assert r.exit_code == 0, r.output
    assert Counter(server.handler.recipients()) == Counter(people)  # each once: no retry
    status = ledger(approved)
    assert status[people[2]] == "unknown"
    assert {s for e, s in status.items() if e != people[2]} == {"sent"}
    (error,) = sql(approved, "SELECT last_error FROM delivery WHERE email = ?", people[2])[0]
    assert "may have been accepted" in error


def test_implicit_tls_is_verified(
    cli: Any, approved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SMTPServer(tls_dir=tmp_path, implicit_tls=True) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_SECURITY="tls")
        r = _send(cli)  # the system's CAs do not know the test's authority
        assert r.exit_code == 1
        assert "has a certificate that cannot be trusted" in r.stderr
        assert server.received == []
        monkeypatch.setenv("MAILER_SMTP_CA_FILE", str(server.ca_file))
        r = cli("send", SLUG, "--resume")
        assert r.exit_code == 0, r.output
    assert Counter(server.handler.recipients()) == Counter(addresses(12))


@pytest.mark.parametrize("smtputf8", [True, False], ids=["smtputf8", "ascii-only"])
def test_an_international_domain_is_delivered_in_ascii_to_a_server_without_smtputf8(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch, smtputf8: bool
) -> None:
    make_list(cli, newsletter, "practitioners", [*addresses(2), "jo@xn--mnchen-3ya.de"])
    assert cli("approve", SLUG, "--by", "Sam Patel").exit_code == 0
    with SMTPServer(smtputf8=smtputf8) as server:
        smtp_env(monkeypatch, server.port)
        r = _send(cli)
        assert r.exit_code == 0, r.output
    assert set(ledger(newsletter).values()) == {"sent"}
    (item,) = [i for i in server.received if i.rcpt_tos[0].startswith("jo@")]
    msg = item.message
    if smtputf8:
        assert item.rcpt_tos == ["jo@münchen.de"]
        assert "<jo@münchen.de>".encode() in item.data.split(b"\r\n\r\n")[0]
    else:
        assert item.rcpt_tos == ["jo@xn--mnchen-3ya.de"]
        assert msg["To"].addresses[0].addr_spec == "jo@xn--mnchen-3ya.de"
        assert item.data.isascii()
