"""Helpers for the sending tests: a newsletter with a list of subscribers, approved."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def make_list(
    cli: Any, root: Path, slug: str, emails: list[str], name: str = "Practitioners"
) -> None:
    """Create a list and import these addresses into it through the real commands."""
    r = cli("lists", "create", slug, "--name", name)
    assert r.exit_code == 0, r.output
    csv = root / f"{slug}.csv"
    lines = ["email,name"] + [f"{e},{e.split('@')[0].replace('.', ' ').title()}" for e in emails]
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = cli("subscribers", "import", str(csv), "--list", slug)
    assert r.exit_code == 0, r.output


def addresses(n: int, prefix: str = "person") -> list[str]:
    return [f"{prefix}{i:04d}@example.org" for i in range(n)]


def smtp_env(monkeypatch: Any, port: int, **extra: str) -> None:
    monkeypatch.setenv("MAILER_TRANSPORT", "smtp")
    monkeypatch.setenv("MAILER_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("MAILER_SMTP_PORT", str(port))
    monkeypatch.setenv("MAILER_RETRY_BACKOFF", "0.01")
    for key, value in extra.items():
        monkeypatch.setenv(key, value)


def ledger(root: Path) -> dict[str, str]:
    """email -> ledger status of the latest send, read straight from the SQLite file."""
    with sqlite3.connect(root / "subscribers.sqlite") as conn:
        rows = conn.execute(
            "SELECT email, status FROM delivery WHERE send_id = (SELECT MAX(id) FROM send)"
        ).fetchall()
    return dict(rows)


def sql(root: Path, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(root / "subscribers.sqlite") as conn:
        return conn.execute(query, params).fetchall()


def wait_for(condition: Any, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def mailer_process(
    root: Path, *args: str, stdout: Any = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    """A real `mailer` process in the newsletter folder, with the test's environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "mailer", *args],
        cwd=root,
        env=dict(os.environ),
        stdout=stdout,
        stderr=subprocess.PIPE,
    )
