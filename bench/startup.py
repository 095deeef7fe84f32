"""Benchmark: how long ``mailer --help`` takes to start, as a ratio to ``python -c pass``.

Run it from the repository: ``.venv/bin/python bench/startup.py [--runs 21]``. The two
commands alternate, so both see the same load on a shared machine; the medians and their
ratio are printed. The aim: ``mailer --help`` within 25x ``python -c pass``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "mailer --help": [sys.executable, "-m", "mailer", "--help"],
    "mailer --version": [sys.executable, "-m", "mailer", "--version"],
    "mailer lists list": [sys.executable, "-m", "mailer", "lists", "list"],
}


def once(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for command in COMMANDS.values():  # warm the file cache once
        once(command)
    for _ in range(args.runs):
        for name, command in COMMANDS.items():
            times[name].append(once(command))
    base = statistics.median(times["python -c pass"])
    print(f"start-up, median of {args.runs} alternating runs:")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<20} {median * 1000:7.1f} ms  {median / base:5.1f}x python -c pass")


if __name__ == "__main__":
    main()
