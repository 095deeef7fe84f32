"""Run every benchmark under bench/ in turn: ``make bench``.

Each script prints the machine it ran on and its table; bench/RESULTS.md keeps the
latest. The send benchmark needs Postfix's smtp-sink and smtp-source, which the Makefile
installs (Debian's postfix, its daemon not started).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SCRIPTS = (
    "startup.py",
    "build.py",
    "send_path.py",
    "send_smtp.py",
    "import_export.py",
    "subscribers_rss.py",
    "web_load.py",
    "web_burst.py",
    "web_timing.py",
    "db_copy.py",
    "scale_workers.py",
    "bounce_reading.py",
)

for script in SCRIPTS:
    print(f"\n== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=True)
