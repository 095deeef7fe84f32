"""Benchmark: import 100,000 subscribers from CSV, then export and list them.

Run it from the repository: ``.venv/bin/python bench/import_export.py [--rows 100000]``.
It works in a temporary newsletter folder and prints figures; it asserts nothing, because
timings depend on the machine. The target (issue 3) is an import of 100,000 rows in under
10 s on a 2-core machine, and export and listing that stream: their peak memory should
be about the same for 10,000 and for 100,000 rows.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from mailer import config  # noqa: E402
from mailer.store import people as store  # noqa: E402
from mailer.store.database import open_db  # noqa: E402
from mailer.store.models import Suppression, SuppressionReason  # noqa: E402
from mailer.store.suppression import address_hash  # noqa: E402
from mailer.subscribers import csv_export, roster  # noqa: E402
from mailer.subscribers import csv_import as importer  # noqa: E402

FIRST = ["amira", "ben", "chloe", "dev", "erin", "finn", "grace", "harry", "isla", "jack"]
LAST = ["hussain", "ellis", "nixon", "patel", "walsh", "robson", "jones", "smith", "khan", "lee"]
ORGS = ["Carlisle Primary School", "Cumbria Constabulary", "Children's Social Care", "NHS"]


def write_csv(path: Path, rows: int, seed: int = 3) -> None:
    """A spreadsheet export as it arrives: mixed case, stray spaces, ~1% duplicates and
    ~1% invalid addresses, spread over a few hundred organisations' domains."""
    rng = random.Random(seed)
    domains = [f"org{n}.example.org" for n in range(300)] + ["nhs.example.net", "Schools.EXAMPLE"]
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("Email Address,Full name,Organisation\r\n")
        earlier: list[str] = []
        for i in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            address = f"{first}.{last}{i}@{rng.choice(domains)}"
            roll = rng.random()
            if roll < 0.01:
                address = address.replace("@", "@@")
            elif roll < 0.02 and earlier:
                address = rng.choice(earlier).title()
            elif roll < 0.10:
                address = f"  {address.upper()} "
            if len(earlier) < 1000:
                earlier.append(address)
            out.write(f"{address},{first.title()} {last.title()},{rng.choice(ORGS)}\r\n")


class _Sink(io.TextIOBase):
    """Counts what is written, like a file on a fast disk, without keeping it."""

    def __init__(self) -> None:
        self.chars = 0

    def write(self, s: str) -> int:
        self.chars += len(s)
        return len(s)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def peak(fn: Callable[[], Any]) -> tuple[Any, int]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    rows, small = args.rows, args.rows // 10
    os.environ.setdefault("MAILER_SECRET_KEY", "bench-only-secret-key-with-at-least-32-bytes")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy(REPO / "mailer.toml", root / "mailer.toml")
        settings = config.load(root)
        big_csv, small_csv = root / "big.csv", root / "small.csv"
        write_csv(big_csv, rows)
        write_csv(small_csv, small)
        print(f"{rows:,} rows, {big_csv.stat().st_size / 1e6:.1f} MB of CSV; {os.cpu_count()} CPUs")

        with open_db(settings) as db:
            with db.session(write=True) as session:
                for slug in ("all", "small", "again"):
                    store.create_list(session, slug, slug.title())
                # Some erased addresses, so every import checks the suppression list.
                key = settings.require_secret_key()
                for n in range(100):
                    digest = address_hash(key, f"gone{n}@example.org")
                    session.add(Suppression(email_hash=digest, reason=SuppressionReason.ERASED))

            report, t_import = timed(lambda: importer.import_file(db, big_csv, "all"))
            _, t_again = timed(lambda: importer.import_file(db, big_csv, "all"))
            importer.import_file(db, small_csv, "small")
            _, t_dry = timed(lambda: importer.import_file(db, big_csv, "again", dry_run=True))
            print(
                f"import       {t_import:6.2f} s  {report.rows / t_import:9,.0f} rows/s  "
                f"(added {report.added:,}, invalid {len(report.invalid):,}, "
                f"duplicates {len(report.duplicates):,})  target < 10 s"
            )
            print(f"re-import    {t_again:6.2f} s  {rows / t_again:9,.0f} rows/s  (all already on)")
            print(f"dry run      {t_dry:6.2f} s  {rows / t_dry:9,.0f} rows/s  (into another list)")

            n, t_export = timed(lambda: csv_export.export_csv(db, _Sink()))
            print(f"export       {t_export:6.2f} s  {n / t_export:9,.0f} rows/s  ({n:,} rows)")
            n, t_list = timed(lambda: sum(1 for _ in roster.rows(db)))
            print(f"list         {t_list:6.2f} s  {n / t_list:9,.0f} rows/s")
            recipients, t_send = timed(lambda: sum(1 for _ in _recipients(db, ["all", "small"])))
            print(f"recipients   {t_send:6.2f} s  {recipients / t_send:9,.0f} rows/s")

            print("\nPeak memory (tracemalloc), small vs large:")
            for label, fn_small, fn_big in (
                (
                    "export",
                    lambda: csv_export.export_csv(db, _Sink(), list_slug="small"),
                    lambda: csv_export.export_csv(db, _Sink(), list_slug="all"),
                ),
                (
                    "list",
                    lambda: sum(1 for _ in roster.rows(db, list_slug="small")),
                    lambda: sum(1 for _ in roster.rows(db, list_slug="all")),
                ),
                (
                    "import",
                    lambda: importer.import_file(db, small_csv, "again", dry_run=True),
                    lambda: importer.import_file(db, big_csv, "again", dry_run=True),
                ),
            ):
                _, a = peak(fn_small)
                _, b = peak(fn_big)
                print(
                    f"{label:<8} {small:>7,} rows {a / 1e6:6.1f} MB   {rows:>7,} rows "
                    f"{b / 1e6:6.1f} MB   ratio {b / a:4.1f}"
                )


def _recipients(db: Any, slugs: list[str]) -> Any:
    with db.session() as session:
        ids = [store.get_list(session, s).id for s in slugs]
        yield from store.eligible_recipients(session, ids)


if __name__ == "__main__":
    main()
