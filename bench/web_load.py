"""Load: one-click unsubscribes and archive reads against a real `mailer serve` while a
10,000-recipient send runs through the outbox.

Run it from the repository: ``.venv/bin/python bench/web_load.py [--recipients 10000]
[--posts 200]``. It prints requests per second and latency percentiles, and checks what a
user would notice (``tests/test_web_load.py`` runs it and asserts the same):

- every POST and GET answers 200;
- every unsubscribe is recorded, once;
- nobody is mailed after their unsubscribe was committed: each targeted person who was
  mailed had their ledger row claimed (marked in flight) before their unsubscribe's time;
- the send finishes with its ledger complete (nothing pending or in flight).

The send runs in this process on a thread; the web server is a separate process sharing
the SQLite database, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

import httpx2  # noqa: E402

from mailer import config, tokens, urls  # noqa: E402
from mailer.config import Settings  # noqa: E402
from mailer.operations import service  # noqa: E402
from mailer.sending.transports import OutboxTransport  # noqa: E402
from mailer.site import build  # noqa: E402
from mailer.store.database import open_db  # noqa: E402
from mailer.subscribers import lists  # noqa: E402
from mailer.subscribers.csv_import import import_file  # noqa: E402

EXAMPLE = REPO / "tests" / "data" / "newsletter"
ISSUE = "2021-12"  # the smaller example issue: 10,000 copies are about 400 MB of outbox
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@dataclass
class Figures:
    recipients: int
    posts: int
    post_ok: int = 0
    post_rps: float = 0.0
    post_p50_ms: float = 0.0
    post_p99_ms: float = 0.0
    gets: int = 0
    get_ok: int = 0
    get_rps: float = 0.0
    get_p99_ms: float = 0.0
    send_seconds: float = 0.0
    send_rate: float = 0.0
    sent_before_burst: int = 0
    recorded_unsubscribes: int = 0
    unsubscribed_memberships: int = 0
    ledger: dict[str, int] = field(default_factory=dict)
    mailed_after_unsubscribe: list[int] = field(default_factory=list)
    targets_mailed_before: int = 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def prepare(root: Path, recipients: int, port: int, env: dict[str, str]) -> Settings:
    shutil.copytree(EXAMPLE, root)
    toml = (root / "mailer.toml").read_text(encoding="utf-8")
    base = f"http://127.0.0.1:{port}"
    (root / "mailer.toml").write_text(
        toml.replace('base_url = "https://news.example.org"', f'base_url = "{base}"'),
        encoding="utf-8",
    )
    settings = config.load(root, env=env)
    lists.create(settings, "all", "All practitioners", public=True)
    csv = root / "people.csv"
    with csv.open("w", encoding="utf-8") as out:
        out.write("email,name\n")
        for i in range(recipients):
            out.write(f"person{i:05d}@example.org,Person {i}\n")
    with open_db(settings) as db:
        import_file(db, csv, "all")
    build.build(settings, [ISSUE])
    service.approve(settings, ISSUE, "Load Test")
    return settings


def _start_server(root: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with (root / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailer", "serve", "--port", str(port), "--rehearsal"],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise RuntimeError((root / "serve.log").read_text())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                return process
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Probe(OutboxTransport):
    """The outbox, noting when each targeted recipient's ledger row was claimed.

    When the transport is called, the row is in flight and its ``updated_at`` is the time
    the engine claimed it; that is what "mailed after the unsubscribe" is measured by.
    """

    def __init__(self, folder: Path, db_path: Path, targets: set[str], seen: Any) -> None:
        super().__init__(folder)
        self.db_path, self.targets, self.seen = db_path, targets, seen

    def send(self, mail_from: str, to: str, data: bytes) -> str:
        if to in self.targets:
            with closing(sqlite3.connect(self.db_path)) as conn:
                row = conn.execute(
                    "SELECT d.subscriber_id, d.updated_at FROM delivery d "
                    "WHERE d.email = ? AND d.status = 'in-flight'",
                    (to,),
                ).fetchone()
            self.seen.claimed[to] = row
        reply = super().send(mail_from, to, data)
        self.seen.count += 1
        if self.seen.count >= self.seen.trigger:
            self.seen.started.set()
        return reply


@dataclass
class _Seen:
    trigger: int
    count: int = 0
    claimed: dict[str, Any] = field(default_factory=dict)
    started: threading.Event = field(default_factory=threading.Event)


async def _burst(base: str, paths: list[str]) -> tuple[list[Any], list[Any], float, float]:
    """All the POSTs at once, and four readers of the archive until the POSTs are done."""
    limits = httpx2.Limits(max_connections=len(paths) + 8, max_keepalive_connections=len(paths) + 8)
    async with httpx2.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def post(path: str) -> tuple[int, float]:
            started = time.perf_counter()
            answer = await client.post(path, data=ONE_CLICK)
            return answer.status_code, time.perf_counter() - started

        gets: list[tuple[int, float]] = []
        done = asyncio.Event()

        async def reader() -> None:
            while not done.is_set():
                started = time.perf_counter()
                answer = await client.get("/")
                gets.append((answer.status_code, time.perf_counter() - started))

        readers = [asyncio.create_task(reader()) for _ in range(4)]
        started = time.perf_counter()
        posts = await asyncio.gather(*(post(p) for p in paths))
        post_seconds = time.perf_counter() - started
        done.set()
        await asyncio.gather(*readers)
        return posts, gets, post_seconds, time.perf_counter() - started


def run(workdir: Path, recipients: int = 10_000, posts: int = 200) -> Figures:
    """The whole load test in ``workdir``; returns its figures (see the module doc)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_SECRET_KEY"] = "load-test-key-with-at-least-32-bytes-of-it"
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "newsletter"
    settings = prepare(root, recipients, port, env)
    figures = Figures(recipients, posts)
    with open_db(settings) as db:
        send_id = service.create(settings, ISSUE, ["all"], database=db)
    key = settings.require_secret_key()
    # Targets spread over the back 70% of the ledger: people the send has not reached
    # when the burst starts, so each POST races the send.
    step = max(1, int(recipients * 0.7) // max(posts, 1))
    first = recipients - step * posts
    targets = {i + 1: f"person{i:05d}@example.org" for i in range(first, recipients, step)}
    targets = dict(list(targets.items())[:posts])
    paths = [
        urls.unsubscribe_url(
            settings, tokens.make(key, tokens.UNSUBSCRIBE, sid, send_id)
        ).removeprefix(settings.base_url)
        for sid in targets
    ]
    seen = _Seen(trigger=max(1, recipients // 10))
    db_path = root / "subscribers.sqlite"
    server = _start_server(root, port, env)
    result: dict[str, Any] = {}
    try:

        def send() -> None:
            folder = settings.outbox_dir / ISSUE
            started = time.perf_counter()
            result["run"] = service.run(
                settings,
                send_id,
                factory=lambda: Probe(folder, db_path, set(targets.values()), seen),
            )
            result["seconds"] = time.perf_counter() - started
            seen.started.set()

        sender = threading.Thread(target=send, name="load-send")
        sender.start()
        if not seen.started.wait(timeout=600):
            raise RuntimeError("the send did not start")
        figures.sent_before_burst = seen.count
        before = set(seen.claimed)
        post_results: list[Any] = []
        get_results: list[Any] = []
        post_seconds = get_seconds = 0.0
        if posts:  # posts=0 measures the send alone, as a baseline
            post_results, get_results, post_seconds, get_seconds = asyncio.run(
                _burst(f"http://127.0.0.1:{port}", paths)
            )
        sender.join(timeout=1200)
        if sender.is_alive():
            raise RuntimeError("the send did not finish")
    finally:
        server.terminate()
        server.wait(timeout=60)

    figures.targets_mailed_before = len(before)
    post_ms = [s * 1000 for _, s in post_results]
    figures.post_ok = sum(1 for code, _ in post_results if code == 200)
    figures.post_rps = posts / post_seconds if post_seconds else 0.0
    figures.post_p50_ms = statistics.median(post_ms) if post_ms else 0.0
    figures.post_p99_ms = _percentile(post_ms, 0.99)
    figures.gets = len(get_results)
    figures.get_ok = sum(1 for code, _ in get_results if code == 200)
    figures.get_rps = len(get_results) / get_seconds if get_seconds else 0.0
    figures.get_p99_ms = _percentile([s * 1000 for _, s in get_results], 0.99)
    figures.send_seconds = result["seconds"]
    figures.send_rate = recipients / result["seconds"]
    with closing(sqlite3.connect(db_path)) as conn:
        figures.recorded_unsubscribes = conn.execute(
            "SELECT count(*) FROM unsubscription WHERE method = 'one-click'"
        ).fetchone()[0]
        figures.unsubscribed_memberships = conn.execute(
            "SELECT count(*) FROM membership WHERE status = 'unsubscribed'"
        ).fetchone()[0]
        figures.ledger = dict(
            conn.execute(
                "SELECT status, count(*) FROM delivery WHERE send_id = ? GROUP BY status",
                (send_id,),
            ).fetchall()
        )
        unsubscribed_at = dict(
            conn.execute("SELECT subscriber_id, at FROM unsubscription").fetchall()
        )
    for _email, row in seen.claimed.items():
        if row is None:
            continue
        subscriber_id, claimed_at = row
        left = unsubscribed_at.get(subscriber_id)
        if left is not None and _time(claimed_at) >= _time(left):
            figures.mailed_after_unsubscribe.append(subscriber_id)
    return figures


def _time(stored: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stored)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--posts", type=int, default=200)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mailer-web-load-"))
    try:
        baseline = run(workdir / "baseline", args.recipients, 0)
        figures = run(workdir / "load", args.recipients, args.posts)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"baseline send without web traffic: {baseline.send_rate:.0f} msg/s")
    print(
        f"send: {figures.recipients:,} recipients through the outbox in "
        f"{figures.send_seconds:.1f} s ({figures.send_rate:.0f} msg/s), "
        f"{figures.sent_before_burst:,} sent before the burst; "
        f"{figures.send_rate / baseline.send_rate:.2f}x the baseline's rate"
    )
    print(
        f"one-click POSTs: {figures.post_ok}/{figures.posts} answered 200, "
        f"{figures.post_rps:.0f} req/s, p50 {figures.post_p50_ms:.0f} ms, "
        f"p99 {figures.post_p99_ms:.0f} ms"
    )
    print(
        f"archive GETs meanwhile: {figures.get_ok}/{figures.gets} answered 200, "
        f"{figures.get_rps:.0f} req/s, p99 {figures.get_p99_ms:.0f} ms"
    )
    print(f"unsubscribes recorded: {figures.recorded_unsubscribes}; ledger: {figures.ledger}")
    print(f"mailed after their unsubscribe: {len(figures.mailed_after_unsubscribe)}")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "web_load.json").write_text(json.dumps(asdict(figures), indent=2) + "\n")


if __name__ == "__main__":
    main()
