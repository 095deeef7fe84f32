"""Benchmark: `mailer build` of each example issue, cold and warm.

Run it from the repository: ``.venv/bin/python bench/build.py [--runs 5]``. Cold is a
fresh ``mailer build SLUG`` process (start-up, imports, templates and MJML loaded, the
issue compiled and written); warm is the same build again in a process that has built
once already (the median of ``--runs``), taking turns with the same build after the
parsed templates were dropped (as every build did before they were kept per process),
whose ratio is the saving. It prints figures and asserts nothing.
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from machine import describe  # noqa: E402

from mailer import config  # noqa: E402
from mailer.render import compile as compiler  # noqa: E402
from mailer.site import build as builder  # noqa: E402

SLUGS = ("2021-12", "2025-11")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("MAILER_SECRET_KEY", "bench-only-secret-key-with-at-least-32-bytes")
    print(describe())
    with tempfile.TemporaryDirectory(prefix="mailer-build-") as tmp:
        root = Path(tmp)
        shutil.copy(REPO / "mailer.toml", root / "mailer.toml")
        shutil.copytree(REPO / "issues", root / "issues")
        settings = config.load(root)
        print(
            "| issue | cold (a fresh process) | warm (built before in the process) "
            "| warm, templates parsed again | ratio |"
        )
        print("|---|---|---|---|---|")
        for slug in SLUGS:
            cold: list[float] = []
            for _ in range(args.runs):
                shutil.rmtree(root / "build", ignore_errors=True)
                shutil.rmtree(settings.preview_dir, ignore_errors=True)  # drafts build there
                start = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "mailer", "build", slug],
                    cwd=root,
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                cold.append(time.perf_counter() - start)
            builder.build(settings, [slug])
            warm: list[float] = []
            reparsed: list[float] = []
            for _ in range(args.runs):
                start = time.perf_counter()
                builder.build(settings, [slug])
                warm.append(time.perf_counter() - start)
                compiler._ENVIRONMENTS.clear()
                start = time.perf_counter()
                builder.build(settings, [slug])
                reparsed.append(time.perf_counter() - start)
            w, r = statistics.median(warm), statistics.median(reparsed)
            print(
                f"| {slug} | {statistics.median(cold) * 1000:,.0f} ms | {w * 1000:,.0f} ms "
                f"| {r * 1000:,.0f} ms | {w / r:.2f}× |"
            )


if __name__ == "__main__":
    main()
