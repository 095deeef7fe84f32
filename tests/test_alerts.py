"""A scheduled send never silently fails: it compiles only its own issue, a slot that
failed for a reason a person can fix is tried again after the fix, and every failure,
pause or missed slot is announced: an alert email, a line in `mailer schedules`, and a
non-zero exit from `mailer worker --once`."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailer import config
from mailer.scheduling import runner
from mailer.store import database as db
from send_helpers import addresses, make_list, smtp_env, sql
from smtp_server import Handler, SMTPServer

LONDON = ZoneInfo("Europe/London")
ISSUE = "issues/2025-11/issue.yaml"


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def set_top(root: Path, line: str) -> None:
    """Add a top-level setting to mailer.toml (before its first table)."""
    path = root / "mailer.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("\n[sender]", f"\n{line}\n\n[sender]", 1), encoding="utf-8")


def alerts(root: Path) -> list[email.message.EmailMessage]:
    found = sorted((root / "outbox" / "_alerts").glob("*.eml"))
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in found
    ]


@pytest.fixture
def ready(cli: Any, newsletter: Path) -> Path:
    set_top(newsletter, 'alerts_to = "comms@example.org"')
    make_list(cli, newsletter, "practitioners", addresses(3))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    return newsletter


def test_a_broken_draft_of_another_month_never_blocks_a_monthly_slot(
    ready: Path, cli: Any, caplog: pytest.LogCaptureFixture
) -> None:
    draft = ready / "issues/2025-12"
    draft.mkdir()
    # The commonest mistake: a colon in an unquoted title.
    (draft / "issue.yaml").write_text(
        "subject: December\ndate: 2025-12-02\nsections:\n"
        "  - type: news\n    title: Update: Family Help\n    body: x\n",
        encoding="utf-8",
    )
    settings = config.load(ready)
    database = db.open_db(settings)
    runner.schedule_monthly(
        settings, database, "last thu 09:00", ["practitioners"], utc(2025, 10, 1)
    )
    (outcome,) = runner.run_due(settings, database, utc(2025, 10, 30, 9, 1))
    database.close()
    assert outcome.sent and outcome.slug == "2025-11", outcome.outcome
    # The broken draft is reported beside the send, with its line and the fix.
    assert "note: 2025-12 could not be read (issues/2025-12/issue.yaml:5:" in outcome.outcome
    assert "put text containing a colon in quotes" in outcome.outcome
    assert "2025-12 could not be read" in caplog.text
    assert "note: 2025-12 could not be read" in cli("schedules").stdout


def test_a_slot_that_failed_is_retried_after_the_fix_and_alerted_once(
    ready: Path, cli: Any
) -> None:
    settings = config.load(ready)
    database = db.open_db(settings)
    slot = utc(2099, 12, 1, 9)
    item = runner.schedule_once(
        settings,
        database,
        "2025-11",
        ["practitioners"],
        "2099-12-01 09:00",
        slot - dt.timedelta(days=1),
    )
    # Someone edits the issue after it was approved.
    path = ready / ISSUE
    path.write_text(path.read_text(encoding="utf-8").replace("Impact Chronology", "Impact"))
    (outcome,) = runner.run_due(settings, database, slot + dt.timedelta(minutes=1))
    assert not outcome.sent and outcome.problem
    assert "changed since Sam Patel approved it" in outcome.outcome
    (alert,) = alerts(ready)
    assert alert["To"] == "comms@example.org"
    assert alert["Subject"] == f"[mailer] 2025-11 was not sent (schedule {item.id})"
    assert alert["Auto-Submitted"] == "auto-generated"
    body = alert.get_content()
    # Every problem at once, in the order to fix them: one round of fixes is enough.
    assert "  1. .mailer/preview/2025-11 is older than the issue" in body
    assert "run mailer build 2025-11" in body
    assert "  2. " in body and "changed since Sam Patel approved it" in body
    assert body.index("  1. ") < body.index("  2. ") and "  3. " not in body
    assert (
        "Fix these 2, in this order, and the worker sends it at its next look, until "
        "Tue 01 Dec 2099 15:00 GMT" in body
    )
    listing = cli("schedules").stdout
    assert "FAILING   since Tue 01 Dec 2099 09:01 GMT" in listing
    assert "[active]" in listing

    # The next look fails the same way: no second alert.
    (outcome,) = runner.run_due(settings, database, slot + dt.timedelta(minutes=2))
    assert outcome.problem and len(alerts(ready)) == 1

    # Fixed within the grace period: the next look sends it.
    assert cli("build", "2025-11").exit_code == 0
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    (outcome,) = runner.run_due(settings, database, slot + dt.timedelta(hours=2))
    database.close()
    assert outcome.sent and not outcome.problem, outcome.outcome
    assert len(list((ready / "outbox/2025-11").glob("*.eml"))) == 3
    # Whoever was told it failed is told it went.
    _failed, follow_up = alerts(ready)
    assert follow_up["Subject"] == f"[mailer] 2025-11 is now sent (schedule {item.id})"
    assert "The problem alerted earlier is fixed" in follow_up.get_content()
    assert sql(ready, "SELECT status, failing_since FROM schedule") == [("done", None)]
    assert "FAILING" not in cli("schedules").stdout


def test_a_slot_still_failing_at_the_end_of_the_grace_period_fails_and_says_so(
    ready: Path,
) -> None:
    settings = config.load(ready)
    database = db.open_db(settings)
    slot = utc(2099, 12, 1, 9)
    runner.schedule_once(
        settings,
        database,
        "2025-11",
        ["practitioners"],
        "2099-12-01 09:00",
        slot - dt.timedelta(days=1),
    )
    (ready / ISSUE).unlink()
    (first,) = runner.run_due(settings, database, slot + dt.timedelta(minutes=1))
    assert "no issue '2025-11'" in first.outcome
    (last,) = runner.run_due(settings, database, slot + dt.timedelta(hours=6, minutes=1))
    assert last.problem and not last.sent
    assert last.outcome.startswith("not sent: still failing at the end of the 6 h grace period")
    assert runner.run_due(settings, database, slot + dt.timedelta(hours=7)) == []
    database.close()
    assert sql(ready, "SELECT status FROM schedule") == [("failed",)]
    subjects = [a["Subject"] for a in alerts(ready)]
    assert subjects == ["[mailer] 2025-11 was not sent (schedule 1)"] * 2


def test_a_rehearsal_does_not_count_and_an_issue_already_sent_is_not_a_failure(
    ready: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rehearsal through the outbox first: it mails nobody.
    assert cli("send", "2025-11", "--list", "practitioners", "--yes").exit_code == 0
    with SMTPServer() as server:
        smtp_env(monkeypatch, server.port)
        settings = config.load(ready)
        database = db.open_db(settings)
        runner.schedule_monthly(
            settings, database, "last thu 09:00", ["practitioners"], utc(2025, 10, 1)
        )
        (outcome,) = runner.run_due(settings, database, utc(2025, 10, 30, 9, 1))
        assert outcome.sent and outcome.slug == "2025-11", outcome.outcome
        assert Counter(server.handler.recipients()) == Counter(addresses(3))
        # Another slot that month finds its issue sent for real: nothing to do, nothing wrong.
        runner.schedule_monthly(
            settings, database, "last fri 09:00", ["practitioners"], utc(2025, 10, 1)
        )
        (outcome,) = runner.run_due(settings, database, utc(2025, 10, 31, 9, 1))
        database.close()
        assert not outcome.sent and not outcome.problem
        assert outcome.outcome == "nothing to send for October 2025: 2025-11 was already sent"
        assert len(server.received) == 3  # and no alert


def _worker_once(root: Path, offset_hours: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAILER_CLOCK_OFFSET": str(int(offset_hours * 3600))}
    return subprocess.run(
        [sys.executable, "-m", "mailer", "worker", "--once"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _in_five_minutes() -> str:
    return (dt.datetime.now(LONDON) + dt.timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M")


def test_a_missed_slot_is_emailed_and_worker_once_exits_1(
    ready: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = cli("schedule", "2025-11", "--list", "practitioners", "--at", _in_five_minutes())
    assert r.exit_code == 0, r.output
    with SMTPServer() as server:
        smtp_env(monkeypatch, server.port)
        # The worker's clock is seven hours on: the slot is beyond the six-hour grace.
        done = _worker_once(ready, 7)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "schedule 1: missed: due" in done.stdout
    assert "1 problem(s) need a person" in done.stderr
    (alert,) = server.received
    assert alert.rcpt_tos == ["comms@example.org"]
    assert alert.message["Subject"] == "[mailer] 2025-11 was not sent (schedule 1)"
    assert "missed: due" in alert.message.get_content()
    assert sql(ready, "SELECT status FROM schedule") == [("missed",)]


def test_a_scheduled_send_paused_by_failures_is_alerted_and_exits_1(
    ready: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = ready / "mailer.toml"
    path.write_text(
        path.read_text(encoding="utf-8").replace(
            'name = "outbox"', 'name = "outbox"\npause_after_errors = 2\nmax_attempts = 1'
        ),
        encoding="utf-8",
    )
    r = cli("schedule", "2025-11", "--list", "practitioners", "--at", _in_five_minutes())
    assert r.exit_code == 0, r.output
    with SMTPServer(Handler(temp_fail=set(addresses(3)))) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_CONNECTIONS="1")
        done = _worker_once(ready, 0.5)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "paused" in done.stdout
        alerts_sent = [m for m in server.received if m.rcpt_tos == ["comms@example.org"]]
    (alert,) = alerts_sent
    assert alert.message["Subject"] == "[mailer] the send of 2025-11 stopped (schedule 1)"
    body = alert.message.get_content()
    assert "mailer send 2025-11 --resume" in body
    # Alerts name issues and sends, never a reader's address.
    assert not any(a in body for a in addresses(3))
    assert Counter(r for m in server.received for r in m.rcpt_tos) == Counter(["comms@example.org"])
