"""Three `mailer worker` processes on one database, one of them as if on another machine
(a UTS namespace of its own, with its own host name): every due slot starts exactly once,
and when the scheduler is killed with SIGKILL a standby takes over and starts the rest.

The workers are real processes, with short leases (``MAILER_WORKER_LEASE=3``) and polls;
the test waits on what they report, never on the clock.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bounce_helpers import add_issue
from mailer import config
from mailer.config import Settings
from mailer.scheduling import rules, runner
from mailer.store import schedules
from mailer.store.database import Database, open_db
from mailer.store.models import ScheduleKind
from send_helpers import addresses, ctrl_c_works, make_list, smtp_env
from smtp_server import SMTPServer

PEOPLE = addresses(10)
ELSEWHERE = "mailer-elsewhere"
WAIT = 180.0


class Logs:
    """Every line the workers write, in one list, so the test can wait for an event from
    whichever worker reports it."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.cond = threading.Condition()
        self.readers: list[threading.Thread] = []

    def follow(self, name: str, stream: Any) -> None:
        def read() -> None:
            for raw in iter(stream.readline, b""):
                with self.cond:
                    self.lines.append((name, raw.decode("utf-8", "replace")))
                    self.cond.notify_all()
            stream.close()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        self.readers.append(reader)

    def wait_for(self, found: Callable[[list[tuple[str, str]]], Any], what: str) -> Any:
        with self.cond:
            result = self.cond.wait_for(lambda: found(self.lines), WAIT)
        assert result, f"{what} never came; the workers said:\n{self.text()}"
        return result

    def text(self) -> str:
        with self.cond:
            return "".join(f"[{name}] {line}" for name, line in self.lines)


@pytest.fixture
def logs() -> Iterator[Logs]:
    found = Logs()
    yield found
    for reader in found.readers:
        reader.join(timeout=WAIT)


class Workers:
    """The worker processes of a test, by name; whatever is left is stopped at the end."""

    def __init__(self, root: Path, logs: Logs) -> None:
        self.root, self.logs = root, logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *, hostname: str | None = None) -> None:
        command = [sys.executable, "-m", "mailer", "worker", "--poll", "0.5"]
        if hostname is not None:
            # Its own UTS namespace: the same machine, but another host name, as a worker
            # on another machine would have; its process cannot be looked up from here.
            command = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname]
            command += [sys.executable, "-m", "mailer", "worker", "--poll", "0.5"]
        process = subprocess.Popen(
            command,
            cwd=self.root,
            env=dict(os.environ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=ctrl_c_works,
        )
        self.running[name] = process
        self.logs.follow(name, process.stderr)

    def named(self, pid: int) -> str:
        return next(name for name, p in self.running.items() if p.pid == pid)

    def kill(self, name: str) -> None:
        process = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=WAIT)

    def stop_all(self) -> dict[str, int]:
        for process in self.running.values():
            process.send_signal(signal.SIGTERM)
        codes = {name: p.wait(timeout=WAIT) for name, p in self.running.items()}
        self.running.clear()
        return codes


def rows(database: Database, query: str) -> list[tuple[Any, ...]]:
    with database.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query))]


def scheduler(database: Database) -> tuple[int, int]:
    """The pid of the process holding the scheduler lease, and its term."""
    ((holder, term),) = rows(database, "SELECT holder, term FROM lease WHERE name = 'scheduler'")
    return int(holder.split(":")[1]), int(term)


def took_over(after: int) -> Callable[[list[tuple[str, str]]], str | None]:
    """A worker's line saying it became the scheduler in a term later than ``after``."""

    def found(lines: list[tuple[str, str]]) -> str | None:
        for name, line in lines:
            m = re.search(r"is now the scheduler \(lease term (\d+)\)", line)
            if m and int(m.group(1)) > after:
                return name
        return None

    return found


def finished(*slugs: str) -> Callable[[list[tuple[str, str]]], bool]:
    """Whether the schedules of these issues have heard that their sends were sent."""

    def found(lines: list[tuple[str, str]]) -> bool:
        done = [re.search(r"schedule \d+: sent: (\S+) ", line) for _, line in lines]
        return set(slugs) <= {m.group(1) for m in done if m}

    return found


def schedule_now(settings: Settings, database: Database, slug: str, minutes_ago: int) -> None:
    """A one-off slot that is already due (well within the grace period)."""
    slot = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago)
    at = slot.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M:%S")
    runner.schedule_once(
        settings, database, slug, ["practitioners"], at, slot - dt.timedelta(days=1)
    )


def schedule_monthly(settings: Settings, database: Database) -> str:
    """A monthly slot on the 1st at 09:00 whose slot of last month is still due; returns the
    date of the issue it should send."""
    today = dt.datetime.now(settings.tz).date()
    first = (today.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
    slot = dt.datetime.combine(first, dt.time(9), settings.tz).astimezone(dt.UTC)
    with database.session(write=True) as session:
        rule = str(rules.parse_rule("1 09:00"))
        schedules.add(session, ScheduleKind.MONTHLY, ["practitioners"], slot, rule=rule)
    return first.isoformat()


def test_three_workers_start_every_slot_once_and_a_standby_takes_over(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    toml = newsletter / "mailer.toml"
    # Last month's monthly slot is still within the grace period.
    toml.write_text(
        toml.read_text(encoding="utf-8").replace("\n[sender]", "\nmisfire_grace = 2000\n\n[sender]")
    )
    make_list(cli, newsletter, "practitioners", PEOPLE)
    settings = config.load(newsletter)
    database = open_db(settings)
    slugs = [f"t{i:02d}" for i in range(1, 9)]
    for slug in slugs:
        add_issue(newsletter, slug, "2025-10-30")
    monthly_date = schedule_monthly(settings, database)
    add_issue(newsletter, "monthly", monthly_date)
    assert cli("build", *slugs, "monthly").exit_code == 0
    for slug in [*slugs, "monthly"]:
        assert cli("approve", slug, "--by", "Sam Patel").exit_code == 0, slug

    workers = Workers(newsletter, logs)
    with SMTPServer() as server:
        # Leases of 3 seconds, the shortest allowed: a standby takes over within 3.5 s.
        smtp_env(monkeypatch, server.port, MAILER_SMTP_CONNECTIONS="2", MAILER_WORKER_LEASE="3")
        try:
            for i, slug in enumerate(slugs[:3]):
                schedule_now(settings, database, slug, minutes_ago=10 + i)
            # The worker "on another machine" starts first, and is the first scheduler.
            workers.start("elsewhere", hostname=ELSEWHERE)
            logs.wait_for(took_over(0), "a scheduler")
            workers.start("a")
            workers.start("b")
            logs.wait_for(finished(*slugs[:3], "monthly"), "the first four sends")

            # Kill the scheduler. Slots that fall due meanwhile wait for the standby that
            # takes over: at its expiry for a worker elsewhere, at once for one here.
            for batch in (slugs[3:6], slugs[6:]):
                pid, term = scheduler(database)
                killed = workers.named(pid)
                workers.kill(killed)
                for i, slug in enumerate(batch):
                    schedule_now(settings, database, slug, minutes_ago=5 + i)
                new = logs.wait_for(took_over(term), "a standby taking over")
                assert new != killed
                logs.wait_for(finished(*batch), f"the sends of {', '.join(batch)}")
            codes = workers.stop_all()
        finally:
            for process in workers.running.values():
                process.kill()
                process.wait(timeout=WAIT)
        assert codes == {name: 0 for name in codes}, logs.text()
        got = Counter(
            (str(r.message["Subject"]), to) for r in server.handler.received for to in r.rcpt_tos
        )
    expected = {
        (f"CSCP Newsletter – issue {slug}", to) for slug in [*slugs, "monthly"] for to in PEOPLE
    }
    # Every slot started exactly once: one send each, every copy delivered once.
    assert set(got) == expected and set(got.values()) == {1}
    assert sorted(rows(database, "SELECT slug, COUNT(*) FROM send GROUP BY slug")) == sorted(
        (slug, 1) for slug in [*slugs, "monthly"]
    )
    once = [s for s in runner.all_schedules(database) if s.kind == ScheduleKind.ONCE]
    assert [s.status for s in once] == ["done"] * len(slugs)
    (monthly,) = [s for s in runner.all_schedules(database) if s.kind == ScheduleKind.MONTHLY]
    assert monthly.last_outcome.startswith("sent: monthly 10 of 10 sent"), monthly.last_outcome
    assert monthly.next_run_at is not None and monthly.next_run_at > dt.datetime.now(dt.UTC)
    text = logs.text()
    assert f"{ELSEWHERE}:" in text  # the worker elsewhere named itself by its own host
    database.close()
