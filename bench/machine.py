"""What machine a benchmark ran on, printed at the top of every table.

Figures from one machine mean little on another, and this one is shared: the load average
says how busy it was, which is why every speed figure also comes as a ratio measured in
the same run.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import resource
import sys
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def _os() -> str:
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def describe() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{dt.date.today().isoformat()}, {_os()}, {os.cpu_count()} CPUs ({_cpu_model()}), "
        f"{_memory_gb():.1f} GB, Python {sys.version.split()[0]}, load average {load}"
    )


def child_usage() -> tuple[float, int]:
    """CPU seconds and peak RSS (bytes) of the children waited for so far (Linux: KB)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


if __name__ == "__main__":
    print(describe())
