"""Benchmark: importing and exporting 100,000 and 1,000,000 subscribers, with peak memory.

Run it from the repository: ``.venv/bin/python bench/subscribers_rss.py [--rows 100000
1000000]``. Each step is a real ``mailer subscribers import`` or ``export`` process, so
the peak RSS is what a user's machine would see (the target: a 1,000,000-row import under
200 MB). The CSV is the messy one bench/import_export.py writes (mixed case, stray
spaces, about 1% invalid and 1% duplicate rows). It prints figures and asserts nothing.
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

from import_export import write_csv  # noqa: E402
from machine import describe  # noqa: E402


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
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    print(describe())
    print("| rows | import | import peak RSS | export | export peak RSS |")
    print("|---|---|---|---|---|")
    for rows in args.rows:
        with tempfile.TemporaryDirectory(prefix="mailer-subscribers-") as tmp:
            root = Path(tmp)
            shutil.copy(REPO / "mailer.toml", root / "mailer.toml")
            csv = root / "people.csv"
            write_csv(csv, rows)
            run(root, "lists", "create", "all", "--name", "All")
            t_import, rss_import = run(root, "subscribers", "import", str(csv), "--list", "all")
            t_export, rss_export = run(root, "subscribers", "export", "-o", str(root / "out.csv"))
            print(
                f"| {rows:,} | {t_import:,.1f} s ({rows / t_import:,.0f} rows/s) | "
                f"{rss_import:,.0f} MB | {t_export:,.1f} s | {rss_export:,.0f} MB |"
            )


if __name__ == "__main__":
    main()
