"""Forged returned mail: no report a stranger can make changes anybody.

Each forged kind names a real subscriber and goes through `mailer bounces process` as
Postfix's pipe would run it; it must change nobody and be listed as unverified. A genuine
report, tied to its copy by the VERP address's MAC, still acts.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bounce_helpers import BOUNCE_DOMAIN, copies, events, setup_sent, subscriber_status
from fake_clock import FakeClock
from mailer import config
from mailer.sending import verp
from mailer.store.database import open_db
from mailer.store.models import CONSENT_SOURCE_LENGTH
from mailer.store.people import consent_with_reactivation
from mailer.subscribers.posting import Postman
from mailer.web import create_app
from send_helpers import addresses, sql
from web_helpers import message_to, messages, newsletter_with_a_send

PEOPLE = addresses(20)
VICTIM = PEOPLE[0]


@pytest.fixture
def sent(cli: Any, newsletter: Path) -> Path:
    setup_sent(cli, newsletter, PEOPLE)
    return newsletter


def dsn(final: str, *, to: str = f"bounces@{BOUNCE_DOMAIN}", end: bool = True) -> bytes:
    """A delivery status notification any stranger could write."""
    text = f"""\
From: MAILER-DAEMON@mx.attacker.example
To: {to}
Subject: Undelivered Mail Returned to Sender
Message-ID: <forged.{abs(hash((final, to, end)))}@mx.attacker.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

<{final}>: host mx.school.example said: 550 5.1.1 User unknown

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.attacker.example

Final-Recipient: rfc822; {final}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 User unknown
"""
    if end:
        text += "\n--b--\n"
    return text.replace("\n", "\r\n").encode()


def quoting(message_id: str, final: str) -> bytes:
    """A DSN that quotes a Message-ID in the shape mailer's have, with a made-up MAC."""
    return dsn(final).replace(
        b"--b--",
        b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: newsletter@example.org\r\n"
        b"To: " + final.encode() + b"\r\nMessage-ID: " + message_id.encode() + b"\r\n\r\n--b--",
    )


def arf(rcpt: str) -> bytes:
    return f"""\
From: staff@hotmail.example
To: bounces@{BOUNCE_DOMAIN}
Subject: complaint about message from 192.0.2.10
Message-ID: <arf.{rcpt}@hotmail.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="arf"

--arf
Content-Type: text/plain

This is an email abuse report.

--arf
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: forged
Version: 1
Original-Rcpt-To: {rcpt}

--arf--
""".replace("\n", "\r\n").encode()


def exim_text(final: str) -> bytes:
    return f"""\
From: Mail Delivery System <Mailer-Daemon@mx.attacker.example>
To: bounces@{BOUNCE_DOMAIN}
Subject: Mail delivery failed: returning message to sender
Message-ID: <exim.{final}@mx.attacker.example>
X-Failed-Recipients: {final}
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {final}
    SMTP error from remote mail server after RCPT TO:<{final}>:
    550 5.1.1 <{final}>: Recipient address rejected: User unknown
""".replace("\n", "\r\n").encode()


def process(cli: Any, root: Path, raw: bytes, name: str, *options: str) -> Any:
    path = root / name
    path.write_bytes(raw)
    r = cli("bounces", "process", str(path), *options)
    assert r.exit_code == 0, r.output
    return r


def nobody_changed(root: Path) -> None:
    assert sql(root, "SELECT COUNT(*) FROM subscriber WHERE status != 'active'") == [(0,)]
    assert sql(root, "SELECT COUNT(*) FROM membership WHERE status != 'subscribed'") == [(0,)]
    assert sql(root, "SELECT COUNT(*) FROM bounce_event WHERE subscriber_id IS NOT NULL") == [(0,)]


def listed_unverified(cli: Any, address: str) -> str:
    r = cli("bounces", "list", "--unverified", "--people")
    assert r.exit_code == 0, r.output
    assert "UNVERIFIED" in r.stdout and address in r.stdout, r.stdout
    masked = cli("bounces", "list", "--unverified").stdout
    assert address not in masked and "•••" in masked
    return str(r.stdout)


def forged(root: Path, kind: str) -> bytes:
    copy = copies(root)[VICTIM]
    settings = config.load(root)
    other = copies(root)[PEOPLE[1]]
    if kind == "no VERP":
        return dsn(VICTIM)
    if kind == "VERP with a wrong MAC":
        return dsn(VICTIM, to=f"bounces+{copy.delivery_id}.aaaaaaaaaaaaa@{BOUNCE_DOMAIN}")
    if kind == "another row's VERP":
        return dsn(VICTIM, to=verp.envelope_sender(settings, other.delivery_id))
    if kind == "a made-up quoted Message-ID":
        return quoting(f"<{copy.send_id}.{copy.delivery_id}.abcdefghij@example.org>", VICTIM)
    if kind == "an ARF complaint":
        return arf(VICTIM)
    if kind == "an Exim-style text bounce":
        return exim_text(VICTIM)
    if kind == "a DSN without its closing boundary":
        return dsn(VICTIM, end=False)
    raise AssertionError(kind)


KINDS = [
    "no VERP",
    "VERP with a wrong MAC",
    "another row's VERP",
    "a made-up quoted Message-ID",
    "an ARF complaint",
    "an Exim-style text bounce",
    "a DSN without its closing boundary",
]


@pytest.mark.parametrize("kind", KINDS)
def test_a_forged_report_changes_nobody_and_is_listed_unverified(
    cli: Any, sent: Path, kind: str
) -> None:
    r = process(cli, sent, forged(sent, kind), "forged.eml")
    assert "unverified" in r.stdout and "changed nobody" in r.stdout, r.stdout
    nobody_changed(sent)
    listed_unverified(cli, VICTIM)
    # Also when the pipe passes a recipient that is not a VERP address of ours.
    process(
        cli,
        sent,
        forged(sent, kind).replace(b"Message-ID: <", b"Message-ID: <2"),
        "f2.eml",
        "--recipient",
        f"bounces@{BOUNCE_DOMAIN}",
    )
    nobody_changed(sent)


def test_another_rows_verp_changes_neither_person(cli: Any, sent: Path) -> None:
    raw = forged(sent, "another row's VERP")
    settings = config.load(sent)
    other = verp.envelope_sender(settings, copies(sent)[PEOPLE[1]].delivery_id)
    process(cli, sent, raw, "other.eml", "--recipient", other)
    assert subscriber_status(sent, VICTIM) == subscriber_status(sent, PEOPLE[1]) == "active"
    nobody_changed(sent)


def test_a_dsn_naming_500_people_changes_nobody_quickly(cli: Any, sent: Path) -> None:
    blocks = "".join(
        f"Final-Recipient: rfc822; {address}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        for address in PEOPLE + [f"person{i}@example.net" for i in range(480)]
    )
    raw = dsn(VICTIM).replace(b"Final-Recipient", blocks.encode() + b"Final-Recipient", 1)
    assert raw.count(b"Final-Recipient") == 501
    started = time.perf_counter()
    r = process(cli, sent, raw, "many.eml")
    elapsed = time.perf_counter() - started
    assert "changed nobody" in r.stdout
    nobody_changed(sent)
    # At most 50 recipients of one message are even read; all are unverified.
    assert sql(
        sent, "SELECT COUNT(*), SUM(CASE WHEN verified THEN 1 ELSE 0 END) FROM bounce_event"
    ) == [(50, 0)]
    print(f"500-recipient forged DSN processed in {elapsed:.2f} s")


def test_a_genuine_verp_bounce_still_suppresses_its_person(cli: Any, sent: Path) -> None:
    copy = copies(sent)[VICTIM]
    address = verp.envelope_sender(config.load(sent), copy.delivery_id)
    r = process(cli, sent, dsn(VICTIM, to=address), "real.eml", "--recipient", address)
    assert r.stdout.startswith("hard: subscriber"), r.stdout
    assert subscriber_status(sent, VICTIM) == "bounced"
    assert events(sent) == [("hard", VICTIM, "5.1.1", "marked bounced")]
    assert sql(sent, "SELECT COUNT(*) FROM subscriber WHERE status != 'active'") == [(1,)]


def test_a_genuine_report_naming_others_changes_only_its_copy(cli: Any, sent: Path) -> None:
    copy = copies(sent)[VICTIM]
    address = verp.envelope_sender(config.load(sent), copy.delivery_id)
    raw = dsn(VICTIM, to=address).replace(
        b"Final-Recipient",
        f"Final-Recipient: rfc822; {PEOPLE[2]}\r\nAction: failed\r\n"
        "Status: 5.1.1\r\n\r\nFinal-Recipient".encode(),
        1,
    )
    process(cli, sent, raw, "two.eml", "--recipient", address)
    assert subscriber_status(sent, VICTIM) == "bounced"
    assert subscriber_status(sent, PEOPLE[2]) == "active"
    listed_unverified(cli, PEOPLE[2])


def test_applying_an_unverified_report_by_hand_and_undoing_it(cli: Any, sent: Path) -> None:
    process(cli, sent, arf(VICTIM), "arf.eml")
    nobody_changed(sent)
    [(event_id,)] = sql(sent, "SELECT id FROM bounce_event WHERE NOT verified")
    r = cli("bounces", "apply", str(event_id))
    assert r.exit_code == 0, r.output
    assert (
        r.stdout
        == f"Applied complaint report {event_id}: unsubscribed from everything: complaint.\n"
    )
    assert subscriber_status(sent, VICTIM) == "complained"
    again = cli("bounces", "apply", str(event_id))
    assert again.exit_code == 1
    assert again.stderr == (
        f"Error: event {event_id} is not an unverified report: nothing to apply\n"
    )
    r = cli("subscribers", "reactivate", VICTIM, "--reason", "the complaint was forged")
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{VICTIM} is active again (was complained); back on practitioners.\n"
    assert subscriber_status(sent, VICTIM) == "active"
    shown = cli("subscribers", "show", VICTIM).stdout
    assert "reactivated (send None, from mailer subscribers reactivate): active again" in shown
    held = cli("subscribers", "show", VICTIM, "--json").stdout
    assert '"reason": "the complaint was forged"' in held
    # The consent evidence of the list they are back on says why, after its own source.
    consent = re.search(r"lawful basis \S+, source '([^']*)'", shown)
    assert consent is not None
    assert re.fullmatch(
        r".+; reactivated on \d{4}-\d\d-\d\d \(was complained\): the complaint was forged",
        consent.group(1),
    ), consent.group(1)
    assert "reactivated on" in json.loads(held)["lists"][0]["consent"]["source"]
    # Nobody who unsubscribed comes back this way, and a reason is required.
    assert cli("subscribers", "reactivate", PEOPLE[3], "--reason", "x").exit_code == 1
    missing = cli("subscribers", "reactivate", VICTIM)
    assert missing.exit_code != 0 and "Traceback" not in missing.output


def test_a_forged_complaint_never_blocks_a_later_sign_up(cli: Any, newsletter: Path) -> None:
    newsletter_with_a_send(cli, newsletter)
    victim, stranger = "amira@example.org", "dana@example.org"
    for rcpt in (victim, stranger):
        process(cli, newsletter, arf(rcpt), f"arf-{rcpt}.eml")
    assert sql(newsletter, "SELECT status FROM subscriber WHERE email = ?", victim) == [("active",)]
    settings = config.load(newsletter)
    now = [1_800_000_000.0]
    with TestClient(create_app(settings, clock=lambda: now[0])) as client:
        for rcpt in (victim, stranger):
            form = {
                "email": rcpt,
                "name": "X",
                "organisation": "",
                "lists": "schools",
                "consent": "yes",
            }
            page = client.post("/subscribe", data=form, headers={"Sec-Fetch-Site": "same-origin"})
            assert page.status_code == 200 and "Check your email" in page.text
    with open_db(settings) as db:
        Postman(settings, db, clock=FakeClock(now[0])).deliver_due()
    confirmations = [m for m in messages(newsletter, "_web") if "Confirm" in str(m["Subject"])]
    assert len(confirmations) == 2
    assert message_to(newsletter, stranger, "_web")["Subject"].startswith("Confirm")


def test_the_send_report_counts_what_changed_nobody(cli: Any, sent: Path) -> None:
    process(cli, sent, arf(VICTIM), "arf.eml")
    poison = sent / "poison.eml"
    poison.write_bytes(b"Content-Type: message/rfc822\r\n\r\n" * 100 + b"x")
    r = cli("bounces", "process", str(poison))
    assert r.exit_code == 0 and r.stdout.startswith("Quarantined (nested deeper than 16 parts)")
    report = cli("report", "2025-11")
    assert report.exit_code == 0, report.output
    assert "Unverified: 1 report(s) since the send named no copy mailer signed" in report.stdout
    assert "Quarantined: 1 message(s) since the send could not be read" in report.stdout
    (wrote,) = [line for line in report.stdout.splitlines() if line.startswith("Wrote ")]
    html = (sent / wrote.removeprefix("Wrote ")).read_text(encoding="utf-8")
    assert "<strong>Unverified:</strong> 1 returned message since the send" in html


def test_erasure_blanks_the_unverified_reports_that_name_the_person(cli: Any, sent: Path) -> None:
    process(cli, sent, exim_text(VICTIM), "exim.eml")
    assert sql(sent, "SELECT address FROM bounce_event") == [(VICTIM,)]
    assert VICTIM in sql(sent, "SELECT reason FROM bounce_event")[0][0]
    assert cli("subscribers", "erase", VICTIM, "--yes").exit_code == 0
    assert sql(sent, "SELECT kind, address, reason FROM bounce_event") == [("hard", "", "")]


def test_reactivation_notes_keep_the_original_consent_source_within_its_length() -> None:
    note = "reactivated on 2026-12-07 (was bounced): IT says the mailbox exists"
    once = consent_with_reactivation("import members.csv", note)
    assert once == f"import members.csv; {note}"
    many = once
    for day in range(10, 31):
        many = consent_with_reactivation(many, note.replace("07", str(day)))
    assert len(many) <= CONSENT_SOURCE_LENGTH
    assert many.startswith("import members.csv; reactivated on 2026-12-")
    assert many.endswith("2026-12-30 (was bounced): IT says the mailbox exists")
    longest = consent_with_reactivation("x" * CONSENT_SOURCE_LENGTH, note)
    assert len(longest) <= CONSENT_SOURCE_LENGTH and longest.endswith(note)
