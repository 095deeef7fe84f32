"""Both ledger writers, and the compare-and-set rules that keep processes apart.

The SQLite writer (prepared statements on the DB-API connection) is what every send on
SQLite uses; the PostgreSQL writer (prepared statements in one pipeline on the psycopg
connection) what every send on PostgreSQL uses, in the PostgreSQL pass; the Core writer
the one they are measured against, in both passes. All must leave the same rows, marked
with the worker that claimed them, and none may write for a worker that lost its lease.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import ON_POSTGRES
from mailer import config
from mailer.errors import StateError
from mailer.operations import service
from mailer.scheduling import runner
from mailer.sending import workers
from mailer.store import deliveries, eligibility, ledger_writer, schedules, sends
from mailer.store.database import open_db
from mailer.store.models import as_utc
from mailer.store.status import DeliveryStatus, SendStatus
from send_helpers import addresses, make_list, sql

UTC = dt.UTC
# The SQLite writer works on SQLite's DB-API connection only: it keeps SQLite in both passes.
# The PostgreSQL writer works on psycopg's connection only: it is a case of the PostgreSQL
# pass only (not a skipped case of the SQLite pass).
POSTGRES_WRITERS = [ledger_writer.PostgresLedgerWriter] if ON_POSTGRES else []
WRITERS = [
    pytest.param(ledger_writer.SQLiteLedgerWriter, marks=pytest.mark.sqlite_file),
    ledger_writer.CoreLedgerWriter,
    *POSTGRES_WRITERS,
]
# The writers that claim the next rows by number (FOR UPDATE SKIP LOCKED on PostgreSQL).
BY_NUMBER = [ledger_writer.CoreLedgerWriter, *POSTGRES_WRITERS]


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


ME = "host:1:1/1"
LEASE = dt.timedelta(seconds=30)


def _another_send(cli: Any, newsletter: Path, slug: str, emails: list[str]) -> int:
    """A list of these people, and a send of the other issue to it with its ledger rows."""
    make_list(cli, newsletter, slug, emails, name=slug.title())
    assert cli("approve", "2021-12", "--by", "Sam Patel").exit_code == 0
    settings = config.load(newsletter)
    with open_db(settings) as database:
        send_id = service.create(settings, "2021-12", [slug], database=database)
        with database.session(write=True) as session:
            deliveries.fix_recipients(session, sends.get(session, send_id))
    return send_id


def _join(database: Any, send_id: int, worker: str = ME) -> None:
    workers.join(database, send_id, worker, 2, LEASE)


@pytest.mark.parametrize("writer", WRITERS)
def test_each_ledger_writer_records_claims_outcomes_and_the_lease(
    newsletter: Path, a_send: int, writer: Any
) -> None:
    settings = config.load(newsletter)
    now = dt.datetime.now(UTC)
    with open_db(settings) as database:
        _join(database, a_send)
        (before,) = sql(newsletter, "SELECT expires_at FROM send_worker")
        ids = [row[0] for row in sql(newsletter, "SELECT id FROM delivery ORDER BY id")]
        backend = writer(database, a_send, ME, dt.timedelta(minutes=10))
        try:
            written = backend.write([], [], ids[:3], now)
            assert written.ours and written.claimed == ids[:3]
            assert sql(
                newsletter, "SELECT status, claimed_by FROM delivery WHERE id = ?", ids[0]
            ) == [("in-flight", ME)]
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
        "SELECT status, attempts, message_id, last_error, claimed_by FROM delivery "
        "WHERE id IN (?, ?, ?) ORDER BY id",
        *ids[:3],
    )
    assert rows == [
        ("sent", 1, "<1.1.x@example.org>", "", ME),
        ("failed-permanent", 1, "", "550 5.1.1 no such user", ME),
        ("pending", 0, "", "", None),  # handed back: anyone's to claim
    ]
    (sent_at,) = sql(newsletter, "SELECT sent_at FROM delivery WHERE id = ?", ids[0])[0]
    assert as_utc(_moment(sent_at)) == now
    # The beat renewed the lease for the writer's ten minutes.
    (after,) = sql(newsletter, "SELECT expires_at FROM send_worker")
    assert _moment(after[0]) - _moment(before[0]) > dt.timedelta(minutes=9)


def _moment(value: Any) -> dt.datetime:
    found = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(found, dt.datetime)
    return as_utc(found)


@pytest.mark.parametrize("writer", WRITERS)
def test_a_worker_presumed_dead_claims_nothing_and_its_late_outcomes_change_nothing(
    newsletter: Path, a_send: int, writer: Any
) -> None:
    settings = config.load(newsletter)
    now = dt.datetime.now(UTC)
    with open_db(settings) as database:
        _join(database, a_send)
        ids = [row[0] for row in sql(newsletter, "SELECT id FROM delivery ORDER BY id")]
        backend = writer(database, a_send, ME)
        try:
            assert backend.write([], [], ids[:2], now).claimed == ids[:2]
            # Another worker found this one dead: its lease is gone, its rows unknown.
            sql(newsletter, "DELETE FROM send_worker")
            with database.session(write=True) as session:
                assert deliveries.orphans_to_unknown(session.connection(), a_send)
            late = backend.write(
                [("sent", 1, "<late@example.org>", "", now, now, ids[0])],
                [(DeliveryStatus.PENDING.value, now, ids[1])],
                ids[2:4],
                now,
                want=2,
            )
        finally:
            backend.close()
    assert not late.ours and late.claimed == [] and list(late.rows) == []
    assert sql(newsletter, "SELECT status FROM delivery ORDER BY id") == [
        ("unknown",),
        ("unknown",),
        *[("pending",)] * 4,
    ]


@pytest.mark.parametrize("writer", BY_NUMBER)
def test_claims_by_number_take_each_row_once_and_check_each_person(
    cli: Any, newsletter: Path, a_send: int, writer: Any
) -> None:
    """The claims PostgreSQL uses (FOR UPDATE SKIP LOCKED; on SQLite the same statement
    without it): the next pending rows, in ledger order, none to two workers."""
    people = addresses(6)
    assert cli("subscribers", "unsubscribe", people[1]).exit_code == 0
    # people[2] is also on a list that another send went to: only this send's lists count.
    _another_send(cli, newsletter, "governors", [people[2]])
    assert cli("subscribers", "unsubscribe", people[2], "--list", "practitioners").exit_code == 0
    settings = config.load(newsletter)
    with open_db(settings) as database:
        _join(database, a_send, "a:1:1/1")
        _join(database, a_send, "b:2:2/1")
        first = writer(database, a_send, "a:1:1/1")
        second = writer(database, a_send, "b:2:2/1")
        try:
            a = first.write([], [], [], None, want=3)
            b = second.write([], [], [], None, want=3)
            rest = first.write([], [], [], None, want=3)
        finally:
            first.close()
            second.close()
    assert [r.email for r in a.rows] == [people[0]] and a.found == 3
    assert [r.email for r in b.rows] == people[3:6] and b.found == 3
    assert list(rest.rows) == [] and rest.found == 0  # nothing left: the claimer is done
    query = "SELECT email, claimed_by FROM delivery WHERE send_id = ?"
    assert dict(sql(newsletter, query, a_send)) == {
        people[0]: "a:1:1/1",
        people[1]: "a:1:1/1",  # skipped by the claim that found them unsubscribed
        people[2]: "a:1:1/1",  # skipped: off this send's list, on another send's
        people[3]: "b:2:2/1",
        people[4]: "b:2:2/1",
        people[5]: "b:2:2/1",
    }


@pytest.mark.parametrize("writer", BY_NUMBER)
def test_claims_go_on_from_the_last_claim_and_come_back_for_rows_handed_back(
    newsletter: Path, a_send: int, writer: Any
) -> None:
    """Claims by number go on along the ledger (never over the rows already done again);
    a row handed back behind them is claimed once nothing is left ahead."""
    people = addresses(6)
    settings = config.load(newsletter)
    with open_db(settings) as database:
        _join(database, a_send)
        backend = writer(database, a_send, ME)
        now = dt.datetime.now(UTC)

        def claim(marks: list[Any] | None = None) -> list[str]:
            written = backend.write([], marks or [], [], None, want=2)
            return [r.email for r in written.rows]

        try:
            first = claim()
            assert first == people[0:2]
            assert claim() == people[2:4]
            (back,) = [
                i for (i,) in sql(newsletter, "SELECT id FROM delivery WHERE email = ?", people[1])
            ]
            # people[1]'s row is handed back untried (as when a worker stops).
            assert claim([(DeliveryStatus.PENDING.value, now, back)]) == people[4:6]
            assert claim() == [people[1]]
            assert claim() == []
        finally:
            backend.close()
    statuses = dict(sql(newsletter, "SELECT email, status FROM delivery WHERE send_id = ?", a_send))
    assert statuses == {p: "in-flight" for p in people}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_claim_skips_whoever_can_no_longer_be_mailed(
    cli: Any, newsletter: Path, a_send: int, writer: Any
) -> None:
    # Fixed as recipients when the send started; then, before their rows were claimed:
    people = addresses(6)
    # people[1] is also on a list that another send went to: only this send's lists count.
    _another_send(cli, newsletter, "governors", [people[1]])
    assert cli("subscribers", "unsubscribe", people[0]).exit_code == 0
    assert cli("subscribers", "unsubscribe", people[1], "--list", "practitioners").exit_code == 0
    query = "UPDATE subscriber SET status = ? WHERE email = ?"
    sql(newsletter, query, "bounced", people[2])
    sql(newsletter, query, "complained", people[3])
    assert cli("subscribers", "erase", people[4], "--yes").exit_code == 0
    settings = config.load(newsletter)
    with open_db(settings) as database:
        _join(database, a_send)
        ids = [
            row[0]
            for row in sql(
                newsletter, "SELECT id FROM delivery WHERE send_id = ? ORDER BY id", a_send
            )
        ]
        backend = writer(database, a_send, ME)
        try:
            written = backend.write([], [], ids, None)
        finally:
            backend.close()
    rows = dict(
        sql(
            newsletter,
            "SELECT email, status || ': ' || last_error FROM delivery WHERE send_id = ?",
            a_send,
        )
    )
    assert rows == {
        people[0]: "skipped: unsubscribed",
        people[1]: f"skipped: {eligibility.OFF_THE_LISTS}",
        people[2]: "skipped: bounced",
        people[3]: "skipped: complained",
        # The erased person's pending row was deleted with their data.
        people[5]: "in-flight: ",
    }
    (claimed,) = written.claimed
    assert sql(newsletter, "SELECT email FROM delivery WHERE id = ?", claimed) == [(people[5],)]


def test_a_send_is_finished_once_and_moves_only_as_its_rules_allow(
    newsletter: Path, a_send: int
) -> None:
    settings = config.load(newsletter)
    with open_db(settings) as database:
        _join(database, a_send)
        # Two workers that both read "sending" and both try to finish it: one wins.
        with database.session(write=True) as session:
            assert sends.try_transition(session, a_send, SendStatus.SENT)
            assert not sends.try_transition(session, a_send, SendStatus.SENT)
        # Nothing moves from sent to new or cancelled.
        with database.session(write=True) as session, pytest.raises(StateError) as refused:
            sends.transition(session, a_send, SendStatus.CANCELLED)
        assert "is sent and cannot become cancelled" in str(refused.value)
    assert sql(newsletter, "SELECT status FROM send") == [("sent",)]


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


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows every node of an EXPLAIN ANALYZE plan produced or threw away, all loops."""
    here = plan.get("Actual Rows", 0) * plan.get("Actual Loops", 1)
    here += plan.get("Rows Removed by Filter", 0) + plan.get("Rows Removed by Join Filter", 0)
    return int(here) + sum(_rows_read(child) for child in plan.get("Plans", []))


def test_a_claim_late_in_a_large_send_reads_only_about_the_rows_it_claims(
    cli: Any, newsletter: Path, postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL (in both passes of the suite), 2,700 rows into a 3,000-person send, a
    claim of 8 rows reads a few rows per row it claims: not the rows already sent (the
    planner walking the primary key and filtering) nor the whole list (a hashed subplan
    over every membership), either of which makes each claim slower as the send goes on."""
    from mailer.store import joining
    from mailer.store import people as store_people
    from mailer.store.models import LawfulBasis

    with postgres.fresh_database() as url:
        monkeypatch.setenv("MAILER_DATABASE_URL", url)
        settings = config.load(newsletter)
        with open_db(settings) as database, database.session(write=True) as session:
            lst = store_people.create_list(session, "everyone", "Everyone")
            candidates = [joining.Candidate(a) for a in addresses(3000)]
            joining.subscribe_many(
                session, lst, candidates, basis=LawfulBasis.PUBLIC_TASK, source="test"
            )
        assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
        with open_db(settings) as database:
            send_id = service.create(settings, "2025-11", ["everyone"], database=database)
            with database.session(write=True) as session:
                deliveries.fix_recipients(session, sends.get(session, send_id))
            sql(newsletter, "UPDATE delivery SET status = 'sent' WHERE id <= 2700")
            _join(database, send_id)
            backend = ledger_writer.CoreLedgerWriter(database, send_id, ME)
            try:
                first = backend.write([], [], [], None, want=8)  # from the start, once
                assert len(first.rows) == 8 and backend.after > 2700
                statement = backend.claim_statement(8, backend.after)
                with database.writer.connect() as conn:
                    compiled = statement.compile(
                        dialect=conn.dialect, compile_kwargs={"literal_binds": True}
                    )
                    (plan,) = conn.execute(
                        sa.text(f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}")
                    ).scalar_one()
                    conn.rollback()
            finally:
                backend.close()
    assert _rows_read(plan["Plan"]) <= 8 * 12, json.dumps(plan, indent=1)


def test_a_send_starts_while_an_import_holds_the_statistics_of_the_people(
    cli: Any, newsletter: Path, postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL (in both passes): an import that refreshed the people's statistics
    holds them until it commits; a send written meanwhile goes ahead without waiting for
    it (it would otherwise wait for the lock and fail as "busy")."""
    with postgres.fresh_database() as url:
        monkeypatch.setenv("MAILER_DATABASE_URL", url)
        make_list(cli, newsletter, "practitioners", addresses(6))
        assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
        settings = config.load(newsletter)
        importing = sa.create_engine(url)
        try:
            with importing.connect() as other:
                other.execute(sa.text("ANALYZE subscriber, membership"))  # and stays open
                with open_db(settings) as database:
                    send_id = service.create(
                        settings, "2025-11", ["practitioners"], database=database
                    )
                    with database.session(write=True) as session:
                        total = deliveries.fix_recipients(session, sends.get(session, send_id))
                other.rollback()
        finally:
            importing.dispose()
    assert total == 6
