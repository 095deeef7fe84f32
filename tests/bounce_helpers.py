"""Helpers for the bounce tests: a newsletter that has sent an issue, and returned mail for it.

Messages in tests/data/bounces/ carry placeholders (see its README) that :func:`render`
fills in for one real copy of a real send, read back from the ledger.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import REPO
from made_once import made_once
from mailer import config, tokens
from mailer.sending import verp
from send_helpers import make_list, sql

CORPUS = REPO / "tests" / "data" / "bounces"
BOUNCE_DOMAIN = "bounces.example.org"

# (corpus file, whose copy it is about, kind recorded, status code, subscriber status after,
#  membership of the list after, whether the message itself names the person)
CASES = [
    ("exchange-5.1.1.eml", 0, "hard", "5.1.1", "bounced", "subscribed", True),
    ("m365-5.1.10.eml", 1, "hard", "5.1.10", "bounced", "subscribed", True),
    ("gmail-5.1.1.eml", 2, "hard", "5.1.1", "bounced", "subscribed", True),
    ("ses-5.1.1.eml", 3, "hard", "5.1.1", "bounced", "subscribed", True),
    ("exim-text-user-unknown.eml", 4, "hard", "5.1.1", "bounced", "subscribed", True),
    ("postfix-4.4.1-failed.eml", 5, "soft", "4.4.1", "active", "subscribed", True),
    ("exim-dsn-5.2.2-mailbox-full.eml", 6, "full", "5.2.2", "active", "subscribed", True),
    ("postfix-delayed.eml", 7, "delayed", "4.4.1", "active", "subscribed", True),
    ("m365-5.7.1-policy.eml", 8, "policy", "5.7.1", "active", "subscribed", True),
    ("arf-yahoo-abuse.eml", 9, "complaint", "", "complained", "unsubscribed", True),
    ("arf-jmrp-redacted.eml", 10, "complaint", "", "complained", "unsubscribed", True),
    ("unsubscribe-mailto-subject.eml", 11, "unsubscribe", "", "active", "unsubscribed", True),
    ("unsubscribe-mailto-body.eml", 12, "unsubscribe", "", "active", "unsubscribed", True),
    ("ooo-exchange-automatic-reply.eml", 13, "auto-reply", "", "active", "subscribed", True),
    ("ooo-plain-out-of-office.eml", 14, "auto-reply", "", "active", "subscribed", False),
    ("ooo-gmail-vacation.eml", 15, "auto-reply", "", "active", "subscribed", True),
]
JUNK = ["junk-spam.eml", "junk-not-a-message.eml"]
# A report that names a person but no copy mailer signed: kept unverified, acted on never.
FORGED = ["junk-forged-verp.eml"]


def enable_bounces(root: Path, extra: str = "") -> None:
    """Give the newsletter a bounce domain (VERP), and optionally a mailbox."""
    with (root / "mailer.toml").open("a", encoding="utf-8") as f:
        f.write(f'\n[bounces]\ndomain = "{BOUNCE_DOMAIN}"\n{extra}')


def add_issue(root: Path, slug: str, date: str) -> None:
    """Another issue, copied from 2025-11, so a test can send several in a row."""
    shutil.copytree(root / "issues" / "2025-11", root / "issues" / slug)
    path = root / "issues" / slug / "issue.yaml"
    text = path.read_text(encoding="utf-8")
    text = text.replace("date: 2025-10-30", f"date: {date}", 1)
    text = text.replace("November 2025", f"issue {slug}", 1)
    path.write_text(text, encoding="utf-8")


def send_issue(cli: Any, slug: str, list_slug: str = "practitioners") -> None:
    r = cli("build", slug)
    assert r.exit_code == 0, r.output
    r = cli("approve", slug, "--by", "Sam Patel")
    assert r.exit_code == 0, r.output
    r = cli("send", slug, "--list", list_slug, "--yes")
    assert r.exit_code == 0, r.output


def setup_sent(cli: Any, root: Path, emails: list[str], extra: str = "") -> None:
    """A list of ``emails`` that has been sent issue 2025-11 through the outbox (with the
    real commands, run once per process for each starting point, then copied: see
    made_once)."""
    enable_bounces(root, extra)

    def send(folder: Path) -> None:
        make_list(cli, folder, "practitioners", emails)
        send_issue(cli, "2025-11")

    made_once(root, f"2025-11 sent to {emails}", send)


@dataclass(frozen=True)
class Copy:
    delivery_id: int
    send_id: int
    subscriber_id: int
    email: str
    message_id: str


def copies(root: Path, slug: str = "2025-11") -> dict[str, Copy]:
    """The copies of the latest send of ``slug``, by address, read from the ledger."""
    rows = sql(
        root,
        "SELECT d.id, d.send_id, d.subscriber_id, d.email, d.message_id FROM delivery d "
        "WHERE d.send_id = (SELECT MAX(id) FROM send WHERE slug = ?)",
        slug,
    )
    return {r[3]: Copy(*r) for r in rows}


def render(name: str, copy: Copy, root: Path) -> bytes:
    """A corpus message about ``copy``, as the remote system would have sent it."""
    settings = config.load(root)
    key = settings.require_secret_key()
    values = {
        "%VERP%": verp.envelope_sender(settings, copy.delivery_id),
        "%RCPT%": copy.email,
        "%MSGID%": copy.message_id,
        "%TOKEN%": tokens.make(key, "unsubscribe", copy.subscriber_id, copy.send_id),
        "%FROM%": settings.sender.from_address,
    }
    data = (CORPUS / name).read_bytes()
    for placeholder, value in values.items():
        data = data.replace(placeholder.encode(), value.encode())
    # Each real message has its own Message-ID: make the corpus message's unique per copy.
    head, sep, body = data.partition(b"\n\n")
    head = re.sub(
        rb"(?im)^(message-id:\s*<)([^>]+)>", rb"\g<1>c%d.\g<2>>" % copy.delivery_id, head, count=1
    )
    data = head + sep + body
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def subscriber_status(root: Path, email: str) -> str:
    return str(sql(root, "SELECT status FROM subscriber WHERE email = ?", email)[0][0])


def membership(root: Path, email: str, list_slug: str = "practitioners") -> str:
    rows = sql(
        root,
        "SELECT m.status FROM membership m JOIN subscriber s ON s.id = m.subscriber_id "
        "JOIN mailing_list l ON l.id = m.list_id WHERE s.email = ? AND l.slug = ?",
        email,
        list_slug,
    )
    return str(rows[0][0])


def events(root: Path) -> list[tuple[Any, ...]]:
    """(kind, subscriber email, status, action) of every bounce event, in order."""
    return sql(
        root,
        "SELECT e.kind, s.email, e.status, e.action FROM bounce_event e "
        "LEFT JOIN subscriber s ON s.id = e.subscriber_id ORDER BY e.id",
    )
