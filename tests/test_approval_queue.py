"""An approver's request for changes answers at once, whatever the mail server does: the
reason is recorded with the decision and its email to ``[approval] notify`` is queued,
then delivered by the background sender once the relay works. On both databases."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fake_clock import FakeClock
from mailer.store.database import open_db
from mailer.subscribers.posting import Postman
from mailer.web import create_app
from send_helpers import smtp_env
from smtp_server import SMTPServer
from subscriber_helpers import Cli, ok
from test_web_queue import Silent, rows, smtp_settings

ISSUE = "2025-11"
CHAIR, MANAGER, COMMS = "chair@example.org", "manager@example.org", "comms@example.org"


@pytest.fixture
def silent() -> Iterator[Silent]:
    relay = Silent()
    yield relay
    relay.close()


def approval_path(smtp: SMTPServer, approver: str) -> str:
    """The path of the approval link in the latest request mailed to ``approver``."""
    message = [r.message for r in smtp.received if approver in r.rcpt_tos][-1]
    part = message.get_body(("plain",))
    assert part is not None
    (path,) = re.findall(r"https?://[^/\s]+(/approve/\S+)", part.get_content())
    return str(path)


def test_a_request_for_changes_answers_at_once_and_its_email_goes_later(
    cli: Cli, newsletter: Path, monkeypatch: pytest.MonkeyPatch, silent: Silent
) -> None:
    toml = newsletter / "mailer.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8")
        + f'\n[approval]\napprovers = ["{CHAIR}", "{MANAGER}"]\nnotify = "{COMMS}"\n',
        encoding="utf-8",
    )
    with SMTPServer() as relay:
        smtp_env(monkeypatch, relay.port)
        ok(cli("lists", "create", "all", "--name", "All practitioners"))
        ok(cli("subscribers", "add", "amira@example.org", "--list", "all"))
        ok(cli("build", ISSUE))
        ok(cli("approve", ISSUE, "--request"))
        links = {who: approval_path(relay, who) for who in (CHAIR, MANAGER)}

        # The site's relay now accepts connections and never answers.
        hung = smtp_settings(newsletter, silent.port)
        site = TestClient(
            create_app(hung, clock=time.time), headers={"Sec-Fetch-Site": "same-origin"}
        )
        reasons = {
            CHAIR: "The Wigton session moved to Cockermouth: please change the venue.",
            MANAGER: "The helpline number in the second story is last year's.",
        }
        for who, reason in reasons.items():
            answer = site.post(links[who], data={"decision": "changes", "reason": reason})
            assert answer.status_code == 200
            assert "your request for changes" in answer.text
            assert "is on its way to whoever writes" in answer.text
        # No request talked to the relay; both reasons are recorded.
        assert silent.accepted == []
        events = json.loads(ok(cli("history", ISSUE, "--json")).stdout)
        asked = [(e["by"], e["reason"]) for e in events if e["event"] == "changes-requested"]
        assert sorted(asked) == sorted(reasons.items())
        # Both emails wait, though they go to one mailbox minutes apart: mail to the
        # partnership's own staff is not held back by the sign-up form's limits.
        assert rows(newsletter) == [("approval", "queued", COMMS)] * 2

        # The background sender delivers them once the relay works.
        working = smtp_settings(newsletter, relay.port)
        with open_db(working) as db:
            assert Postman(working, db, clock=FakeClock(time.time())).deliver_due() == 2
    told = [r.message for r in relay.received if COMMS in r.rcpt_tos]
    assert sorted(m["Subject"] for m in told) == sorted(
        f"[mailer] {who} asked for changes to {ISSUE}" for who in reasons
    )
    for who, reason in reasons.items():
        (message,) = [m for m in told if who in m["Subject"]]
        assert reason in message.get_content()
        assert f"mailer approve {ISSUE} --request" in message.get_content()
    assert [r[1] for r in rows(newsletter)] == ["sent", "sent"]
