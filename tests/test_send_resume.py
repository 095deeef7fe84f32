"""A real `mailer send` process killed half-way or paused from another process.

The server holds messages at DATA once a given number has been accepted (``hold_after``),
so each test acts while the sender has messages in hand, whatever the machine's speed.
Rate limits, retries and pauses of the engine itself are tested on a fake clock in
test_engine.py.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mailer.sending.journal import ON_THE_WIRE
from mailer.sending.ledger import BATCH
from send_helpers import addresses, ledger, mailer_process, make_list, smtp_env, sql
from smtp_server import Handler, SMTPServer


def _wait_for_count_or_exit(handler: Handler, count: int, process: Any) -> None:
    """Until the server has ``count`` messages or the sender has exited: both events wake
    the server's condition (a thread waits for the process's exit and says so)."""
    exited = threading.Event()

    def watch() -> None:
        process.wait()
        with handler.lock:
            exited.set()
            handler.lock.notify_all()

    threading.Thread(target=watch, daemon=True).start()
    with handler.lock:
        done = handler.lock.wait_for(lambda: len(handler.received) >= count or exited.is_set(), 120)
    assert done, f"the server never had {count} messages and the sender never exited"


def _start_send(root: Path) -> subprocess.Popen[bytes]:
    return mailer_process(root, "send", "2025-11", "--list", "practitioners", "--yes")


@pytest.fixture
def held(cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """90 people, 3 connections, and a server that holds messages after the 30th."""
    make_list(cli, newsletter, "practitioners", addresses(90))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    with SMTPServer(Handler(hold_after=30)) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_CONNECTIONS="3")
        yield server


def test_kill_9_half_way_then_resume_and_resend_the_unknown(
    cli: Any, newsletter: Path, held: SMTPServer
) -> None:
    server = held
    process = _start_send(newsletter)
    server.handler.wait_until(lambda h: len(h.received) == 30 and h.held >= 1)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    server.handler.release(accept=False)  # the sender is gone: nothing held is delivered
    before = ledger(newsletter)
    in_flight = {e for e, s in before.items() if s == "in-flight"}
    assert 1 <= len(in_flight) <= 3 * BATCH  # at most a batch per connection
    received = Counter(server.handler.recipients())
    # Everyone the ledger calls sent really was received; nobody pending was.
    assert all(received[e] == 1 for e, s in before.items() if s == "sent")
    assert all(received[e] == 0 for e, s in before.items() if s == "pending")
    shown = cli("status", "2025-11").stdout
    assert all(e in shown for e in in_flight)
    assert "sending" in shown

    server.handler.hold_after = None
    r = cli("send", "2025-11", "--resume")
    assert r.exit_code == 0, r.output
    # Only the copies on the wire are unknown: on each connection the one held at DATA and
    # the next, whose envelope went ahead with it; the rest claimed went out in the resume.
    unknown = {e for e, s in ledger(newsletter).items() if s == "unknown"}
    assert unknown <= in_flight
    assert 1 <= len(unknown) <= 3 * ON_THE_WIRE < len(in_flight)
    assert f"{len(unknown)} message(s) were in flight when the send stopped" in r.stdout
    got = Counter(server.handler.recipients())
    assert all(n == 1 for n in got.values())  # nobody has a second copy
    assert set(got) | unknown == set(addresses(90))
    # An unknown copy may have reached the server: on a slow machine the server can accept
    # a message and answer before the sender, killed, reads the answer. That is what
    # unknown means; the resume never sends it again on its own (no second copy above).

    r = cli("send", "2025-11", "--resend-unknown", "--yes")
    assert r.exit_code == 0, r.output
    got = Counter(server.handler.recipients())
    assert set(got) == set(addresses(90))
    assert {e for e, n in got.items() if n > 1} <= unknown  # only those reported unknown
    assert set(ledger(newsletter).values()) == {"sent"}


def test_sigterm_finishes_the_messages_in_hand_and_pauses(
    cli: Any, newsletter: Path, held: SMTPServer
) -> None:
    server = held
    process = _start_send(newsletter)
    server.handler.wait_until(lambda h: h.held >= 1)
    process.send_signal(signal.SIGTERM)
    server.handler.release()  # the messages in hand are accepted; then the sender stops
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert b"Paused: stopped by SIGTERM. Continue with: mailer send 2025-11 --resume" in err
    states = Counter(ledger(newsletter).values())
    assert states["in-flight"] == 0 and states["unknown"] == 0
    assert states["sent"] == len(server.received) < 90
    server.handler.hold_after = None
    r = cli("send", "2025-11", "--resume")
    assert r.exit_code == 0, r.output
    assert Counter(server.handler.recipients()) == Counter(addresses(90))


def test_pause_from_another_process_then_resume(
    cli: Any, newsletter: Path, held: SMTPServer
) -> None:
    server = held
    process = _start_send(newsletter)
    server.handler.wait_until(lambda h: h.held >= 1)
    r = cli("pause", "2025-11")
    assert r.exit_code == 0, r.output
    assert "mailer send 2025-11 --resume" in r.stdout
    server.handler.release()  # the messages in hand are accepted; then the sender stops
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert b"Paused: paused by mailer pause" in err
    states = Counter(ledger(newsletter).values())
    assert states["in-flight"] == 0 and states["sent"] == len(server.received) < 90
    server.handler.hold_after = None
    r = cli("send", "2025-11", "--resume")
    assert r.exit_code == 0, r.output
    assert Counter(server.handler.recipients()) == Counter(addresses(90))


def test_a_second_sender_joins_a_running_send_and_nobody_gets_two_copies(
    cli: Any, newsletter: Path, held: SMTPServer
) -> None:
    process = _start_send(newsletter)
    # The first sender's three connections each have a message held at the server.
    held.handler.wait_until(lambda h: h.held >= 3)

    def release_once_the_second_one_sends() -> None:
        held.handler.wait_until(lambda h: h.held >= 4)
        held.handler.hold_after = None
        held.handler.release()

    releaser = threading.Thread(target=release_once_the_second_one_sends)
    releaser.start()
    r = cli("send", "2025-11", "--resume")
    releaser.join()
    assert r.exit_code == 0, r.output
    process.communicate(timeout=120)
    assert process.returncode == 0
    assert Counter(held.handler.recipients()) == Counter(addresses(90))
    # Both sent some of them.
    assert len(sql(newsletter, "SELECT DISTINCT claimed_by FROM delivery")) == 2


def test_resume_right_after_pause_never_sends_the_messages_in_hand_twice(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_list(cli, newsletter, "practitioners", addresses(16))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    with SMTPServer(Handler(hold_after=1)) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_CONNECTIONS="4")
        process = _start_send(newsletter)
        server.handler.wait_until(lambda h: h.held >= 1)
        assert cli("pause", "2025-11").exit_code == 0
        early = cli("send", "2025-11", "--resume")
        # Messages are still with the server: the first sender holds the send.
        assert early.exit_code == 1
        assert "still finishing the messages in hand" in early.stderr
        server.handler.hold_after = None
        server.handler.release()
        process.communicate(timeout=120)
        r = cli("send", "2025-11", "--resume")
        assert r.exit_code == 0, r.output
        got = Counter(server.handler.recipients())
    assert got == Counter(addresses(16))


def test_an_internationalised_address_uses_smtputf8_or_fails_alone_without_a_bounce(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_list(cli, newsletter, "practitioners", [*addresses(3), "zoë@example.org"])
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    with SMTPServer(smtputf8=False) as server:
        smtp_env(monkeypatch, server.port)
        r = cli("send", "2025-11", "--list", "practitioners", "--yes")
        assert r.exit_code == 0, r.output
        assert sorted(server.handler.recipients()) == addresses(3)
    assert ledger(newsletter)["zoë@example.org"] == "failed-permanent"
    assert "does not accept internationalised addresses" in cli("status", "2025-11").stdout
    query = "SELECT status FROM subscriber WHERE email = 'zoë@example.org'"
    assert sql(newsletter, query) == [("active",)]  # the address is fine; the relay was not
    with SMTPServer(smtputf8=True) as server:
        smtp_env(monkeypatch, server.port)
        assert cli("send", "2025-11", "--retry-failed").exit_code == 1  # permanent: not retried
        make_list(cli, newsletter, "health", ["zoë@example.org"], name="Health")
        r = cli("send", "2025-11", "--list", "health", "--yes")
        assert r.exit_code == 0, r.output
        assert server.handler.recipients() == ["zoë@example.org"]
        assert "zoë@example.org" in server.received[0].data.decode("utf-8")


def test_a_half_set_dkim_configuration_is_refused_before_anything_starts(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_list(cli, newsletter, "practitioners", addresses(3))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    monkeypatch.setenv("MAILER_DKIM_SELECTOR", "news")
    r = cli("send", "2025-11", "--list", "practitioners", "--yes")
    assert r.exit_code == 1
    assert "DKIM signing needs MAILER_DKIM_DOMAIN, MAILER_DKIM_KEY_FILE as well" in r.stderr
    assert sql(newsletter, "SELECT COUNT(*) FROM send") == [(0,)]


def test_kill_9_at_random_points_over_many_rounds_misses_nobody(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = addresses(300)
    make_list(cli, newsletter, "practitioners", people)
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    rng = random.Random(20261201)
    unknown: set[str] = set()
    # After each kill: the rows left in flight, and the rows unknown so far.
    kills: list[set[str]] = []
    seen: list[set[str]] = []
    with SMTPServer(Handler()) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_CONNECTIONS="3")
        process = _start_send(newsletter)
        for round_ in range(6):
            if round_:
                process = mailer_process(newsletter, "send", "2025-11", "--resume")
            target = len(server.received) + rng.randint(1, 25)
            _wait_for_count_or_exit(server.handler, target, process)
            finished = process.poll() is not None
            process.kill()
            _, err = process.communicate()
            assert not finished or process.returncode == 0, err.decode()
            states = ledger(newsletter)
            got = Counter(server.handler.recipients())
            unknown |= {e for e, s in states.items() if s == "unknown"}
            kills.append({e for e, s in states.items() if s == "in-flight"})
            seen.append({e for e, s in states.items() if s == "unknown"})
            # Each copy the server has is recorded as sent or reported as unknown; nobody
            # has two; nobody still pending was mailed.
            assert all(states[e] in ("sent", "in-flight", "unknown") for e in got)
            assert all(n == 1 for n in got.values())
            assert all(got[e] == 1 for e, s in states.items() if s == "sent")
            if finished:
                break
        else:
            # Every round's sender was killed: the last resume runs to the end here.
            r = cli("send", "2025-11", "--resume")
            assert r.exit_code == 0, r.output
        final = {e for e, s in ledger(newsletter).items() if s == "unknown"}
        # Each kill left unknown (found by the next resume) at most the copies on the wire
        # of its 3 connections, all among the rows it held; the rest it held were sent.
        seen.append(final)
        for held, before, after in zip(kills, seen, seen[1:], strict=False):
            assert after - before <= held
            assert len(after - before) <= 3 * ON_THE_WIRE
        unknown |= final
        if unknown:
            r = cli("send", "2025-11", "--resend-unknown", "--yes")
            assert r.exit_code == 0, r.output
        got = Counter(server.handler.recipients())
    assert set(got) == set(people)  # nobody missed
    assert {e for e, n in got.items() if n > 1} <= unknown  # no copy outside the unknown
    assert set(ledger(newsletter).values()) == {"sent"}
