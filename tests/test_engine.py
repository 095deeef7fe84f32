"""The sending engine against a scripted transport and a fake clock.

Rate limits, retries with backoff, dropped lines, an unavailable server, failures in a
row and pauses are scripted here in ``MockTransport(handler)``; waits go through
:class:`fake_clock.FakeClock`, so every test takes milliseconds and none depends on the
machine's speed. The ledger is a real SQLite file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fake_clock import FakeClock, busiest_window
from mailer import config
from mailer.config import Settings, WorkerSettings
from mailer.errors import (
    DeliveryUnknown,
    PermanentSendError,
    StateError,
    TemporarySendError,
    TransportUnavailable,
)
from mailer.operations import service
from mailer.scheduling import resume
from mailer.sending import engine, workers
from mailer.sending.engine import RunResult
from mailer.sending.ledger import BATCH
from mailer.sending.transports import Envelope, Mailbag, MockTransport
from mailer.store.database import Database, open_db
from mailer.store.status import PauseReason, SendStatus
from send_helpers import addresses, ledger, make_list, sql

SLUG = "2025-11"


@pytest.fixture
def people(cli: Any, newsletter: Path) -> list[str]:
    emails = addresses(40)
    make_list(cli, newsletter, "practitioners", emails)
    assert cli("approve", SLUG, "--by", "Sam Patel").exit_code == 0
    return emails


def tuned(settings: Settings, **transport: Any) -> Settings:
    """The settings with transport options (and SMTP rate limits) replaced."""
    smtp = {k: transport.pop(k) for k in list(transport) if k.startswith("rate_")}
    t = dataclasses.replace(settings.transport, **transport)
    t = dataclasses.replace(t, smtp=dataclasses.replace(t.smtp, **smtp))
    return dataclasses.replace(settings, transport=t)


_OPENED: list[Database] = []


@pytest.fixture(autouse=True)
def _close_databases() -> Iterator[None]:
    """Every database a Run opened is closed with its test (PostgreSQL counts connections)."""
    yield
    while _OPENED:
        _OPENED.pop().close()


class Run:
    """One send driven through the engine: the bag of accepted messages and the clock."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database: Database = open_db(settings)
        _OPENED.append(self.database)
        self.bag = Mailbag()
        self.clock = FakeClock()
        self.send_id = service.create(settings, SLUG, ["practitioners"], database=self.database)

    def __call__(
        self,
        handler: Callable[[Envelope], str | None] | None = None,
        *,
        connections: int = 2,
        on_open: Callable[[], None] | None = None,
        stop: threading.Event | None = None,
    ) -> RunResult:
        def factory() -> MockTransport:
            return MockTransport(handler, self.bag, on_open=on_open)

        return engine.run(
            self.settings,
            self.database,
            self.send_id,
            factory,
            connections=connections,
            clock=self.clock,
            stop=stop,
        )


def paused_after(run: Run, count: int) -> Callable[[Envelope], None]:
    """A server that runs `mailer pause` (as from another process) once it has ``count``
    messages."""
    once = threading.Lock()

    def server(envelope: Envelope) -> None:
        if len(run.bag.messages) >= count and once.acquire(blocking=False):
            service.pause(run.settings, SLUG)

    return server


def test_every_recipient_gets_one_message_and_the_ledger_says_so(
    settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(settings)
    result = run(connections=4)
    assert result.status == SendStatus.SENT
    assert Counter(run.bag.recipients()) == Counter(people)
    assert set(ledger(newsletter).values()) == {"sent"}
    message_ids = {row[0] for row in sql(newsletter, "SELECT message_id FROM delivery")}
    assert len(message_ids) == 40


def test_the_rate_per_second_is_reached_and_never_exceeded(
    settings: Settings, people: list[str]
) -> None:
    run = Run(tuned(settings, rate_per_second=7.0))
    times: list[float] = []

    def server(envelope: Envelope) -> None:
        times.append(run.clock.time())

    assert run(server, connections=1).status == SendStatus.SENT
    assert len(times) == 40
    assert busiest_window(times, 1.0) == 7
    assert max(times) - min(times) == pytest.approx(39 / 7, abs=0.01)


def test_the_hourly_rate_counts_what_was_sent_before_a_resume(
    settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(tuned(settings, rate_per_hour=15))
    times: list[float] = []
    stop = threading.Event()

    def server(envelope: Envelope) -> None:
        times.append(run.clock.time())
        if len(times) == 10:
            stop.set()  # the worker running it is stopped

    first = run(server, connections=1, stop=stop)
    assert first.status == SendStatus.PAUSED
    # The resume reads from the ledger when the first run's messages went (real times), so
    # the clock is set to the real time now for the window to include them.
    before = [
        (dt.datetime.fromisoformat(t) if isinstance(t, str) else t)
        .replace(tzinfo=dt.UTC)
        .timestamp()
        for (t,) in sql(newsletter, "SELECT sent_at FROM delivery WHERE status = 'sent'")
    ]
    run.clock.now = max(before)
    times.clear()
    second = run(server, connections=2)
    assert second.status == SendStatus.SENT
    assert len(times) == first.counts["pending"]
    assert busiest_window(before + times, 3600.0) == 15


def test_a_temporary_failure_is_retried_after_a_backoff_on_the_clock(
    settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(tuned(settings, retry_backoff=30.0, max_attempts=3))
    tries: Counter[str] = Counter()

    def server(envelope: Envelope) -> None:
        tries[envelope.to] += 1
        if envelope.to == people[3] and tries[envelope.to] < 3:
            raise TemporarySendError("451 4.3.0 try again later")

    result = run(server)
    assert result.status == SendStatus.SENT
    assert tries[people[3]] == 3
    assert sorted(run.clock.slept)[-2:] == [30.0, 60.0]  # 30 s, then twice that
    assert sql(newsletter, "SELECT attempts FROM delivery WHERE email = ?", people[3]) == [(3,)]


def test_a_recipient_that_keeps_failing_is_failed_temporary_and_retried_on_request(
    cli: Any, settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(tuned(settings, max_attempts=3))

    def server(envelope: Envelope) -> None:
        if envelope.to == people[5]:
            raise TemporarySendError("451 4.3.0 mailbox busy")

    result = run(server)
    assert result.status == SendStatus.SENT  # finished; one recipient failed
    assert ledger(newsletter)[people[5]] == "failed-temporary"
    assert (
        "failed-temporary after 3 attempt(s): 451 4.3.0 mailbox busy" in cli("status", SLUG).stdout
    )


def test_a_refused_address_bounces_and_a_refused_message_does_not(
    settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(settings)

    def server(envelope: Envelope) -> None:
        if envelope.to == people[1]:
            raise PermanentSendError("550 5.1.1 no such user", bounce=True)
        if envelope.to == people[2]:
            raise PermanentSendError("554 5.7.1 message refused", bounce=False)

    run(server)
    status = ledger(newsletter)
    assert status[people[1]] == status[people[2]] == "failed-permanent"
    subscribers = dict(sql(newsletter, "SELECT email, status FROM subscriber"))
    assert subscribers[people[1]] == "bounced"
    assert subscribers[people[2]] == "active"


def test_a_dropped_line_is_retried_and_nothing_is_lost(
    settings: Settings, people: list[str]
) -> None:
    run = Run(settings)
    dropped = threading.Event()

    def server(envelope: Envelope) -> None:
        if not dropped.is_set() and envelope.to == people[7]:
            dropped.set()
            raise TemporarySendError("connection to relay lost")

    assert run(server).status == SendStatus.SENT
    assert set(run.bag.recipients()) == set(people)


def test_an_unavailable_server_pauses_with_nobody_failed_and_resume_finishes(
    settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(settings)

    def down() -> None:
        raise TransportUnavailable("cannot connect to the SMTP server relay:25")

    first = run(on_open=down)
    assert first.status == SendStatus.PAUSED
    assert sql(newsletter, "SELECT pause_reason FROM send") == [(PauseReason.UNAVAILABLE,)]
    assert set(ledger(newsletter).values()) == {"pending"}
    assert run.bag.messages == []
    second = run()
    assert second.status == SendStatus.SENT
    assert Counter(run.bag.recipients()) == Counter(people)


def test_too_many_failures_in_a_row_pause_the_send(
    settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(tuned(settings, pause_after_errors=4))

    def server(envelope: Envelope) -> None:
        raise PermanentSendError("550 5.1.1 no such user")

    result = run(server, connections=1)
    assert result.status == SendStatus.PAUSED
    assert "4 failures in a row" in result.reason
    counts = Counter(ledger(newsletter).values())
    assert counts["failed-permanent"] == 4 and counts["pending"] == 36


def test_mailer_pause_from_elsewhere_stops_the_send_and_resume_sends_the_rest_once(
    settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(settings)
    server = paused_after(run, 9)
    first = run(server)
    assert first.status == SendStatus.PAUSED
    assert first.reason == "paused by mailer pause"
    states = Counter(ledger(newsletter).values())
    assert states["in-flight"] == 0
    assert states["sent"] == len(run.bag.messages) < 40
    second = run()
    assert second.status == SendStatus.SENT
    assert Counter(run.bag.recipients()) == Counter(people)


def test_a_stopping_worker_pauses_the_send_for_the_next_worker(
    settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(settings)
    stop = threading.Event()

    def server(envelope: Envelope) -> None:
        if len(run.bag.messages) == 5:
            stop.set()

    first = run(server, stop=stop)
    assert first.status == SendStatus.PAUSED
    assert sql(newsletter, "SELECT pause_reason FROM send") == [(PauseReason.WORKER_STOPPED,)]
    assert run().status == SendStatus.SENT
    assert Counter(run.bag.recipients()) == Counter(people)


def test_a_bug_in_one_delivery_fails_that_recipient_alone(
    settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(settings)

    def server(envelope: Envelope) -> None:
        if envelope.to == people[0]:
            raise KeyError("surprise")

    assert run(server).status == SendStatus.SENT
    assert ledger(newsletter)[people[0]] == "failed-temporary"
    assert len(run.bag.messages) == 39


def test_a_second_run_of_a_send_joins_it_and_nobody_gets_two_copies(
    settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(settings)
    joined: list[RunResult] = []

    def server(envelope: Envelope) -> None:
        if len(run.bag.messages) == 3 and not joined:
            # Another worker joins while this one has rows in flight, and sends the rest.
            other = config.load(settings.root)
            with open_db(other) as database:
                joined.append(
                    engine.run(
                        other,
                        database,
                        run.send_id,
                        lambda: MockTransport(None, run.bag),
                        connections=2,
                        clock=FakeClock(),
                    )
                )

    assert run(server).status == SendStatus.SENT
    (second,) = joined
    # It left the rows the first worker held to it, and the send to finish.
    assert second.status == SendStatus.SENDING and second.others == 1
    assert Counter(run.bag.recipients()) == Counter(people)
    workers = sql(newsletter, "SELECT DISTINCT claimed_by FROM delivery")
    assert len(workers) == 2
    assert sql(newsletter, "SELECT count(*) FROM send_worker") == [(0,)]


def test_an_unknown_outcome_is_recorded_never_retried_and_reported(
    cli: Any, settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(settings)
    tries: Counter[str] = Counter()

    def server(envelope: Envelope) -> None:
        tries[envelope.to] += 1
        if envelope.to == people[6]:
            raise DeliveryUnknown("relay:25 received the whole message and sent no reply")

    result = run(server)
    assert result.status == SendStatus.SENT  # finished: nothing is left to try
    assert tries[people[6]] == 1
    assert ledger(newsletter)[people[6]] == "unknown"
    assert result.counts["unknown"] == 1 and result.counts["sent"] == 39
    (report,) = json.loads(cli("status", SLUG, "--json").stdout)
    assert report["counts"]["unknown"] == 1 and report["unknown"] == [people[6]]
    # The Message-ID is kept, so the copy can be traced in the relay's logs.
    assert sql(newsletter, "SELECT message_id FROM delivery WHERE email = ?", people[6])[0][0]


def test_each_row_is_in_flight_before_its_message_goes_and_no_more_than_a_batch_each(
    settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(settings)
    wrong: list[str] = []
    most = 0

    def server(envelope: Envelope) -> None:
        nonlocal most
        rows = dict(sql(newsletter, "SELECT email, status FROM delivery"))
        if rows[envelope.to] != "in-flight":
            wrong.append(envelope.to)
        most = max(most, Counter(rows.values())["in-flight"])

    assert run(server, connections=2).status == SendStatus.SENT
    assert wrong == []
    assert 1 <= most <= 2 * BATCH  # what a crash at the worst moment could leave


def test_who_unsubscribes_while_a_send_is_paused_is_skipped_on_resume(
    cli: Any, settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(settings)
    stop = threading.Event()

    def server(envelope: Envelope) -> None:
        if len(run.bag.messages) == 4:
            stop.set()  # an outage pauses the send; the worker will resume it

    assert run(server, connections=1, stop=stop).status == SendStatus.PAUSED
    later = people[30:34]
    assert cli("subscribers", "unsubscribe", later[0]).exit_code == 0
    assert cli("subscribers", "unsubscribe", later[1], "--list", "practitioners").exit_code == 0
    sql(newsletter, "UPDATE subscriber SET status = 'bounced' WHERE email = ?", later[2])
    sql(newsletter, "UPDATE subscriber SET status = 'complained' WHERE email = ?", later[3])
    second = run(connections=2)
    assert second.status == SendStatus.SENT
    got = Counter(run.bag.recipients())
    assert got == Counter(p for p in people if p not in later)
    assert second.counts["skipped"] == 4
    assert {ledger(newsletter)[p] for p in later} == {"skipped"}
    shown = cli("status", SLUG).stdout
    assert "skipped           4" in shown


def test_who_unsubscribes_during_a_send_is_not_mailed(
    cli: Any, settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(settings)
    last = people[-1]

    def server(envelope: Envelope) -> None:
        if len(run.bag.messages) == 0:
            # One-click from the last person on the list, while the first goes out.
            assert cli("subscribers", "unsubscribe", last).exit_code == 0

    assert run(server, connections=2).status == SendStatus.SENT
    assert last not in run.bag.recipients()
    assert ledger(newsletter)[last] == "skipped"
    assert len(run.bag.messages) == 39


def _crash(newsletter: Path, rows: int) -> list[str]:
    """Leave the send as `kill -9` would: ``rows`` messages in flight with a worker on
    another machine whose lease has long expired."""
    found = sql(newsletter, "SELECT id, email FROM delivery WHERE status = 'pending' ORDER BY id")
    chosen = found[:rows]
    for delivery_id, _ in chosen:
        sql(
            newsletter,
            "UPDATE delivery SET status = 'in-flight', claimed_by = 'elsewhere:1:1/1' WHERE id = ?",
            delivery_id,
        )
    sql(newsletter, "UPDATE send SET status = 'sending'")
    long_ago = "2000-01-01 00:00:00"
    sql(
        newsletter,
        "INSERT INTO send_worker (send_id, worker, connections, joined_at, heartbeat_at, "
        "expires_at) SELECT id, 'elsewhere:1:1/1', 2, ?, ?, ? FROM send",
        long_ago,
        long_ago,
        long_ago,
    )
    return [email for _, email in chosen]


def test_rows_a_crash_left_in_flight_become_unknown_and_go_again_only_when_asked(
    cli: Any, settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(settings)
    stop = threading.Event()

    def server(envelope: Envelope) -> None:
        if len(run.bag.messages) == 10:
            stop.set()

    run(server, stop=stop)
    crashed = _crash(newsletter, 3)
    second = run()
    assert second.status == SendStatus.SENT
    assert second.unknown_in_flight == crashed
    assert not set(crashed) & set(run.bag.recipients())  # not sent again on their own
    assert {ledger(newsletter)[e] for e in crashed} == {"unknown"}
    assert "Outcome unknown" in cli("status", SLUG).stdout
    count, third = service.resend_unknown(
        settings, SLUG, factory=lambda: MockTransport(None, run.bag)
    )
    assert count == 3 and third.status == SendStatus.SENT
    assert Counter(run.bag.recipients()) == Counter(people)


def test_cancelling_after_a_crash_leaves_nobody_out_of_the_next_send(
    cli: Any, settings: Settings, people: list[str], newsletter: Path
) -> None:
    # Through SMTP: a send through the outbox is a rehearsal that a later send ignores.
    settings = tuned(settings, name="smtp")
    run = Run(settings)
    stop = threading.Event()

    def server(envelope: Envelope) -> None:
        if len(run.bag.messages) == 10:
            stop.set()

    run(server, stop=stop)
    crashed = _crash(newsletter, 3)
    assert cli("pause", SLUG).exit_code == 0
    assert cli("cancel", SLUG).exit_code == 0
    assert {ledger(newsletter)[e] for e in crashed} == {"unknown"}  # never "sent"
    before = Counter(run.bag.recipients())
    again = Run(settings)
    assert again().status == SendStatus.SENT
    # Everyone not recorded as sent is mailed now, the three of unknown outcome included.
    assert Counter(again.bag.recipients()) == Counter(p for p in people if p not in before)
    assert set(crashed) <= set(again.bag.recipients())


def test_someone_who_unsubscribes_during_a_send_is_skipped_when_their_turn_comes(
    cli: Any, settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(settings)
    once = threading.Lock()
    done = threading.Event()
    # Beyond the rows the connections claim first (a batch each): claimed, and checked,
    # only after these people have left.
    leaving = {people[2 * BATCH], people[2 * BATCH + 1], people[39]}

    def connecting() -> None:
        # The recipients are fixed by now; they leave before their turn comes, while every
        # connection waits with its first message in hand.
        if once.acquire(blocking=False):
            for email in sorted(leaving):
                r = cli("subscribers", "unsubscribe", email)
                assert r.exit_code == 0, r.output
            done.set()
        assert done.wait(60)

    result = run(on_open=connecting)
    assert result.status == SendStatus.SENT
    assert leaving.isdisjoint(run.bag.recipients())
    assert Counter(run.bag.recipients()) == Counter(p for p in people if p not in leaving)
    status = ledger(newsletter)
    assert {e for e, s in status.items() if s == "skipped"} == leaving
    assert result.counts["skipped"] == 3
    assert "skipped           3" in cli("status", SLUG).stdout


def test_a_send_paused_while_people_leave_skips_them_on_resume(
    cli: Any, settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(settings)
    server = paused_after(run, 5)
    assert run(server).status == SendStatus.PAUSED
    sent_before = set(run.bag.recipients())
    left = [p for p in people if p not in sent_before][-3:]
    for email in left:
        assert cli("subscribers", "unsubscribe", email, "--list", "practitioners").exit_code == 0
    assert run().status == SendStatus.SENT
    assert set(left).isdisjoint(run.bag.recipients())
    assert {e for e, s in ledger(newsletter).items() if s == "skipped"} == set(left)


def test_a_worker_that_took_a_send_up_leaves_it_as_it_is_if_it_was_paused_or_finished_since(
    settings: Settings, people: list[str], newsletter: Path
) -> None:
    # A worker saw the send sending with rows nobody had claimed and chose to join it; in
    # the moment before it joined, a person paused the send, or its last worker finished it.
    run = Run(settings)
    server = paused_after(run, 9)
    assert run(server).status == SendStatus.PAUSED
    sent = len(run.bag.messages)

    def join_as_seen() -> None:
        engine.run(
            settings,
            run.database,
            run.send_id,
            lambda: MockTransport(None, run.bag),
            seen=workers.SendAsSeen(SendStatus.SENDING),
        )

    with pytest.raises(StateError, match="is paused now, no longer sending"):
        join_as_seen()
    assert sql(newsletter, "SELECT status, pause_reason FROM send") == [("paused", "operator")]
    assert len(run.bag.messages) == sent
    # The person resumes it; it finishes; a worker that saw it sending does not reopen it.
    assert run().status == SendStatus.SENT
    finished = sql(newsletter, "SELECT status, finished_at FROM send")
    with pytest.raises(StateError, match="is sent now, no longer sending"):
        join_as_seen()
    assert sql(newsletter, "SELECT status, finished_at FROM send") == finished
    assert sql(newsletter, "SELECT count(*) FROM send_worker") == [(0,)]
    assert Counter(run.bag.recipients()) == Counter(people)


def test_a_worker_joins_a_live_send_only_if_it_helps_and_takes_over_a_dead_one_anyway(
    settings: Settings, people: list[str], newsletter: Path
) -> None:
    run = Run(settings)
    # Another machine's worker holds the send, alive (its lease runs for minutes), with two
    # messages in hand.
    workers.join(run.database, run.send_id, "elsewhere:7:7/1", 4, dt.timedelta(minutes=5))
    held = people[:2]
    for email in held:
        sql(
            newsletter,
            "UPDATE delivery SET status = 'in-flight', claimed_by = 'elsewhere:7:7/1' "
            "WHERE email = ?",
            email,
        )

    def factory() -> MockTransport:
        return MockTransport(None, run.bag)

    def look(helps: bool) -> list[Any]:
        mine = dataclasses.replace(settings, worker=WorkerSettings(help_other_senders=helps))
        return resume.resume_interrupted(mine, run.database, factory)

    assert look(helps=False) == []
    assert run.bag.messages == []
    # A worker that helps joins it, sends what nobody has claimed, and leaves the send to
    # the worker still on it.
    (joined,) = look(helps=True)
    assert Counter(run.bag.recipients()) == Counter(people[2:])
    assert sql(newsletter, "SELECT status FROM send") == [("sending",)]
    assert joined.outcome.startswith("sending")
    # Once that worker's lease has expired, even a worker that does not help takes over:
    # what it held in flight is unknown, never sent again on its own, and the send is done.
    sql(newsletter, "UPDATE send_worker SET expires_at = ?", "2000-01-01 00:00:00")
    (taken,) = look(helps=False)
    assert taken.sent
    assert sql(newsletter, "SELECT status FROM send") == [("sent",)]
    assert sql(newsletter, "SELECT count(*) FROM send_worker") == [(0,)]
    assert {e for e, s in ledger(newsletter).items() if s == "unknown"} == set(held)
    assert Counter(run.bag.recipients()) == Counter(people[2:])
