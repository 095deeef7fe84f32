"""One scheduler among many workers: the lease that picks it, the take-over when it dies,
and slots that start exactly once even when a scheduler stalls or dies half way."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mailer import config
from mailer.config import Settings
from mailer.errors import LeaseLost
from mailer.operations import service
from mailer.scheduling import leader, runner
from mailer.store import schedules, sends
from mailer.store.database import Database, open_db
from send_helpers import addresses, make_list

UTC = dt.UTC
TTL = 20.0


class Clock:
    """A wall clock for leases that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def after_expiry(self) -> None:
        self.now += dt.timedelta(seconds=TTL + 1)


def rows(database: Database, query: str) -> list[tuple[Any, ...]]:
    """A query on the test's database, whichever it is."""
    with database.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query))]


def lease(database: Database, holder: str, clock: Clock, name: str = leader.SCHEDULER) -> Any:
    return leader.JobLease(database, name, ttl=TTL, holder=holder, clock=clock)


# Holders on other machines: only their expiry can say that they are gone.
ON_A, ON_B = "host-a:101:1", "host-b:202:2"


def test_one_holder_at_a_time_a_standby_after_expiry_and_a_stale_holder_cannot_write(
    settings: Settings,
) -> None:
    database = open_db(settings)
    clock = Clock()
    a, b = lease(database, ON_A, clock), lease(database, ON_B, clock)
    assert a.take() and a.term == 1
    assert not b.take() and not b.held
    assert a.take() and a.term == 1  # renewing keeps the term
    clock.after_expiry()
    assert b.take() and b.term == 2
    # The old holder finds out at its next renewal, or its next write.
    with database.session(write=True) as session, pytest.raises(LeaseLost):
        a.confirm(session)
    assert not a.renew() and not a.held
    b.release()
    assert rows(database, "SELECT holder, term FROM lease") == [(None, 2)]
    assert a.take() and a.term == 3  # let go: taken at once, without waiting for expiry
    database.close()


def test_a_holder_gone_from_this_machine_is_replaced_at_once(settings: Settings) -> None:
    database = open_db(settings)
    child = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    started = sends._start_time(child.pid)
    assert started is not None
    dead = f"{socket.gethostname()}:{child.pid}:{started}"
    clock = Clock()
    assert lease(database, dead, clock).take()
    assert child.stdin is not None
    child.stdin.close()
    child.wait(timeout=60)
    # Its lease has not expired, but its process is gone: no need to wait.
    assert leader.JobLease(database, leader.SCHEDULER, ttl=TTL).take()
    assert rows(database, "SELECT holder, term FROM lease") == [(sends.this_process(), 2)]
    database.close()


def race(settings: Settings, name: str, clock: Clock, host: str, contenders: int = 4) -> list[str]:
    """Workers on other machines all asking for the lease at once: those that got it."""
    barrier = threading.Barrier(contenders)
    won: list[str] = []

    def contend(i: int) -> None:
        database = open_db(settings)
        contender = lease(database, f"{host}-{i}:{i}:{i}", clock, name)
        barrier.wait(timeout=120)
        if contender.take():
            won.append(contender.holder)
        database.close()

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def test_workers_racing_for_a_lease_leave_exactly_one_holder(settings: Settings) -> None:
    open_db(settings).close()  # the database is made, and its keys stored, before the race
    clock = Clock()
    # The lease's row is new: one insert wins.
    assert len(race(settings, leader.SCHEDULER, clock, "first")) == 1
    assert race(settings, leader.SCHEDULER, clock, "while-held") == []
    # It expired: one compare-and-set wins.
    clock.after_expiry()
    assert len(race(settings, leader.SCHEDULER, clock, "after-expiry")) == 1


@pytest.fixture
def ready(cli: Any, newsletter: Path) -> Settings:
    make_list(cli, newsletter, "practitioners", addresses(3))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    return config.load(newsletter)


SLOT = dt.datetime(2099, 12, 1, 9, tzinfo=UTC)


def schedule(settings: Settings, database: Database) -> int:
    item = runner.schedule_once(
        settings, database, "2025-11", ["practitioners"], "2099-12-01 09:00", SLOT - dt.timedelta(1)
    )
    assert item.id is not None
    return item.id


def test_a_scheduler_that_stalls_and_is_replaced_starts_nothing(
    ready: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = open_db(ready)
    schedule(ready, database)
    clock = Clock()
    stalled, standby = lease(database, ON_A, clock), lease(database, ON_B, clock)
    assert stalled.take()
    checks = service.checks.require_clean

    def stall(*args: Any, **kwargs: Any) -> Any:
        # The scheduler stalls while it checks the issue, past its lease; a standby takes
        # over, and the stalled one then wakes up and goes on as if nothing happened.
        clock.after_expiry()
        assert standby.take()
        return checks(*args, **kwargs)

    monkeypatch.setattr(service.checks, "require_clean", stall)
    assert runner.run_due(ready, database, SLOT, lease=stalled) == []
    monkeypatch.undo()
    assert rows(database, "SELECT COUNT(*) FROM send") == [(0,)]
    (outcome,) = runner.run_due(ready, database, SLOT, lease=standby)
    assert outcome.sent and "3 of 3 sent" in outcome.outcome
    assert rows(database, "SELECT COUNT(*) FROM send") == [(1,)]
    assert rows(database, "SELECT status FROM schedule") == [("done",)]
    database.close()


def test_a_scheduler_that_dies_while_starting_a_slot_leaves_it_due_for_the_next(
    ready: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = open_db(ready)
    schedule(ready, database)
    advance = schedules.advance

    def die(*args: Any, **kwargs: Any) -> bool:
        # The slot is moved on and the send written, but the process dies before they
        # commit: neither happened.
        advance(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(schedules, "advance", die)
    with pytest.raises(KeyboardInterrupt):
        runner.run_due(ready, database, SLOT)
    monkeypatch.undo()
    assert rows(database, "SELECT COUNT(*) FROM send") == [(0,)]
    with database.session() as session:
        assert [s.id for s in schedules.due(session, SLOT)] != []
    (outcome,) = runner.run_due(ready, database, SLOT + dt.timedelta(seconds=30))
    assert outcome.sent
    assert rows(database, "SELECT COUNT(*) FROM send") == [(1,)]
    database.close()


def test_the_scheduler_starts_a_send_and_any_worker_runs_it_once(ready: Settings) -> None:
    database = open_db(ready)
    schedule(ready, database)
    scheduler = leader.JobLease(database, leader.SCHEDULER, ttl=TTL)
    assert scheduler.take()
    # The scheduler only starts it...
    assert runner.run_due(ready, database, SLOT, lease=scheduler, send=False) == []
    (item,) = runner.all_schedules(database)
    assert item.last_outcome.startswith("sending 2025-11 (send ")
    assert rows(database, "SELECT status FROM send") == [("new",)]
    # ...and another worker, which never decides anything, runs it.
    other = open_db(ready)
    (outcome,) = runner.run_started(ready, other)
    assert outcome.sent and outcome.schedule_id == item.id
    assert runner.run_started(ready, other) == []
    assert rows(database, "SELECT status FROM send") == [("sent",)]
    assert rows(database, "SELECT status FROM schedule") == [("done",)]
    assert len(list((ready.root / "outbox" / "2025-11").glob("*.eml"))) == 3
    other.close()
    database.close()
