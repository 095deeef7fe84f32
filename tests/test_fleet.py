"""Several `mailer worker` processes on one send, against a real SMTP server.

Three workers share the database (SQLite in one pass of the suite, PostgreSQL in the
other). One of them runs in a UTS namespace of its own (``unshare --uts``) under another
host name, as if on another machine: the others can tell it died only by its lease, which
is short for it alone (``MAILER_WORKER_LEASE``). The server is aiosmtpd in this process; it
counts every copy per recipient, the sessions open at once, and when each message
reached it. It can hold messages at DATA, so a test acts while every worker has messages
in hand. The issue is a small one (a template of a few lines), so 20,000 messages take
seconds. Nothing sleeps: the tests wait for the server's counts and for lines the workers
log, with generous timeouts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from fake_clock import busiest_window
from mailer.sending.journal import ON_THE_WIRE
from send_helpers import addresses, make_list, smtp_env, sql
from smtp_server import free_port

SLUG = "2026-01"
CONNECTIONS = 3
OTHER_HOST = "otherhost"
# The lease of the worker "on another machine": short, so the test waits seconds for it.
SHORT_LEASE = "5"
TIMEOUT = 600.0

TEMPLATE = """\
<mjml lang="en"><mj-body><mj-section><mj-column><mj-text>
<h1>{{ issue.subject }}</h1>
{%- for section in issue.sections %}<p>{{ section.title }}</p>{% endfor %}
<p><a href="{{ urls.web }}">View in your browser</a>
<a href="{{ urls.preferences }}">Preferences</a>
<a href="{{ urls.unsubscribe }}">Unsubscribe</a></p>
</mj-text></mj-column></mj-section></mj-body></mjml>
"""
ISSUE = """\
subject: "CSCP Newsletter – January 2026"
preheader: "One short item, so that each message of a long list is small"
date: 2026-01-06
sections:
  - type: news
    title: "Working Together training"
    body: |
      New dates for the multi-agency training are on the partnership's website.
"""


@dataclass
class Sink:
    """An SMTP server's side of things: copies per recipient, sessions, arrival times."""

    hold_after: int | None = None
    copies: Counter[str] = field(default_factory=Counter)
    arrivals: list[float] = field(default_factory=list)
    sessions: int = 0
    most_sessions: int = 0
    held: int = 0
    lock: threading.Condition = field(default_factory=threading.Condition)
    gate: threading.Event = field(default_factory=threading.Event)

    def opened(self) -> None:
        with self.lock:
            self.sessions += 1
            self.most_sessions = max(self.most_sessions, self.sessions)

    def closed(self) -> None:
        with self.lock:
            self.sessions -= 1

    @property
    def total(self) -> int:
        return sum(self.copies.values())

    def wait_until(self, condition: Any, timeout: float = TIMEOUT) -> None:
        with self.lock:
            assert self.lock.wait_for(lambda: condition(self), timeout), "timed out"

    def release(self) -> None:
        with self.lock:
            self.hold_after = None
        self.gate.set()

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        with self.lock:
            hold = self.hold_after is not None and self.total >= self.hold_after
            if hold:
                self.held += 1
                self.lock.notify_all()
        if hold and not self.gate.is_set():
            await asyncio.get_running_loop().run_in_executor(None, self.gate.wait)
        with self.lock:
            self.arrivals.append(time.monotonic())
            for address in envelope.rcpt_tos:
                self.copies[address] += 1
            self.lock.notify_all()
        return "250 2.0.0 accepted"


class _CountedSMTP(SMTP):
    """aiosmtpd's server, telling the sink when a session opens and closes."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.event_handler.opened()

    def connection_lost(self, error: Exception | None) -> None:
        self.event_handler.closed()
        super().connection_lost(error)


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _CountedSMTP(self.handler, **self.SMTP_kwargs)


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    handler = Sink()
    port = free_port()
    controller = _Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        handler.release()  # no handler thread may outlive the server
        controller.stop()


class Logs:
    """Every line several processes write to stderr, in one place, so a test can wait for
    a line from any of them (or for a line from each) instead of sleeping."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.threads: list[threading.Thread] = []

    def follow(self, stream: Any) -> None:
        def read() -> None:
            for raw in iter(stream.readline, b""):
                with self.cond:
                    self.lines.append(raw.decode("utf-8", "replace"))
                    self.cond.notify_all()
            stream.close()

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        self.threads.append(thread)

    def count(self, fragment: str) -> int:
        return sum(1 for line in self.lines if fragment in line)

    def wait_for(self, fragment: str, times: int = 1, timeout: float = TIMEOUT) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: self.count(fragment) >= times, timeout)
        assert ok, f"{fragment!r} never came {times} time(s); got:\n{self.text()}"

    def text(self) -> str:
        with self.cond:
            return "".join(self.lines)


@dataclass
class Fleet:
    root: Path
    logs: Logs = field(default_factory=Logs)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *, other_host: bool = False) -> subprocess.Popen[bytes]:
        """A `mailer worker`, its clock ten minutes ahead so the test's schedule (five
        minutes from now) is due for it at once; or one "on another machine"."""
        env = {**os.environ, "MAILER_CLOCK_OFFSET": "600"}
        command = [sys.executable, "-m", "mailer", "worker", "--poll", "0.5"]
        if other_host:
            env["MAILER_WORKER_LEASE"] = SHORT_LEASE
            command = [
                "unshare",
                "--uts",
                "sh",
                "-c",
                f'hostname {OTHER_HOST} && exec "$0" "$@"',
                *command,
            ]
        process = subprocess.Popen(
            command, cwd=self.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.logs.follow(process.stderr)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            process.wait(timeout=TIMEOUT)
        for thread in self.logs.threads:
            thread.join(timeout=TIMEOUT)


@pytest.fixture
def small_issue(cli: Any, newsletter: Path) -> Path:
    """A short issue with a template of a few lines, built: messages of about 6 KB."""
    (newsletter / "templates").mkdir(exist_ok=True)
    (newsletter / "templates" / "newsletter.mjml.j2").write_text(TEMPLATE, encoding="utf-8")
    (newsletter / "issues" / SLUG).mkdir()
    (newsletter / "issues" / SLUG / "issue.yaml").write_text(ISSUE, encoding="utf-8")
    r = cli("build", SLUG)
    assert r.exit_code == 0, r.output
    return newsletter


def _ready(
    cli: Any, root: Path, people: list[str], monkeypatch: pytest.MonkeyPatch, port: int, **env: str
) -> None:
    make_list(cli, root, "practitioners", people)
    assert cli("approve", SLUG, "--by", "Sam Patel").exit_code == 0
    smtp_env(monkeypatch, port, MAILER_SMTP_CONNECTIONS=str(CONNECTIONS), **env)
    soon = dt.datetime.now(ZoneInfo("Europe/London")) + dt.timedelta(minutes=5)
    r = cli("schedule", SLUG, "--list", "practitioners", "--at", soon.strftime("%Y-%m-%d %H:%M"))
    assert r.exit_code == 0, r.output


@pytest.fixture
def fleet(small_issue: Path) -> Iterator[Fleet]:
    workers = Fleet(small_issue)
    try:
        yield workers
    finally:
        workers.stop()


def _rows(root: Path) -> dict[str, tuple[str, str | None]]:
    """email -> (status, worker that claimed it) for the send."""
    return {e: (s, w) for e, s, w in sql(root, "SELECT email, status, claimed_by FROM delivery")}


def test_three_workers_share_a_20000_recipient_send_and_one_killed_half_way_loses_nobody(
    cli: Any, fleet: Fleet, sink: tuple[Sink, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, port = sink
    people = addresses(20_000)
    server.hold_after = 10_000
    _ready(cli, fleet.root, people, monkeypatch, port)
    fleet.start()
    fleet.start()
    elsewhere = fleet.start(other_host=True)
    fleet.logs.wait_for("worker started", times=3)
    # Half-way, every connection of every worker has a message in hand at the server.
    server.wait_until(lambda s: s.held >= 3 * CONNECTIONS)
    assert server.most_sessions > CONNECTIONS  # more than one worker opens
    elsewhere.send_signal(signal.SIGKILL)
    elsewhere.wait(timeout=TIMEOUT)
    server.release()
    # The other two find it dead once its lease has expired, and finish the send. Each
    # writes its count of sent, failed, unknown and skipped once it has left the send:
    # "finished" comes from the first to leave, while the other may still hold its lease.
    fleet.logs.wait_for(f"finished {SLUG}")
    fleet.logs.wait_for(" skipped, ", times=2)
    assert sql(fleet.root, "SELECT status FROM send") == [("sent",)]
    assert sql(fleet.root, "SELECT count(*) FROM send_worker") == [(0,)]

    rows = _rows(fleet.root)
    senders = {w.partition(":")[0] for s, w in rows.values() if s == "sent" and w}
    assert len({w for s, w in rows.values() if s == "sent"}) == 3  # each worker sent some
    assert OTHER_HOST in senders
    # Only the rows the killed worker held in flight are unknown; everyone else was sent
    # exactly once, and nobody has a second copy.
    unknown = {e for e, (s, w) in rows.items() if s == "unknown"}
    assert 1 <= len(unknown) <= 2 * CONNECTIONS * 8  # at most a batch per connection
    assert {rows[e][1].partition(":")[0] for e in unknown} == {OTHER_HOST}  # type: ignore[union-attr]
    assert {s for e, (s, w) in rows.items() if e not in unknown} == {"sent"}
    assert all(server.copies[e] == 1 for e, (s, w) in rows.items() if s == "sent")
    assert max(server.copies.values()) == 1

    # On request, the unknown copies go again: duplicates only among them.
    r = cli("send", SLUG, "--resend-unknown", "--yes")
    assert r.exit_code == 0, r.output
    assert set(server.copies) == set(people)
    assert {e for e, n in server.copies.items() if n > 1} <= unknown


def test_a_worker_killed_on_this_machine_leaves_unknown_only_the_copies_on_the_wire(
    cli: Any, fleet: Fleet, sink: tuple[Sink, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, port = sink
    people = addresses(600)
    server.hold_after = 100
    _ready(cli, fleet.root, people, monkeypatch, port)
    fleet.start()
    victim = fleet.start()
    fleet.logs.wait_for("worker started", times=2)
    # Every connection of both workers has a message held at DATA, and more claimed.
    server.wait_until(lambda s: s.held >= 2 * CONNECTIONS)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=TIMEOUT)
    mine = f":{victim.pid}:"
    held = {e for e, (s, w) in _rows(fleet.root).items() if s == "in-flight" and mine in (w or "")}
    server.release()
    # The other worker reads its journal at once (the process table says it is gone): the
    # rows it had claimed and not begun are sent by the survivor.
    fleet.logs.wait_for(f"finished {SLUG}")
    assert sql(fleet.root, "SELECT status FROM send") == [("sent",)]
    rows = _rows(fleet.root)
    unknown = {e for e, (s, w) in rows.items() if s == "unknown"}
    assert unknown <= held
    assert 1 <= len(unknown) <= CONNECTIONS * ON_THE_WIRE < len(held)
    assert {s for e, (s, w) in rows.items() if e not in unknown} == {"sent"}
    assert all(server.copies[e] == 1 for e, (s, w) in rows.items() if s == "sent")
    assert max(server.copies.values()) == 1
    assert set(server.copies) | unknown == set(people)
    # The journal of the dead worker was deleted once its rows were settled.
    journals = (fleet.root / ".mailer" / "journals").iterdir()
    assert not [j for j in journals if f"_{victim.pid}_" in j.name]


def _three_with_messages_in_hand(
    cli: Any, fleet: Fleet, server: Sink, port: int, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    people = addresses(600)
    server.hold_after = 100
    _ready(cli, fleet.root, people, monkeypatch, port)
    for other_host in (False, False, True):
        fleet.start(other_host=other_host)
    server.wait_until(lambda s: s.held >= 3 * CONNECTIONS)
    return people


def test_pause_from_the_command_line_stops_every_worker_and_a_resume_finishes_once(
    cli: Any, fleet: Fleet, sink: tuple[Sink, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, port = sink
    people = _three_with_messages_in_hand(cli, fleet, server, port, monkeypatch)
    # mailer status shows the three workers and what each holds, and no address.
    (report,) = json.loads(cli("status", SLUG, "--json").stdout)
    shown = report["workers"]
    assert len(shown) == 3 and all(w["in_flight"] >= 1 for w in shown)
    assert [w["host"] for w in shown].count(OTHER_HOST) == 1
    assert "@" not in json.dumps(shown)
    assert cli("status", SLUG).stdout.count(f"{CONNECTIONS} connection(s)") == 3

    r = cli("pause", SLUG)
    assert r.exit_code == 0, r.output
    server.release()  # the messages in hand are accepted; then every worker stops
    fleet.logs.wait_for(f"paused {SLUG}", times=3)
    assert sql(fleet.root, "SELECT status, pause_reason FROM send") == [("paused", "operator")]
    assert sql(fleet.root, "SELECT count(*) FROM send_worker") == [(0,)]
    states = Counter(s for s, _ in _rows(fleet.root).values())
    assert states["in-flight"] == 0 and states["sent"] == server.total < len(people)

    # Resumed from here (the workers join it again): one copy each, nobody missed.
    r = cli("send", SLUG, "--resume")
    assert r.exit_code == 0, r.output
    if "other worker(s) go on" in r.stdout:
        fleet.logs.wait_for(f"finished {SLUG}")
    assert sql(fleet.root, "SELECT status FROM send") == [("sent",)]
    assert server.copies == Counter(people)


def test_cancel_from_the_command_line_stops_every_worker(
    cli: Any, fleet: Fleet, sink: tuple[Sink, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, port = sink
    people = _three_with_messages_in_hand(cli, fleet, server, port, monkeypatch)
    r = cli("cancel", SLUG)
    assert r.exit_code == 0, r.output
    assert "Cancelled the send of 2026-01 (send 1)." in r.stdout
    server.release()  # the messages in hand are accepted; then every worker stops
    fleet.logs.wait_for(f"cancelled {SLUG}", times=3)
    assert sql(fleet.root, "SELECT status FROM send") == [("cancelled",)]
    assert sql(fleet.root, "SELECT count(*) FROM send_worker") == [(0,)]
    # What the server has is what the ledger says was sent; the rest was never claimed.
    states = Counter(s for s, _ in _rows(fleet.root).values())
    assert states["sent"] == server.total < len(people)
    assert states["in-flight"] == 0
    assert states["sent"] + states["pending"] == len(people)
    assert max(server.copies.values()) == 1


def test_the_rate_limit_of_a_relay_holds_at_the_server_for_three_workers_together(
    cli: Any, fleet: Fleet, sink: tuple[Sink, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, port = sink
    rate = 20
    people = addresses(200)
    _ready(cli, fleet.root, people, monkeypatch, port, MAILER_SMTP_RATE_PER_SECOND=str(rate))
    for other_host in (False, False, True):
        fleet.start(other_host=other_host)
    fleet.logs.wait_for(f"finished {SLUG}")
    assert server.copies == Counter(people)
    # Several workers sent, and together they kept the relay's limit: each alone may send
    # `rate` a second, so without the shared limit the three would have sent more.
    assert len({w for s, w in _rows(fleet.root).values() if s == "sent"}) >= 2
    assert busiest_window(server.arrivals, 1.0) <= rate
