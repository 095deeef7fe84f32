"""What a check is, what it finds, and the registry of every check.

A check is one small function, registered with :func:`check` under a stable code, a
severity and a fix hint. It looks at a :class:`Context` (the issue, compiled once, and the
date it goes out) and yields :class:`Hit` objects; the runner turns them into
:class:`Finding` objects, drops the codes silenced in mailer.toml and sorts them.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from mailer.content.awareness import Calendar, calendar

if TYPE_CHECKING:
    from mailer.checks.fetch import FetchLimits, Network
    from mailer.checks.source import Source
    from mailer.config import Settings
    from mailer.content import Issue
    from mailer.render import CompiledIssue


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"

    @property
    def rank(self) -> int:
        return {"error": 0, "warning": 1, "note": 2}[self.value]


@dataclass(frozen=True)
class Finding:
    """One thing a check found, located by file and line, with what to do about it."""

    severity: Severity
    code: str
    message: str
    file: str
    line: int | None
    hint: str

    def as_dict(self) -> dict[str, object]:
        """The stable JSON form documented in docs/check.md."""
        return {
            "severity": str(self.severity),
            "code": self.code,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "hint": self.hint,
        }

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.code}: {self.message}"


@dataclass(frozen=True)
class Hit:
    """What a check function yields: the message, where, and a hint when the default won't do."""

    message: str
    line: int | None = None
    hint: str | None = None
    # Another file than issue.yaml (mailer.toml for brand colours).
    file: str | None = None


@dataclass
class Context:
    """Everything a check may look at."""

    settings: Settings
    compiled: CompiledIssue
    send_date: dt.date
    source: Source
    online: bool = False
    # Results that several checks share, worked out once per run.
    memo: dict[str, Any] = field(default_factory=dict)
    # How --online reaches the network, and what one URL may cost: tests pass their own.
    network: Network | None = None
    fetch_limits: FetchLimits | None = None

    @property
    def issue(self) -> Issue:
        return self.compiled.issue

    @functools.cached_property
    def calendar(self) -> Calendar:
        return calendar()

    @functools.cached_property
    def holidays(self) -> dict[dt.date, str]:
        """Bank holidays of the configured part of the UK, around the send date and sessions."""
        import holidays

        years = {self.send_date.year, self.issue.date.year}
        for section in self.issue.sections:
            years.update(s.date.year for s in section.sessions)
        found = holidays.country_holidays(
            "GB", subdiv=self.settings.checks.bank_holidays, years=sorted(years)
        )
        return {day: str(name) for day, name in found.items()}


CheckFunction = Callable[[Context], Iterable[Hit]]


@dataclass(frozen=True)
class Check:
    code: str
    severity: Severity
    summary: str
    hint: str
    function: CheckFunction
    online: bool = False


# Every check, by code, in the order the modules register them.
CHECKS: dict[str, Check] = {}


def check(
    code: str, severity: Severity, summary: str, hint: str, *, online: bool = False
) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check function under ``code``."""

    def register(function: CheckFunction) -> CheckFunction:
        if code in CHECKS:
            raise ValueError(f"two checks share the code {code!r}")
        CHECKS[code] = Check(code, severity, summary, hint, function, online)
        return function

    return register


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def quote(text: str, limit: int = 60) -> str:
    """Text as it appears in a message: quoted, on one line, cut if long."""
    flat = " ".join(text.split())
    return f'"{flat if len(flat) <= limit else flat[: limit - 1] + "…"}"'
