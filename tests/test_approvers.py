"""Approval by the approvers themselves, end to end: `mailer approve --request` mails each
approver through a real SMTP server (aiosmtpd), the approver opens the link on a real
`mailer serve` in Debian's Chromium (axe-core checks the page) and decides there, and
`mailer send` goes out only with an approval of the current content by one of them."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from conftest import Result
from mailer import config
from mailer.errors import ConfigError
from mailer.operations import signoff
from mailer.store.database import open_db
from send_helpers import smtp_env
from smtp_server import SMTPServer
from subscriber_helpers import ok
from test_edit import accessible
from web_helpers import free_port, start_server, stop_server

ISSUE = "2025-11"
CHAIR, MANAGER, COMMS = "chair@example.org", "manager@example.org", "comms@example.org"
READERS = ["amira@example.org", "ben@example.org"]
EIGHT_DAYS = str(8 * 24 * 3600)
# What a browser sends with a form posted from the site's own page.
SAME_SITE = {"Sec-Fetch-Site": "same-origin"}


@dataclass
class Setup:
    root: Path
    url: str
    smtp: SMTPServer
    env: dict[str, str]
    cli: Any

    def mail_to(self, address: str) -> list[EmailMessage]:
        return [r.message for r in self.smtp.received if address in r.rcpt_tos]

    def link_for(self, address: str) -> str:
        """The approval link in the latest request mailed to ``address``."""
        message = self.mail_to(address)[-1]
        part = message.get_body(("plain",))
        assert part is not None
        (link,) = re.findall(r"https?://\S+/approve/\S+", part.get_content())
        return str(link)


@pytest.fixture
def setup(newsletter: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    toml = (newsletter / "mailer.toml").read_text(encoding="utf-8")
    toml = toml.replace('base_url = "https://news.example.org"', f'base_url = "{url}"')
    toml += f'\n[approval]\napprovers = ["{CHAIR}", "{MANAGER}"]\nnotify = "{COMMS}"\n'
    (newsletter / "mailer.toml").write_text(toml, encoding="utf-8")
    with SMTPServer() as smtp:
        smtp_env(monkeypatch, smtp.port)
        env = dict(os.environ)
        ok(cli("lists", "create", "all", "--name", "All practitioners"))
        for address in READERS:
            ok(cli("subscribers", "add", address, "--list", "all"))
        ok(cli("build", ISSUE))
        server = start_server(newsletter, port, env)
        try:
            yield Setup(newsletter, url, smtp, env, cli)
        finally:
            stop_server(server)


def send(setup: Setup) -> Result:
    result: Result = setup.cli("send", ISSUE, "--list", "all", "--yes")
    return result


def history(setup: Setup) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(ok(setup.cli("history", ISSUE, "--json")).stdout)
    return found


def edit_and_build(setup: Setup, old: str, new: str) -> None:
    path = setup.root / "issues" / ISSUE / "issue.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    ok(setup.cli("build", ISSUE))


def decide(page: Page, button: str) -> None:
    with page.expect_navigation(wait_until="load"):
        page.get_by_role("button", name=button).click()


def test_request_approve_send(setup: Setup, page: Page) -> None:
    # Without an approval by an approver, nothing goes to the lists, and the refusal says
    # whom to ask; a name typed at this machine does not count.
    refused = send(setup)
    assert refused.exit_code == 1
    assert f"ask one of {CHAIR}, {MANAGER} with: mailer approve {ISSUE} --request" in (
        refused.stderr
    )
    typed = setup.cli("approve", ISSUE, "--by", "Sam Patel")
    assert typed.exit_code == 1 and "allow_self_approval = true" in typed.stderr

    asked = ok(setup.cli("approve", ISSUE, "--request"))
    assert f"Asked {CHAIR}, {MANAGER} to approve {ISSUE}" in asked.stdout
    # Each approver gets the issue as readers will, with a banner and their own link.
    message = setup.mail_to(CHAIR)[-1]
    assert message["Subject"].startswith("[For approval] CSCP Newsletter")
    html = message.get_body(("html",))
    assert html is not None and "For approval:" in html.get_content()
    assert "Extra Help and Early Help" in html.get_content()
    link = setup.link_for(CHAIR)
    assert link != setup.link_for(MANAGER)

    # Opening the link (as a mail scanner would) changes nothing.
    page.goto(link)
    assert httpx.get(link, timeout=60).status_code == 200
    assert [e["event"] for e in history(setup)] == ["requested", "requested"]
    main = page.locator("main")
    expect(main).to_contain_text(CHAIR)
    expect(main).to_contain_text("No earlier version of this issue was approved.")
    expect(page.get_by_role("region", name="The text of the issue")).to_contain_text(
        "Extra Help and Early Help"
    )
    accessible(page)
    decide(page, "Approve")
    expect(page.get_by_role("status")).to_contain_text(f"is approved by {CHAIR}")
    accessible(page)

    result = send(setup)
    assert result.exit_code == 0, result.output
    assert f"approved by {CHAIR}" in result.stdout
    assert sorted(r for item in setup.smtp.received for r in item.rcpt_tos if r in READERS) == (
        READERS
    )
    events = history(setup)
    assert [e["event"] for e in events] == ["requested", "requested", "approved", "sent"]
    assert events[2]["by"] == CHAIR and events[2]["detail"] == "through the link mailed to them"
    assert events[2]["content_hash"] == events[3]["content_hash"] == events[0]["content_hash"]


def test_request_changes_edit_request_approve_send(setup: Setup, page: Page) -> None:
    ok(setup.cli("approve", ISSUE, "--request"))
    page.goto(setup.link_for(CHAIR))
    reason = "The Wigton session moved to Cockermouth: please change the venue."
    page.get_by_label("What should change").fill(reason)
    decide(page, "Request changes")
    expect(page.get_by_role("status")).to_contain_text("your request for changes")
    accessible(page)
    # The reason reaches the comms officer, by the background sender of mailer serve.
    setup.smtp.handler.wait_until(lambda h: any(COMMS in r.rcpt_tos for r in h.received))
    (told,) = setup.mail_to(COMMS)
    assert told["Subject"] == f"[mailer] {CHAIR} asked for changes to {ISSUE}"
    assert reason in told.get_content()
    # The content it was asked of is not sent, even with the other approver's link unused.
    refused = send(setup)
    assert refused.exit_code == 1
    assert f"{CHAIR} asked for changes to {ISSUE}" in refused.stderr and reason in refused.stderr

    edit_and_build(setup, "venue: Wigton", "venue: Cockermouth")
    ok(setup.cli("approve", ISSUE, "--request"))
    page.goto(setup.link_for(MANAGER))
    # The manager is shown what changed since... nothing was approved yet: the text alone.
    expect(page.locator("main")).to_contain_text("Cockermouth")
    decide(page, "Approve")
    expect(page.get_by_role("status")).to_contain_text(f"is approved by {MANAGER}")
    result = send(setup)
    assert result.exit_code == 0, result.output
    events = history(setup)
    kinds = [e["event"] for e in events]
    assert kinds == [
        "requested",
        "requested",
        "changes-requested",
        "requested",
        "requested",
        "approved",
        "sent",
    ]
    assert events[2]["reason"] == reason and events[2]["by"] == CHAIR
    assert events[2]["content_hash"] != events[5]["content_hash"]
    text = ok(setup.cli("history", ISSUE)).stdout
    assert f"changes asked for by {CHAIR}" in text and reason in text


def test_links_work_once_for_their_content_and_expire(setup: Setup, page: Page) -> None:
    ok(setup.cli("approve", ISSUE, "--request"))
    chair, manager = setup.link_for(CHAIR), setup.link_for(MANAGER)
    page.goto(chair)
    decide(page, "Approve")
    ok(send(setup))

    # Used twice: refused, whether opened or posted again.
    page.goto(chair)
    expect(page.get_by_role("alert")).to_contain_text("This link has been used already")
    accessible(page)
    again = httpx.post(chair, data={"decision": "approve"}, headers=SAME_SITE, timeout=60)
    assert again.status_code == 409
    # A form posted from another site is refused.
    foreign = httpx.post(
        manager, data={"decision": "approve"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert foreign.status_code == 403

    # For other content: the issue changed after the link was sent.
    edit_and_build(setup, "venue: Wigton", "venue: Cockermouth")
    page.goto(manager)
    expect(page.get_by_role("alert")).to_contain_text("has changed since this link was sent")
    accessible(page)
    answer = httpx.post(manager, data={"decision": "approve"}, headers=SAME_SITE, timeout=60)
    assert answer.status_code == 409
    refused = send(setup)
    assert refused.exit_code == 1
    assert f"changed since {CHAIR} approved it" in refused.stderr
    assert "venue" in refused.stderr or "changed" in refused.stderr
    assert f"one of {CHAIR}, {MANAGER}" in refused.stderr

    # Expired: the same link on a server whose clock is eight days later.
    ok(setup.cli("approve", ISSUE, "--request"))
    fresh = setup.link_for(MANAGER)
    port = free_port()
    later = start_server(setup.root, port, {**setup.env, "MAILER_CLOCK_OFFSET": EIGHT_DAYS})
    try:
        path = fresh.split("/approve/", 1)[1]
        page.goto(f"http://127.0.0.1:{port}/approve/{path}")
        expect(page.locator("h1")).to_have_text("This approval link has expired")
        accessible(page)
        posted = httpx.post(
            f"http://127.0.0.1:{port}/approve/{path}",
            data={"decision": "approve"},
            headers=SAME_SITE,
            timeout=60,
        )
        assert posted.status_code == 410
    finally:
        stop_server(later)
    assert "approved" not in [e["event"] for e in history(setup)][3:]
    # The link still works, once, on the server of today, and shows what changed since the
    # version the chair approved.
    page.goto(fresh)
    expect(page.get_by_role("region", name="What changed")).to_contain_text("Cockermouth")
    accessible(page)
    decide(page, "Approve")
    expect(page.get_by_role("status")).to_contain_text(f"is approved by {MANAGER}")


def test_the_approval_settings_are_checked(tmp_path: Path) -> None:
    base = (Path(__file__).parent / "data/newsletter/mailer.toml").read_text(encoding="utf-8")
    bad = {
        'approvers = ["chair@example.org", "not an address"]': "approval.approvers",
        'approvers = ["chair@example.org"]\nrequired = 2': "approval.required",
        "approvers = []\nlink_days = 0": "approval.link_days",
        'approvers = ["chair@example.org"]\nnotfy = "x@example.org"': "approval.notfy",
    }
    for text, named in bad.items():
        with pytest.raises(ConfigError, match=re.escape(named)):
            config.from_text(tmp_path, f"{base}\n[approval]\n{text}\n", env={})
    good = config.from_text(
        tmp_path,
        f'{base}\n[approval]\napprovers = ["chair@example.org", "bm@example.org"]\nrequired = 2\n',
        env={},
    )
    assert good.approval.approvers == ("chair@example.org", "bm@example.org")
    assert good.approval.required == 2 and good.approval.link_days == 7


def test_two_approvers_and_a_typed_name_where_the_folder_allows_it(
    newsletter: Path, cli: Any
) -> None:
    """Through the outbox and the library: two different approvers required, and a name
    typed with --by counting as one where allow_self_approval is set."""
    toml = newsletter / "mailer.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8")
        + f'\n[approval]\napprovers = ["{CHAIR}", "{MANAGER}"]\nrequired = 2\n'
        "allow_self_approval = true\n",
        encoding="utf-8",
    )
    ok(cli("lists", "create", "all", "--name", "All practitioners"))
    ok(cli("subscribers", "add", READERS[0], "--list", "all"))
    ok(cli("build", ISSUE))
    ok(cli("approve", ISSUE, "--request"))
    mailed = sorted((newsletter / "outbox" / ISSUE / "approvals").glob("*.eml"))
    assert len(mailed) == 2
    tokens = {}
    for path in mailed:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        body = message.get_body(("plain",))
        assert body is not None
        (token,) = re.findall(r"/approve/(\S+)", body.get_content())
        tokens[str(message["To"])] = token
    settings = config.load(newsletter)
    with open_db(settings) as database:
        done = signoff.decide(settings, database, tokens[CHAIR], time.time(), approve=True)
        assert done.state == "decided"
    one = cli("send", ISSUE, "--list", "all", "--dry-run")
    assert one.exit_code == 1
    assert f"approved by {CHAIR} and needs 2 different approvers: ask {MANAGER}" in one.stderr
    # A name typed at this machine counts as the second, as mailer.toml allows here.
    ok(cli("approve", ISSUE, "--by", "Sam Patel"))
    assert ok(cli("send", ISSUE, "--list", "all", "--dry-run")).exit_code == 0
