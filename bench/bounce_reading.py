"""Benchmark: reading returned mail under limits, as ratios to the standard library parser.

Run it from the repository: ``.venv/bin/python bench/bounce_reading.py [--runs 5]``.

- The real messages of the bounce tables (tests/data/bounces/corpus and heldout, 273
  messages, downloaded by ``make bounce-data``, which ``make bench`` runs):
  ``mailer.bounces.classify`` against ``email.message_from_bytes`` alone, messages per
  second and the ratio.
- Poison messages: how long the structure check takes to refuse 1,000 nested multiparts,
  5,000 parts and 3,000 nested message/rfc822 parts (the parser alone raises
  RecursionError on two of them, after how long is shown too).

The two contenders take turns in each run; the medians are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import email
import email.policy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from machine import describe  # noqa: E402

from fetch_bounce_sources import MAKE_TARGET, MESSAGES, STAMP  # noqa: E402
from mailer.bounces import classify  # noqa: E402
from mailer.bounces.reading import Deadline, ReadingLimits, check_structure  # noqa: E402
from mailer.errors import UnreadableMessage  # noqa: E402

TABLES = [REPO / "tests" / "data" / "bounces" / name for name in ("corpus", "heldout")]


def real_messages() -> list[bytes]:
    """Every message the bounce tables name, read from the download cache."""
    if not STAMP.is_file():
        sys.exit(f"bounce_reading: the real messages are not in {MESSAGES}: run `{MAKE_TARGET}`")
    names: set[str] = set()
    for folder in TABLES:
        with (folder / "expected.csv").open(encoding="utf-8", newline="") as f:
            names |= {row["file"] for row in csv.DictReader(f)}
    return [(MESSAGES / name).read_bytes() for name in sorted(names)]


def nested(n: int) -> bytes:
    body = b"".join(
        b'--b%d\r\nContent-Type: multipart/mixed; boundary="b%d"\r\n\r\n' % (i, i + 1)
        for i in range(n)
    )
    return b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n' + body


def parts(n: int) -> bytes:
    one = b"--p\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    return b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + one * n + b"--p--\r\n"


def messages(n: int) -> bytes:
    return b"Content-Type: message/rfc822\r\n\r\n" * n + b"\r\nx\r\n"


def timed(work: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    with contextlib.suppress(UnreadableMessage, RecursionError):
        work(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    corpus = real_messages()
    print(describe())

    def parse_all() -> None:
        for raw in corpus:
            email.message_from_bytes(raw, policy=email.policy.compat32)

    def classify_all() -> None:
        for raw in corpus:
            classify(raw)

    parsed, classified = [], []
    for _ in range(args.runs):
        parsed.append(timed(parse_all))
        classified.append(timed(classify_all))
    p, c = statistics.median(parsed), statistics.median(classified)
    print(f"real returned mail: {len(corpus)} messages")
    print(f"  email.message_from_bytes: {len(corpus) / p:8.0f} msg/s")
    print(f"  mailer.bounces.classify:  {len(corpus) / c:8.0f} msg/s  ({c / p:.1f}x the time)")
    limits = ReadingLimits()
    for name, raw in (
        ("1,000 nested multipart/mixed", nested(1000)),
        ("5,000 parts", parts(5000)),
        ("3,000 nested message/rfc822", messages(3000)),
    ):
        check = [timed(check_structure, raw, limits, Deadline(60)) for _ in range(args.runs)]
        alone = [timed(email.message_from_bytes, raw) for _ in range(args.runs)]
        print(
            f"{name} ({len(raw):,} bytes): refused in {statistics.median(check) * 1000:.1f} ms; "
            f"the parser alone {statistics.median(alone) * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
