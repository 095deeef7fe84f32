"""Burst: one-click unsubscribes and sign-ups against a real `mailer serve` whose mail relay
accepts connections and never answers, while a send to many recipients runs through the
outbox.

Run it from the repository: ``.venv/bin/python bench/web_burst.py [--recipients 10000]
[--posts 5000] [--signups 200] [--rate 125 | --in-the-air 200]``. With ``--rate`` the
requests start at that many a second whatever the answers before them, as readers' mail
programs send them (the latency of a request arriving then); with ``--in-the-air`` at
most that many wait for an answer at once (the server's throughput). It prints what a
user would notice:

- unsubscribes lost: one-click POSTs not recorded in the database (must be 0), and POSTs
  answered other than 200;
- page latency (p50, p99) of the POSTs, the sign-ups and the archive read meanwhile: no
  page may wait for the hung relay, since the web side's mail is queued and sent by a
  background thread;
- the web mail the sign-ups queued (the relay never takes any).

The send runs in this process on a thread (:mod:`web_load` prepares the newsletter and
starts the server); the web server is a separate process sharing the SQLite database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx2
from machine import describe
from web_load import (
    ISSUE,
    ONE_CLICK,
    Probe,
    _free_port,
    _percentile,
    _Seen,
    _start_server,
    prepare,
)

from mailer import tokens, urls
from mailer.operations import service
from mailer.store.database import open_db


class SilentRelay:
    """Accepts SMTP connections and never sends a byte, not even the greeting."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(200)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


async def _burst(
    base: str, unsubscribes: list[str], signups: int, rate: float, in_the_air: int
) -> tuple[list[tuple[int, float]], list[tuple[int, float]], list[tuple[int, float]]]:
    limits = httpx2.Limits(max_connections=1024, max_keepalive_connections=1024)
    # Either at most ``in_the_air`` requests at once (each waits for an answer before the
    # next starts: the figure is the server's throughput), or, with ``rate``, each request
    # starts at its own time whatever the answers before it, as readers' mail programs
    # send them: the latency is then that of requests arriving at ``rate`` a second.
    gate = asyncio.Semaphore(in_the_air if not rate else 1_000_000)
    began = time.perf_counter()
    async with httpx2.AsyncClient(base_url=base, timeout=300, limits=limits) as client:

        async def timed(method: str, path: str, at: float = 0.0, **kw: Any) -> tuple[int, float]:
            if at:
                await asyncio.sleep(max(0.0, began + at - time.perf_counter()))
            async with gate:
                started = time.perf_counter()
                answer = await client.request(method, path, **kw)
                return answer.status_code, time.perf_counter() - started

        def signup(i: int, at: float) -> Any:
            data = {"email": f"newcomer{i}@example.net", "lists": "all", "consent": "yes"}
            return timed("POST", "/subscribe", at, data=data, headers={"Origin": base})

        done = asyncio.Event()
        reads: list[tuple[int, float]] = []

        async def reader() -> None:
            while not done.is_set():
                reads.append(await timed("GET", "/"))

        readers = [asyncio.create_task(reader()) for _ in range(2)]
        # Sign-ups spread through the unsubscribes, so both meet the same load.
        total = len(unsubscribes) + signups
        step = max(1, total // max(signups, 1))
        order = sorted(range(total), key=lambda j: (j % step, j))
        start = {j: (n + 1) / rate if rate else 0.0 for n, j in enumerate(order)}
        jobs = [timed("POST", p, start[j], data=ONE_CLICK) for j, p in enumerate(unsubscribes)]
        jobs += [signup(i, start[len(unsubscribes) + i]) for i in range(signups)]
        results = await asyncio.gather(*(jobs[j] for j in order))
        done.set()
        await asyncio.gather(*readers)
        by_job = dict(zip(order, results, strict=True))
        posts = [by_job[j] for j in range(len(unsubscribes))]
        ups = [by_job[j] for j in range(len(unsubscribes), len(jobs))]
        return posts, ups, reads


def run(
    workdir: Path, recipients: int, posts: int, signups: int, rate: float, in_the_air: int
) -> dict[str, Any]:
    relay = SilentRelay()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_SECRET_KEY="load-test-key-with-at-least-32-bytes-of-it",
        MAILER_TRANSPORT="smtp",
        MAILER_SMTP_HOST="127.0.0.1",
        MAILER_SMTP_PORT=str(relay.port),
        MAILER_SMTP_SECURITY="none",
    )
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "newsletter"
    settings = prepare(root, recipients, port, env)
    with open_db(settings) as db:
        send_id = service.create(settings, ISSUE, ["all"], database=db)
    key = settings.require_secret_key()
    step = max(1, recipients // max(posts, 1))
    targets = list(range(1, recipients + 1, step))[:posts]
    paths = [
        urls.unsubscribe_url(
            settings, tokens.make(key, tokens.UNSUBSCRIBE, sid, send_id)
        ).removeprefix(settings.base_url)
        for sid in targets
    ]
    seen = _Seen(trigger=max(1, recipients // 20))
    db_path = root / "subscribers.sqlite"
    server = _start_server(root, port, env)
    result: dict[str, Any] = {}
    try:

        def send() -> None:
            folder = settings.outbox_dir / ISSUE
            started = time.perf_counter()
            result["run"] = service.run(
                settings, send_id, factory=lambda: Probe(folder, db_path, set(), seen)
            )
            result["seconds"] = time.perf_counter() - started
            seen.started.set()

        sender = threading.Thread(target=send, name="burst-send")
        sender.start()
        if not seen.started.wait(timeout=600):
            raise RuntimeError("the send did not start")
        started = time.perf_counter()
        post_results, signup_results, reads = asyncio.run(
            _burst(f"http://127.0.0.1:{port}", paths, signups, rate, in_the_air)
        )
        burst_seconds = time.perf_counter() - started
        sending_during = not result
        sender.join(timeout=1800)
    finally:
        server.terminate()
        server.wait(timeout=60)
        relay.close()
    with closing(sqlite3.connect(db_path)) as conn:
        recorded = conn.execute(
            "SELECT count(DISTINCT subscriber_id) FROM unsubscription WHERE method = 'one-click'"
        ).fetchone()[0]
        queued = dict(
            conn.execute("SELECT status, count(*) FROM web_mail GROUP BY status").fetchall()
        )
    pages = [s * 1000 for _, s in post_results + signup_results + reads]
    return {
        "arrivals": f"{rate:g} a second" if rate else f"{in_the_air} in the air",
        "recipients": recipients,
        "posts": posts,
        "signups": signups,
        "burst_seconds": burst_seconds,
        "requests_per_second": (posts + signups) / burst_seconds,
        "send_still_running_after_burst": sending_during,
        "send_seconds": result.get("seconds", 0.0),
        "posts_not_200": sum(1 for code, _ in post_results if code != 200),
        "signups_not_200": sum(1 for code, _ in signup_results if code != 200),
        "reads": len(reads),
        "reads_not_200": sum(1 for code, _ in reads if code != 200),
        "unsubscribes_lost": posts - recorded,
        "post_p50_ms": statistics.median([s * 1000 for _, s in post_results]),
        "post_p99_ms": _percentile([s * 1000 for _, s in post_results], 0.99),
        "signup_p99_ms": _percentile([s * 1000 for _, s in signup_results], 0.99),
        "page_p99_ms": _percentile(pages, 0.99),
        "relay_connections": len(relay.held),
        "web_mail": queued,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--posts", type=int, default=5_000)
    parser.add_argument("--signups", type=int, default=200)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="requests started a second (0: --in-the-air)"
    )
    parser.add_argument("--in-the-air", type=int, default=200)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mailer-web-burst-"))
    try:
        figures = run(
            workdir, args.recipients, args.posts, args.signups, args.rate, args.in_the_air
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(describe())
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, value in figures.items():
        print(f"{name}: {value:.1f}" if isinstance(value, float) else f"{name}: {value}")


if __name__ == "__main__":
    main()
