"""Benchmark: ``mailer db copy`` of 10,000 and 100,000 subscribers into PostgreSQL.

Run it from the repository: ``.venv/bin/python bench/db_copy.py [--rows 10000 100000]``.
Each size is a newsletter whose SQLite file holds that many people on one list (with their
memberships and consent records: three rows each), imported by a real ``mailer
subscribers import``; the copy is a real ``mailer db copy`` process into an empty database
on a throwaway PostgreSQL cluster (tests/pg_server.py, Debian's PostgreSQL). It prints
the copy's time, rows per second and peak RSS for each size, and the ratio of the peaks:
the copy streams in batches, so the peak should barely grow with the data. It asserts
nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from import_export import write_csv  # noqa: E402
from machine import describe  # noqa: E402

from pg_server import PostgresServer  # noqa: E402


def run(root: Path, *args: str) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one `mailer` command in ``root``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_SECRET_KEY"] = "bench-only-secret-key-with-at-least-32-bytes"
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", *args],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"mailer {' '.join(args)} failed")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    print(describe())
    print("| people | rows copied | copy | peak RSS |")
    print("|---|---|---|---|")
    peaks: list[float] = []
    with PostgresServer() as server:
        for people in args.rows:
            with tempfile.TemporaryDirectory(prefix="mailer-copy-") as tmp:
                root = Path(tmp)
                shutil.copy(REPO / "mailer.toml", root / "mailer.toml")
                csv = root / "people.csv"
                write_csv(csv, people)
                run(root, "lists", "create", "all", "--name", "All")
                run(root, "subscribers", "import", str(csv), "--list", "all")
                name = server.create_database()
                try:
                    seconds, peak = run(root, "db", "copy", "--to", server.url(name))
                    rows = sum(
                        _count(server, name, table)
                        for table in ("subscriber", "membership", "consent", "mailing_list")
                    )
                finally:
                    server.drop_database(name)
            peaks.append(peak)
            print(
                f"| {people:,} | {rows:,} | {seconds:,.1f} s ({rows / seconds:,.0f} rows/s) | "
                f"{peak:,.0f} MB |"
            )
    if len(peaks) > 1:
        print(f"\nPeak RSS of the largest copy / the smallest: {peaks[-1] / peaks[0]:.2f}")


def _count(server: PostgresServer, database: str, table: str) -> int:
    import psycopg

    with psycopg.connect(server.url(database).replace("postgresql+psycopg", "postgresql")) as c:
        row = c.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[arg-type]
        assert row is not None
        return int(row[0])


if __name__ == "__main__":
    main()
