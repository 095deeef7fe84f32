"""Per-issue settings: an issue may say it comes from another organisation, sender, footer
or brand; the values are checked like mailer.toml's and the approval covers them."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import pytest

from conftest import draft_dir
from send_helpers import addresses, make_list

ISSUE = "issues/2021-12/issue.yaml"
CUMBRIA = "Cumbria Safeguarding Children Partnership"
CUMBERLAND = "Cumberland Safeguarding Children Partnership"


def sent_from(root: Path, slug: str) -> str:
    first = sorted((root / "outbox" / slug).glob("*.eml"))[0]
    message = email.message_from_bytes(first.read_bytes(), policy=email.policy.default)
    return str(message["From"])


def test_the_2021_example_says_cumbria_in_masthead_sender_and_footer(
    cli: Any, newsletter: Path
) -> None:
    assert cli("build", "2021-12", "2025-11").exit_code == 0
    old = (draft_dir(newsletter, "2021-12") / "email.html").read_text(encoding="utf-8")
    text = (draft_dir(newsletter, "2021-12") / "email.txt").read_text(encoding="utf-8")
    web = (draft_dir(newsletter, "2021-12") / "index.html").read_text(encoding="utf-8")
    for part in (old, text, web):
        assert CUMBRIA in part
        assert CUMBERLAND not in part
        assert "Cumbria House, 117 Botchergate" in " ".join(part.split())
    assert "families in Cumbria and joined" in text
    # The newsletter's own settings still make every other issue.
    new = (draft_dir(newsletter, "2025-11") / "email.html").read_text(encoding="utf-8")
    assert CUMBERLAND in new and CUMBRIA not in new

    make_list(cli, newsletter, "practitioners", addresses(2))
    for slug in ("2021-12", "2025-11"):
        assert cli("approve", slug, "--by", "Sam Patel").exit_code == 0
        assert cli("send", slug, "--list", "practitioners", "--yes").exit_code == 0
    assert sent_from(newsletter, "2021-12") == f"{CUMBRIA} <newsletter@example.org>"
    assert sent_from(newsletter, "2025-11") == f"{CUMBERLAND} <newsletter@example.org>"
    r = cli("send", "2021-12", "--to", "me@example.org")
    assert r.exit_code == 0, r.output
    assert sent_from(newsletter, "2021-12/proofs") == f"{CUMBRIA} <newsletter@example.org>"


def test_the_approval_covers_the_issue_settings(cli: Any, newsletter: Path) -> None:
    make_list(cli, newsletter, "practitioners", addresses(1))
    assert cli("approve", "2021-12", "--by", "Sam Patel").exit_code == 0
    path = newsletter / ISSUE
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace(f"    from_name: {CUMBRIA}", "    from_name: Someone Else"), encoding="utf-8"
    )
    assert cli("build", "2021-12").exit_code == 0
    r = cli("send", "2021-12", "--list", "practitioners", "--yes")
    assert r.exit_code == 1
    assert "From changed (now 'Someone Else <newsletter@example.org>')" in r.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('  organisation: "Two\\nlines"\n', "settings.organisation: must be one line"),
        ("  sender:\n    reply_to: not an address\n", "is not one email address"),
        ('  brand:\n    primary: "purple"\n', "'purple' is not a colour like #5b2a86"),
        ("  base_url: https://elsewhere.example.org\n", "settings.base_url: unknown key"),
        ("  sender:\n    from_address: a@b.org\n", "settings.sender.from_address: unknown key"),
    ],
)
def test_issue_settings_are_checked_like_mailer_toml(
    cli: Any, newsletter: Path, setting: str, message: str
) -> None:
    path = newsletter / ISSUE
    text = path.read_text(encoding="utf-8")
    start, end = text.index("settings:\n"), text.index("intro:")
    path.write_text(text[:start] + "settings:\n" + setting + text[end:], encoding="utf-8")
    r = cli("build", "2021-12")
    assert r.exit_code == 1
    assert message in r.stderr, r.stderr
    assert r.stderr.startswith(f"{ISSUE}:")
