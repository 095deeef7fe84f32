"""Timing: does the answer to a sign-up or a "manage by email" request take longer for some
addresses than for others? It must not, or its time tells a stranger who subscribes.

Run it from the repository: ``.venv/bin/python bench/web_timing.py [--rounds 40]``. Against
the app in this process (no network between), it asks ``/subscribe`` and ``/manage`` for a
subscribed, an unknown and a suppressed address in turn, interleaved and in a changing
order so that all three meet the same machine load, and prints the median time of each
and the ratio of the slowest median to the fastest (the target is at most 1.2). The suite
checks the cause instead (tests/test_web_limits.py: the same statements and the same email
for each), since a time depends on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fastapi.testclient import TestClient
from machine import describe
from web_load import prepare

from mailer import config
from mailer.store.database import open_db
from mailer.subscribers import selfservice
from mailer.subscribers.selfservice import SignupRequest
from mailer.web import create_app

SAME = {"Sec-Fetch-Site": "same-origin"}


def run(workdir: Path, rounds: int) -> dict[str, float]:
    env = {**os.environ, "MAILER_TRANSPORT": "outbox"}
    prepare(workdir, 3, 8000, env)
    settings = config.load(workdir, env=env)
    for command in (
        ["add", "gone@example.org", "--list", "all"],
        ["erase", "gone@example.org", "--yes"],
    ):
        subprocess.run(
            [sys.executable, "-m", "mailer", "subscribers", *command],
            cwd=workdir,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    figures: dict[str, float] = {}
    with TestClient(create_app(settings)) as served:
        served.post("/manage", data={"email": "warm@example.net"}, headers=SAME)
        for path in ("/subscribe", "/manage"):
            times: dict[str, list[float]] = {"subscribed": [], "unknown": [], "suppressed": []}
            for i in range(rounds):
                asks = {
                    "subscribed": f"person{i % 3:05d}@example.org",
                    "unknown": f"new{i}-{path[1:]}@example.net",
                    "suppressed": "gone@example.org",
                }
                order = list(asks)[i % 3 :] + list(asks)[: i % 3]
                for group in order:
                    data = {"email": asks[group], "lists": "all", "consent": "yes"}
                    started = time.perf_counter()
                    answer = served.post(path, data=data, headers=SAME)
                    times[group].append(time.perf_counter() - started)
                    assert answer.status_code == 200, answer.text
            medians = {k: statistics.median(v) for k, v in times.items()}
            for group, value in medians.items():
                figures[f"{path} {group} median ms"] = value * 1000
            figures[f"{path} slowest / fastest"] = max(medians.values()) / min(medians.values())
    # The same asks through the library alone (what the request's thread does), without the
    # test client's hand-over between threads, whose noise on a busy machine is larger than
    # the work.
    database = open_db(settings)
    stamp = time.time()
    times = {"subscribed": [], "unknown": [], "suppressed": []}
    for i in range(rounds * 3):
        asks = {
            "subscribed": f"person{i % 3:05d}@example.org",
            "unknown": f"lib{i}@example.net",
            "suppressed": "gone@example.org",
        }
        for group in list(asks)[i % 3 :] + list(asks)[: i % 3]:
            form = SignupRequest(
                email=asks[group],
                name="",
                organisation="",
                lists=["all"],
                consent=True,
                honeypot="",
                ip="192.0.2.1",
            )
            started = time.perf_counter()
            selfservice.request_signup(database, form, now=stamp)
            times[group].append(time.perf_counter() - started)
    medians = {k: statistics.median(v) for k, v in times.items()}
    for group, value in medians.items():
        figures[f"library sign-up {group} median ms"] = value * 1000
    figures["library sign-up slowest / fastest"] = max(medians.values()) / min(medians.values())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mailer-web-timing-")) / "newsletter"
    try:
        figures = run(workdir, args.rounds)
    finally:
        shutil.rmtree(workdir.parent, ignore_errors=True)
    print(describe())
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, value in figures.items():
        print(f"{name}: {value:.2f}")


if __name__ == "__main__":
    main()
