"""Both ledger writers, and the compare-and-set rules that keep two processes apart.

The SQLite writer (prepared statements on the DB-API connection) is what every send on
SQLite uses; the Core writer is what other databases use. Both must leave the same rows.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

import pytest

from mailer import config
from mailer.errors import StateError
from mailer.scheduling import runner
from mailer.sending import service
from mailer.store import deliveries, ledger, schedules, sends
from mailer.store.database import open_db
from mailer.store.status import DeliveryStatus, SendStatus
from send_helpers import addresses, make_list, sql

UTC = dt.UTC
# The SQLite writer works on SQLite's DB-API connection only: it keeps SQLite in both passes.
WRITERS = [
    pytest.param(ledger.SQLiteLedgerWriter, marks=pytest.mark.sqlite_file),
    ledger.CoreLedgerWriter,
]


@pytest.fixture
def a_send(cli: Any, newsletter: Path) -> int:
    make_list(cli, newsletter, "practitioners", addresses(6))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    settings = config.load(newsletter)
    with open_db(settings) as database:
        send_id = service.create(settings, "2025-11", ["practitioners"], database=database)
        with database.session(write=True) as session:
            deliveries.fix_recipients(session, sends.get(session, send_id))
    return send_id


@pytest.mark.parametrize("writer", WRITERS)
def test_each_ledger_writer_records_claims_outcomes_and_the_heartbeat(
    newsletter: Path, a_send: int, writer: Any
) -> None:
    settings = config.load(newsletter)
    now = dt.datetime(2026, 12, 1, 9, 30, 15, 250000, tzinfo=UTC)
    with open_db(settings) as database:
        with database.session(write=True) as session:
            sends.claim(session, a_send, "host:1:1")
        ids = [row[0] for row in sql(newsletter, "SELECT id FROM delivery ORDER BY id")]
        backend = writer(database, a_send, "host:1:1")
        try:
            written = backend.write([], [], ids[:3], now)
            assert written == (True, ids[:3])
            assert sql(newsletter, "SELECT status FROM delivery WHERE id = ?", ids[0]) == [
                ("in-flight",)
            ]
            # A row claimed twice is not handed out twice.
            assert backend.write([], [], [ids[0]], None).claimed == []
            finals = [
                ("sent", 1, "<1.1.x@example.org>", "", now, now, ids[0]),
                ("failed-permanent", 1, "", "550 5.1.1 no such user", None, now, ids[1]),
            ]
            backend.write(finals, [(DeliveryStatus.PENDING.value, now, ids[2])], [], None)
        finally:
            backend.close()
    rows = sql(
        newsletter,
        "SELECT status, attempts, message_id, last_error, sent_at FROM delivery "
        "WHERE id IN (?, ?, ?) ORDER BY id",
        *ids[:3],
    )
    assert rows == [
        ("sent", 1, "<1.1.x@example.org>", "", "2026-12-01 09:30:15.250000"),
        ("failed-permanent", 1, "", "550 5.1.1 no such user", None),
        ("pending", 0, "", "", None),
    ]
    assert sql(newsletter, "SELECT heartbeat_at FROM send") == [("2026-12-01 09:30:15.250000",)]


@pytest.mark.parametrize("writer", WRITERS)
def test_a_claim_skips_whoever_can_no_longer_be_mailed(
    cli: Any, newsletter: Path, a_send: int, writer: Any
) -> None:
    # Fixed as recipients when the send started; then, before their rows were claimed:
    people = addresses(6)
    assert cli("subscribers", "unsubscribe", people[0]).exit_code == 0
    assert cli("subscribers", "unsubscribe", people[1], "--list", "practitioners").exit_code == 0
    query = "UPDATE subscriber SET status = ? WHERE email = ?"
    sql(newsletter, query, "bounced", people[2])
    sql(newsletter, query, "complained", people[3])
    assert cli("subscribers", "erase", people[4], "--yes").exit_code == 0
    settings = config.load(newsletter)
    with open_db(settings) as database:
        with database.session(write=True) as session:
            sends.claim(session, a_send, "host:1:1")
        ids = [row[0] for row in sql(newsletter, "SELECT id FROM delivery ORDER BY id")]
        backend = writer(database, a_send, "host:1:1")
        try:
            written = backend.write([], [], ids, None)
        finally:
            backend.close()
    rows = dict(sql(newsletter, "SELECT email, status || ': ' || last_error FROM delivery"))
    assert rows == {
        people[0]: "skipped: unsubscribed",
        people[1]: f"skipped: {ledger.OFF_THE_LISTS}",
        people[2]: "skipped: bounced",
        people[3]: "skipped: complained",
        # The erased person's pending row was deleted with their data.
        people[5]: "in-flight: ",
    }
    (claimed,) = written.claimed
    assert sql(newsletter, "SELECT email FROM delivery WHERE id = ?", claimed) == [(people[5],)]


def test_a_lost_compare_and_set_on_a_send_is_refused(newsletter: Path, a_send: int) -> None:
    settings = config.load(newsletter)
    with open_db(settings) as database:
        with database.session(write=True) as session:
            sends.claim(session, a_send, "host:1:1")
        # A second process that read "sending" and tries to finish it loses.
        with database.session(write=True) as session, pytest.raises(StateError):
            sends.transition(session, a_send, SendStatus.SENT, owner="host:2:2")
        # Nothing moves from sent back to new; cancelled needs new or paused.
        with database.session(write=True) as session, pytest.raises(StateError) as refused:
            sends.transition(session, a_send, SendStatus.CANCELLED)
        assert "is sending and cannot become cancelled" in str(refused.value)
    assert sql(newsletter, "SELECT status, claimed_by FROM send") == [("sending", "host:1:1")]


def test_two_workers_claiming_one_slot_leave_one_winner(newsletter: Path, cli: Any) -> None:
    make_list(cli, newsletter, "practitioners", addresses(2))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    settings = config.load(newsletter)
    database = open_db(settings)
    item = runner.schedule_once(
        settings,
        database,
        "2025-11",
        ["practitioners"],
        "2099-12-01 09:00",
        dt.datetime(2099, 11, 1, tzinfo=UTC),
    )
    now = dt.datetime(2099, 12, 1, 9, 1, tzinfo=UTC)
    wins: list[bool] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        barrier.wait()
        wins.append(schedules.claim_slot(open_db(settings), item, now, None))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False, False, False, True]
