"""Helpers for the sending tests: a newsletter with a list of subscribers, approved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from db_helpers import query


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
    """email -> ledger status of the latest send, read straight from the database."""
    rows = query(
        root, "SELECT email, status FROM delivery WHERE send_id = (SELECT MAX(id) FROM send)"
    )
    return dict(rows)


def sql(root: Path, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of ``statement`` in the newsletter's database (db_helpers.query)."""
    return query(root, statement, *params)


class Lines:
    """Every line a process writes to a stream, read as it comes, so a test can wait for a
    line (an event the process reports) instead of sleeping."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace"))
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_for(self, fragment: str, timeout: float = 120.0) -> str:
        """The first line containing ``fragment``; fails if the stream ends or time is up."""

        def found() -> str | None:
            return next((line for line in self.lines if fragment in line), None)

        with self.cond:
            ok = self.cond.wait_for(lambda: found() is not None or self.closed, timeout)
            line = found()
        assert ok and line is not None, f"{fragment!r} never came; got:\n{self.text()}"
        return line

    def wait_until(self, done: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
        """``done()``'s first true answer, asked now and again each time the process writes a
        line (the event after which it may have changed); fails naming ``what`` if the
        stream ends or time is up first."""
        answer: list[Any] = []

        def ready() -> bool:
            answer[:] = [done()]
            return bool(answer[0]) or self.closed

        with self.cond:
            ok = self.cond.wait_for(ready, timeout)
        assert ok and answer[0], f"{what} never happened; the process wrote:\n{self.text()}"
        return answer[0]

    def text(self) -> str:
        with self.cond:
            return "".join(self.lines)

    def close(self) -> None:
        """After the process has exited: read what is left and close the stream."""
        self.thread.join(timeout=120)
        self.stream.close()


def ctrl_c_works() -> None:
    """In a child process: Ctrl-C (SIGINT) raises KeyboardInterrupt as in a terminal, even
    when the tests themselves run in the background, where the shell ignores it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
        preexec_fn=ctrl_c_works,
    )
