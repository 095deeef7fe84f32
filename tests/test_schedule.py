"""Scheduled and monthly sends: parsing, clock changes, missed runs, one sender, the worker."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailer import config
from mailer.errors import ScheduleError, StoreError
from mailer.scheduling import rules, runner
from mailer.scheduling import worker as the_worker
from mailer.sending.journal import ON_THE_WIRE
from mailer.store import database as db
from send_helpers import Lines, addresses, mailer_process, make_list, smtp_env, sql
from smtp_server import Handler, SMTPServer

LONDON = ZoneInfo("Europe/London")
UTC = dt.UTC


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest.fixture
def ready(cli: Any, newsletter: Path) -> Path:
    make_list(cli, newsletter, "practitioners", addresses(5))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    return newsletter


def outbox(root: Path, slug: str = "2025-11") -> list[Path]:
    return sorted((root / "outbox" / slug).glob("*.eml"))


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2026-03-03 09:00", utc(2026, 3, 3, 9, 0)),  # GMT
        ("2026-03-29 09:00", utc(2026, 3, 29, 8, 0)),  # BST from 01:00 that day
        ("2026-07-07 09:00", utc(2026, 7, 7, 8, 0)),  # BST
        ("2026-10-25 09:00", utc(2026, 10, 25, 9, 0)),  # GMT again that morning
        ("2026-11-03 09:00", utc(2026, 11, 3, 9, 0)),  # GMT
        ("2026-10-25 01:30", utc(2026, 10, 25, 0, 30)),  # happens twice: the first (BST)
    ],
)
def test_local_times_become_the_right_utc_across_clock_changes(
    written: str, expected: dt.datetime
) -> None:
    assert rules.parse_at(written, LONDON) == expected


def test_monthly_rule_keeps_nine_oclock_london_through_the_year() -> None:
    rule = rules.parse_rule("1st tue 09:00")
    runs = []
    moment = utc(2026, 2, 20)
    for _ in range(10):
        moment = rule.next_after(moment, LONDON)
        runs.append(moment)
    assert runs[0] == utc(2026, 3, 3, 9)  # March, before the change: GMT
    assert runs[4] == utc(2026, 7, 7, 8)  # July: BST
    assert runs[8] == utc(2026, 11, 3, 9)  # November: GMT
    assert all(r.astimezone(LONDON).hour == 9 for r in runs)
    assert all(r.astimezone(LONDON).weekday() == 1 and r.astimezone(LONDON).day <= 7 for r in runs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["2025-11", "--list", "practitioners", "--at", "next tuesday"],
            'write the date and time like "2026-12-31 09:00" or "31/12/2026 9.30am"',
        ),
        (
            ["2025-11", "--list", "practitioners", "--at", "2026-02-30 09:00"],
            "2026-02-30 is not a date that exists",
        ),
        (
            ["2025-11", "--list", "practitioners", "--at", "2099-03-29 01:30"],
            "does not exist on 29 March 2099",
        ),
        (["2025-11", "--list", "practitioners", "--at", "2020-01-07 09:00"], "is in the past"),
        (["2025-11", "--list", "nobody", "--at", "2099-01-06 09:00"], "nobody"),
        (
            ["2021-12", "--list", "practitioners", "--at", "2099-01-06 09:00"],
            "2021-12 has not been approved",
        ),
        (["2099-99", "--list", "practitioners", "--at", "2099-01-06 09:00"], "no issue '2099-99'"),
        (["--monthly", "31 09:00", "--list", "practitioners"], 'use "last day 09:00"'),
        (["--monthly", "5th mon 09:00", "--list", "practitioners"], 'use "last mon 09:00"'),
        (["--monthly", "last sun 01:30", "--list", "practitioners"], "does not exist on Sunday"),
        (["--monthly", "every month", "--list", "practitioners"], "write a day and a time"),
        (["--monthly", "32 09:00", "--list", "practitioners"], "--monthly"),
        (["--monthly", "1st tue 25:00", "--list", "practitioners"], "is not a time of day"),
        (["--monthly", "* 09:00", "--list", "practitioners"], "is not one day a month"),
        (["--monthly", "1-7 09:00", "--list", "practitioners"], "is not one day a month"),
    ],
)
def test_bad_schedules_are_refused_in_one_line(
    cli: Any, ready: Path, args: list[str], message: str
) -> None:
    r = cli("schedule", *args)
    assert r.exit_code == 1, r.output
    assert message in r.stderr
    assert "Traceback" not in r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert sql(ready, "SELECT COUNT(*) FROM schedule") == [(0,)]


def test_schedule_lists_and_unschedule(cli: Any, ready: Path) -> None:
    r = cli("schedule", "2025-11", "--list", "practitioners", "--at", "2099-07-07 09:00")
    assert r.exit_code == 0, r.output
    assert "next run Tuesday 7 July 2099 at 9am BST (2099-07-07 08:00 UTC)" in r.stdout
    r = cli("schedule", "--monthly", "1st tue 09:00", "--list", "practitioners")
    assert r.exit_code == 0, r.output
    listing = cli("schedules")
    assert "2025-11  to practitioners  [active]" in listing.stdout
    assert "monthly 1st tue 09:00  to practitioners  [active]" in listing.stdout
    data = json.loads(cli("schedules", "--json").stdout)
    assert data[0]["next_run_utc"].startswith("2099-07-07T08:00")
    assert cli("unschedule", "1").exit_code == 0
    assert json.loads(cli("schedules", "--json").stdout)[0]["status"] == "cancelled"
    again = cli("unschedule", "1")
    assert again.exit_code == 1 and "already cancelled" in again.stderr
    assert cli("unschedule", "42").exit_code == 1


def _schedule_at(settings: config.Settings, when: dt.datetime) -> int:
    database = db.open_db(settings)
    text = when.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M:%S")
    item = runner.schedule_once(
        settings, database, "2025-11", ["practitioners"], text, when - dt.timedelta(days=1)
    )
    assert item.id is not None
    return item.id


def test_a_due_schedule_is_sent_once_and_only_when_due(ready: Path) -> None:
    settings = config.load(ready)
    database = db.open_db(settings)
    slot = utc(2099, 12, 1, 9)
    _schedule_at(settings, slot)
    assert runner.run_due(settings, database, slot - dt.timedelta(minutes=1)) == []
    assert outbox(ready) == []
    (outcome,) = runner.run_due(settings, database, slot + dt.timedelta(minutes=2))
    assert outcome.sent and "5 of 5 sent" in outcome.outcome
    assert len(outbox(ready)) == 5
    assert runner.run_due(settings, database, slot + dt.timedelta(minutes=3)) == []
    assert len(outbox(ready)) == 5
    (item,) = runner.all_schedules(database)
    assert item.status == "done" and "sent" in item.last_outcome


def test_late_within_grace_is_sent_beyond_grace_is_marked_missed(ready: Path) -> None:
    settings = config.load(ready)
    database = db.open_db(settings)
    first = utc(2099, 12, 1, 9)
    _schedule_at(settings, first)
    (outcome,) = runner.run_due(settings, database, first + dt.timedelta(hours=5, minutes=59))
    assert outcome.sent
    # A second slot, seen 7 hours late: never sent, reported as missed.
    second = utc(2099, 12, 2, 9)
    item = runner.schedule_once(
        settings, database, "2025-11", ["practitioners"], "2099-12-02 09:00", first
    )
    (outcome,) = runner.run_due(settings, database, second + dt.timedelta(hours=7))
    assert not outcome.sent and outcome.outcome.startswith("missed: due Wed 02 Dec 2099 09:00 GMT")
    stored = next(s for s in runner.all_schedules(database) if s.id == item.id)
    assert stored.status == "missed"


def test_monthly_slot_sends_the_approved_issue_of_its_month_or_records_why_not(
    ready: Path, cli: Any
) -> None:
    settings = config.load(ready)
    database = db.open_db(settings)
    # The 2025-11 issue is dated 30 October 2025, the last Thursday of that month.
    item = runner.schedule_monthly(
        settings, database, "last thu 09:00", ["practitioners"], utc(2025, 10, 1)
    )
    assert item.next_run_at == utc(2025, 10, 30, 9)  # GMT: the clocks went back on 26 October
    (outcome,) = runner.run_due(settings, database, utc(2025, 10, 30, 9, 1))
    assert outcome.sent and outcome.slug == "2025-11"
    assert len(outbox(ready)) == 5
    # November has no issue: nothing is sent, the reason is kept, and the slot is tried
    # again at every look until the grace period ends.
    (outcome,) = runner.run_due(settings, database, utc(2025, 11, 27, 9, 1))
    assert not outcome.sent and outcome.problem
    assert "no issue is dated in November 2025" in outcome.outcome
    listing = cli("schedules").stdout
    assert "FAILING   since Thu 27 Nov 2025 09:01 GMT" in listing
    assert "no issue is dated in November 2025" in listing
    (outcome,) = runner.run_due(settings, database, utc(2025, 11, 27, 15, 2))
    assert not outcome.sent and outcome.problem
    assert outcome.outcome.startswith("not sent: still failing at the end of the 6 h grace")
    listing = cli("schedules").stdout
    assert "FAILING" not in listing
    assert "Thu 25 Dec 2025 09:00 GMT" in listing


def test_two_workers_at_once_never_send_twice(ready: Path) -> None:
    settings = config.load(ready)
    slot = utc(2099, 12, 1, 9)
    _schedule_at(settings, slot)
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        database = db.open_db(settings)
        barrier.wait()
        results.extend(runner.run_due(settings, database, slot + dt.timedelta(minutes=1)))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 1
    assert len(outbox(ready)) == 5
    assert sql(ready, "SELECT COUNT(*) FROM send") == [(1,)]


def _worker(root: Path, *args: str) -> tuple[subprocess.Popen[bytes], Lines]:
    """A real `mailer worker` whose clock runs ten minutes ahead of this process's, so a
    schedule made "five minutes from now" is due for it at once (and well within grace)."""
    env = {**os.environ, "MAILER_CLOCK_OFFSET": "600"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "worker", "--poll", "0.5", *args],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    return process, Lines(process.stderr)


def _in_five_minutes() -> str:
    return (dt.datetime.now(LONDON) + dt.timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M")


def test_a_running_worker_picks_up_a_schedule_made_from_another_process(
    ready: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SMTPServer() as server:
        smtp_env(monkeypatch, server.port)
        worker, lines = _worker(ready)
        try:
            lines.wait_for("worker started")
            scheduled = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "mailer",
                    "schedule",
                    "2025-11",
                    "--list",
                    "practitioners",
                    "--at",
                    _in_five_minutes(),
                ],
                cwd=ready,
                env=dict(os.environ),
                capture_output=True,
                text=True,
                check=False,
            )
            assert scheduled.returncode == 0, scheduled.stderr
            lines.wait_for("finished 2025-11")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=120)
            lines.close()
        assert worker.returncode == 0, lines.text()
        assert Counter(server.handler.recipients()) == Counter(addresses(5))
        log = (ready / ".mailer/mailer.log").read_text()
        for event in (
            "worker started",
            "scheduled 2025-11",
            "started scheduled send of 2025-11",
            "finished 2025-11",
            "worker stopped",
        ):
            assert event in log
        assert "finished 2025-11" in lines.text()  # the same lines on stderr


def test_worker_once_resumes_a_send_killed_half_way(
    ready: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_list(cli, ready, "everyone", addresses(60, "all"), name="Everyone")
    with SMTPServer(Handler(hold_after=15)) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_CONNECTIONS="4")
        process = mailer_process(ready, "send", "2025-11", "--list", "everyone", "--yes")
        server.handler.wait_until(lambda h: h.held >= 1)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        server.handler.release(accept=False)
        server.handler.hold_after = None
        r = cli("worker", "--once")
        assert r.exit_code == 0, r.output
        got = Counter(server.handler.recipients())
        # The rows in flight at the kill are reported unknown, not sent again (the
        # documented policy: mailer send SLUG --resend-unknown sends them on request).
        unknown = {e for (e,) in sql(ready, "SELECT email FROM delivery WHERE status = 'unknown'")}
        assert set(got) | unknown == set(addresses(60, "all"))
        assert all(n == 1 for n in got.values())
        assert sql(ready, "SELECT status FROM send") == [("sent",)]
        # Only the copies on the wire at the kill (its journal says which), not the
        # batch it had claimed: everyone else got the issue from the worker on its own.
        assert 1 <= len(unknown) <= 4 * ON_THE_WIRE


def test_parse_errors_are_schedule_errors() -> None:
    with pytest.raises(ScheduleError):
        rules.parse_rule("first monday at nine")


def test_sigterm_during_a_scheduled_send_pauses_it_and_the_next_worker_finishes_it(
    ready: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_list(cli, ready, "everyone", addresses(40, "all"), name="Everyone")
    with SMTPServer(Handler(hold_after=5)) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_CONNECTIONS="2")
        r = cli("schedule", "2025-11", "--list", "everyone", "--at", _in_five_minutes())
        assert r.exit_code == 0, r.output
        worker, lines = _worker(ready)
        server.handler.wait_until(lambda h: h.held >= 1)
        worker.send_signal(signal.SIGTERM)
        lines.wait_for("worker stopping")
        server.handler.release()  # the messages in hand are accepted, then it stops
        worker.wait(timeout=120)
        lines.close()
        assert worker.returncode == 0, lines.text()
        assert "worker stopped" in lines.text()
        assert "skipped: maximum number" not in lines.text()
        assert sql(ready, "SELECT status, status_reason, pause_reason FROM send") == [
            ("paused", "the worker stopped", "worker-stopped")
        ]
        assert 5 <= len(server.received) < 40
        server.handler.hold_after = None
        r = cli("worker", "--once")
        assert r.exit_code == 0, r.output
        assert Counter(server.handler.recipients()) == Counter(addresses(40, "all"))
    assert sql(ready, "SELECT status FROM send") == [("sent",)]
    (item,) = json.loads(cli("schedules", "--json").stdout)
    assert item["status"] == "done" and item["last_outcome"].startswith("sent: 2025-11 40 of 40")


def test_a_failed_look_is_one_line_in_the_log_and_skipped_polls_are_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A poll that fails (the database unreachable) is one line, tried again at the next
    poll; a poll skipped because the last one is still sending is not a warning each time."""

    def look() -> None:
        raise StoreError("postgresql://mailer:***@db/mailer: connection refused")

    with caplog.at_level(logging.INFO):
        the_worker.Worker._looked(look, "the look at the sends")()  # does not raise
    (record,) = [r for r in caplog.records if r.name == "mailer.worker"]
    assert record.levelno == logging.ERROR and record.exc_info is None
    assert record.getMessage() == (
        "the look at the sends failed, tried again at the next poll: "
        "postgresql://mailer:***@db/mailer: connection refused"
    )
    skipped = logging.LogRecord(
        "apscheduler.scheduler",
        logging.WARNING,
        __file__,
        1,
        'Execution of job "%s" skipped: maximum number of running instances reached (%d)',
        ("Worker.tick", 1),
        None,
    )
    missed = logging.LogRecord(
        "apscheduler.scheduler",
        logging.WARNING,
        __file__,
        1,
        "Run time of job was missed",
        (),
        None,
    )
    assert not the_worker._no_skipped_runs(skipped)
    assert the_worker._no_skipped_runs(missed)
