"""mailer.bounces.classify: per recipient, from the report's own fields and words.

Each case is a way real reports were misread before: one code guessed per message, a
quoted header's version number taken for a status, Status preferred to the remote's own
words, a sender rejection counted against the recipient, a warning counted as a failure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mailer.bounces import classify


def dsn(*blocks: str, text: str = "Delivery failed.", quoted: str = "") -> bytes:
    fields = "\n".join(blocks)
    extra = f"--b\nContent-Type: text/rfc822-headers\n\n{quoted}\n" if quoted else ""
    return f"""\
From: MAILER-DAEMON@mx.example.net
To: bounces+1.abc@bounces.example.org
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

{text}

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

{fields}
{extra}--b--
""".encode()


def block(rcpt: str, status: str, diagnostic: str = "", action: str = "failed", **more: str) -> str:
    lines = [f"Final-Recipient: rfc822; {rcpt}", f"Action: {action}", f"Status: {status}"]
    if diagnostic:
        lines.append(f"Diagnostic-Code: smtp; {diagnostic}")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in more.items()]
    return "\n".join(lines) + "\n"


def one(raw: bytes) -> tuple[str, str, str]:
    [finding] = classify(raw)
    return finding.address, str(finding.category), finding.status


def test_each_recipient_gets_its_own_reason() -> None:
    found = classify(
        dsn(
            block("gone@example.org", "5.1.1", "550 5.1.1 <gone@example.org>: User unknown"),
            block("full@example.org", "5.2.2", "552 5.2.2 Mailbox full"),
            block("spam@example.org", "5.7.1", "554 5.7.1 Message rejected as spam"),
        )
    )
    assert [(f.address, str(f.category), f.status) for f in found] == [
        ("gone@example.org", "hard", "5.1.1"),
        ("full@example.org", "full", "5.2.2"),
        ("spam@example.org", "policy", "5.7.1"),
    ]


def test_the_remote_words_decide_over_status() -> None:
    assert one(dsn(block("a@example.org", "5.1.1", "550 5.7.1 IP blacklisted by Spamhaus"))) == (
        "a@example.org",
        "policy",
        "5.7.1",
    )
    assert one(dsn(block("a@example.org", "5.1.1", "552 5.2.2 Over quota")))[1] == "full"
    # A misused 5.3.0 does not hide "No such user".
    assert one(dsn(block("a@example.org", "5.3.0", "553 5.3.0 No such user here")))[1] == "hard"


def test_a_wrapper_code_gives_way_to_the_reason_inside_it() -> None:
    ses = "550 5.1.0 Unknown address error 550-'5.7.1 Service unavailable; blocked using zen'"
    assert one(dsn(block("a@example.org", "5.1.0", ses)))[1] == "policy"


def test_a_rejection_of_our_sender_is_never_about_the_recipient() -> None:
    for diagnostic in (
        "553 5.1.8 <news@example.org>... Domain of sender address does not exist",
        "550 5.1.7 Invalid sender",
        "550 5.7.26 Unauthenticated email is not accepted: DMARC policy",
        "550 Sender address rejected: SPF check failed",
        "554 5.7.1 Relay access denied",
    ):
        assert one(dsn(block("a@example.org", "5.0.0", diagnostic)))[1] == "policy", diagnostic


def test_quoted_headers_never_give_the_status() -> None:
    # A permanent failure with no code of its own, quoting a list's version number.
    raw = dsn(
        block("a@example.org", "5.0.0", "550 Requested action not taken: mailbox unavailable"),
        quoted="X-Mailman-Version: 2.0.13\nSubject: 2.1.5 release notes",
    )
    _address, category, status = one(raw)
    assert (category, status) == ("hard", "5.0.0")


def test_a_delay_warning_is_never_a_failure() -> None:
    raw = dsn(
        block("a@example.org", "4.4.7", "451 4.4.7 still trying", action="delayed"),
        text="Delivery to a@example.org is delayed. I will keep trying for 5 days.",
    )
    assert one(raw)[1] == "delayed"


def test_an_rfc822_original_recipient_names_the_person_and_x400_is_ignored() -> None:
    aliased = block(
        "mailbox.7@internal.example.org",
        "5.1.1",
        "550 5.1.1 User unknown",
        Original_Recipient="rfc822; jo@example.org",
    )
    assert one(dsn(aliased))[0] == "jo@example.org"
    x400 = block(
        "jo@example.org",
        "5.1.1",
        "550 5.1.1 User unknown",
        Original_Recipient="x400; c=GB;a= ;p=Council;o=Exchange;s=Bloggs",
    )
    assert one(dsn(x400))[0] == "jo@example.org"


def test_words_in_the_languages_servers_write() -> None:
    cases = {
        "550 Benutzer unbekannt": "hard",
        "550 Utilisateur inconnu": "hard",
        "550 El usuario no existe": "hard",
        "550 Utente sconosciuto": "hard",
        "550 Gebruiker onbekend": "hard",
        "550 Usuário inexistente": "hard",
        "550 宛先のユーザは存在しません": "hard",
        "550 Пользователь не найден": "hard",
        "550 用户不存在": "hard",
        "552 Postfach voll": "full",
        "552 Boîte aux lettres pleine": "full",
        "550 The account has been disabled or discontinued": "hard",
        "550 5.1.1 RESOLVER.ADR.RecipientNotFound; Unknown Recipient": "hard",
        "550 Mailbox inactive": "hard",
        "554 Message rejected: our reputation service lists your IP": "policy",
        "550 Rejected by DMARC policy": "policy",
    }
    for diagnostic, category in cases.items():
        got = one(dsn(block("a@example.org", "5.0.0", diagnostic)))[1]
        assert got == category, (diagnostic, got)


def test_a_daemon_bounce_marked_auto_replied_is_a_bounce() -> None:
    raw = b"""\
From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: news@example.org
Subject: Mail delivery failed: returning message to sender
Auto-Submitted: auto-replied
X-Failed-Recipients: jo@example.org

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  jo@example.org
    SMTP error from remote mail server after RCPT TO:<jo@example.org>:
    550 5.1.1 User unknown
"""
    assert one(raw) == ("jo@example.org", "hard", "5.1.1")


def test_an_out_of_office_is_an_auto_reply() -> None:
    raw = b"""\
From: Jo Bloggs <jo@example.org>
To: news@example.org
Subject: Automatic reply: Newsletter
Auto-Submitted: auto-replied

I am out of the office until Monday.
"""
    assert one(raw)[1] == "auto-reply"


def test_nothing_is_taken_from_a_notice_that_is_not_a_report() -> None:
    raw = b"From: someone@example.org\r\nSubject: hello\r\n\r\nThanks for the newsletter!\r\n"
    assert classify(raw) == []


def test_explain_prints_what_mailer_reads_and_would_do(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "dsn.eml"
    path.write_bytes(
        dsn(block("jo@example.org", "5.1.1", "550 5.1.1 <jo@example.org>: User unknown"))
    )
    r = cli("bounces", "explain", str(path))
    assert r.exit_code == 0, r.output
    assert "  jo@example.org: hard 5.1.1" in r.stdout
    assert "Authenticated by: nothing mailer signed" in r.stdout
    assert "store it as unverified; it changes nobody" in r.stdout
    data = json.loads(cli("bounces", "explain", str(path), "--json").stdout)
    assert data["findings"][0]["category"] == "hard"
    assert data["authenticated_by"] == ""
    poison = tmp_path / "poison.eml"
    poison.write_bytes(b"Content-Type: message/rfc822\n\n" * 100 + b"x")
    r = cli("bounces", "explain", str(poison))
    assert r.exit_code == 0 and r.stdout.startswith("Unreadable: nested deeper than 16 parts")
