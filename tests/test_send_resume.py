"""A real `mailer send` process killed half-way, paused from another process, and rate limits."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mailer.sending.ratelimit import RateLimiter
from send_helpers import addresses, ledger, mailer_process, make_list, smtp_env, sql, wait_for
from smtp_server import Handler, SMTPServer


def _start_send(root: Path) -> subprocess.Popen[bytes]:
    return mailer_process(root, "send", "2025-11", "--list", "practitioners", "--yes")


@pytest.fixture
def sending_slowly(cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    make_list(cli, newsletter, "practitioners", addresses(90))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    with SMTPServer() as server:
        smtp_env(
            monkeypatch, server.port, MAILER_SMTP_CONNECTIONS="3", MAILER_SMTP_RATE_PER_SECOND="40"
        )
        yield server


def test_kill_9_half_way_then_resume_delivers_everyone_exactly_once(
    cli: Any, newsletter: Path, sending_slowly: SMTPServer
) -> None:
    server = sending_slowly
    process = _start_send(newsletter)
    wait_for(lambda: len(server.received) >= 30)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    before = ledger(newsletter)
    in_flight = {e for e, s in before.items() if s == "in-flight"}
    assert len(in_flight) <= 3  # at most one per connection
    received = Counter(server.handler.recipients())
    # Everyone the ledger calls sent really was received; nobody pending was.
    assert all(received[e] == 1 for e, s in before.items() if s == "sent")
    assert all(received[e] == 0 for e, s in before.items() if s == "pending")
    shown = cli("status", "2025-11").stdout
    assert all(e in shown for e in in_flight)
    assert "sending" in shown

    r = cli("send", "2025-11", "--resume")
    assert r.exit_code == 0, r.output
    got = Counter(server.handler.recipients())
    assert set(got) == set(addresses(90))
    duplicated = {e for e, n in got.items() if n > 1}
    assert duplicated <= in_flight  # the documented policy: in-flight ones are sent again
    assert set(ledger(newsletter).values()) == {"sent"}


def test_pause_from_another_process_then_resume(
    cli: Any, newsletter: Path, sending_slowly: SMTPServer
) -> None:
    server = sending_slowly
    process = _start_send(newsletter)
    wait_for(lambda: len(server.received) >= 10)
    r = cli("pause", "2025-11")
    assert r.exit_code == 0, r.output
    assert "mailer send 2025-11 --resume" in r.stdout
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert b"Paused: paused by mailer pause" in err
    states = Counter(ledger(newsletter).values())
    assert states["in-flight"] == 0 and states["sent"] == len(server.received) < 90
    r = cli("send", "2025-11", "--resume")
    assert r.exit_code == 0, r.output
    assert Counter(server.handler.recipients()) == Counter(addresses(90))


def test_a_second_sender_cannot_take_a_running_send(
    cli: Any, newsletter: Path, sending_slowly: SMTPServer
) -> None:
    process = _start_send(newsletter)
    wait_for(lambda: len(sending_slowly.received) >= 5)
    r = cli("send", "2025-11", "--resume")
    assert r.exit_code == 1
    assert "is being sent by another process" in r.stderr
    process.communicate(timeout=60)
    assert Counter(sending_slowly.handler.recipients()) == Counter(addresses(90))


def test_rate_per_second_holds_at_the_server(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_list(cli, newsletter, "practitioners", addresses(30))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    with SMTPServer() as server:
        smtp_env(
            monkeypatch, server.port, MAILER_SMTP_RATE_PER_SECOND="15", MAILER_SMTP_CONNECTIONS="4"
        )
        assert cli("send", "2025-11", "--list", "practitioners", "--yes").exit_code == 0
    times = sorted(server.handler.times)
    assert len(times) == 30
    # No window of (almost) one second holds more than the limit; 50 ms allows for jitter.
    most = max(sum(1 for t in times if start <= t < start + 0.95) for start in times)
    assert most <= 15


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


def _windows(times: list[float], width: float) -> int:
    return max(sum(1 for t in times if s <= t < s + width) for s in times)


def test_rate_limits_hold_exactly_with_a_fake_clock() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_second=7, per_hour=None, clock=clock)
    sent = []
    for _ in range(50):
        limiter.wait()
        sent.append(clock.now)
    assert _windows(sent, 1.0) == 7

    clock = FakeClock()
    # 3 were sent 10 minutes ago (before a resume); the hour allows 5.
    recent = [clock.now - 600] * 3
    limiter = RateLimiter(per_second=None, per_hour=5, clock=clock, recent=recent)
    sent = []
    for _ in range(12):
        limiter.wait()
        sent.append(clock.now)
    assert sent[0] == sent[1] == 1_000_000.0  # two more fit in the hour at once
    assert _windows(recent + sent, 3600.0) == 5
    assert sent[2] == pytest.approx(1_000_000.0 - 600 + 3600)


def test_resume_right_after_pause_never_sends_the_messages_in_hand_twice(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_list(cli, newsletter, "practitioners", addresses(16))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    with SMTPServer(Handler(delay=1.0)) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_CONNECTIONS="4")
        process = _start_send(newsletter)
        wait_for(lambda: len(server.received) >= 1)
        assert cli("pause", "2025-11").exit_code == 0
        early = cli("send", "2025-11", "--resume")
        # Four messages are still with the server: the first sender holds the send.
        assert early.exit_code == 1
        assert "still finishing the messages in hand" in early.stderr
        process.communicate(timeout=60)
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
