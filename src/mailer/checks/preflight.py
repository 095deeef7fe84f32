"""Running the checks: for ``mailer check``, and before approve, send and scheduled sends."""

from __future__ import annotations

import datetime as dt
import difflib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

# Each module registers its checks on import; this order is the order of docs/check.md.
from mailer.checks import (
    access,
    awareness_days,
    calendars,
    dates,
    leftovers,
    links,
    online,
    output,
    spam,
)
from mailer.checks.record import record
from mailer.checks.registry import CHECKS, Context, Finding, Severity
from mailer.checks.source import Source
from mailer.config import CONFIG_NAME, Settings
from mailer.content.overrides import issue_settings
from mailer.errors import ChecksFailed, ConfigError, InvalidInput
from mailer.formats import long_date
from mailer.render import CompiledIssue

if TYPE_CHECKING:
    from mailer.checks.fetch import FetchLimits, Network

__all__ = [
    "access",
    "awareness_days",
    "calendars",
    "dates",
    "leftovers",
    "links",
    "online",
    "output",
    "spam",
]

log = logging.getLogger("mailer.checks")
# How many errors a refusal names before it says "and N more".
SHOWN = 8
SKIP_REASON_MAX = 300


@dataclass(frozen=True)
class Report:
    slug: str
    send_date: dt.date
    findings: list[Finding]

    def of(self, severity: Severity) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    @property
    def errors(self) -> list[Finding]:
        return self.of(Severity.ERROR)


def _ignored(settings: Settings) -> set[str]:
    ignored = set(settings.checks.ignore)
    for code in sorted(ignored - set(CHECKS)):
        close = difflib.get_close_matches(code, list(CHECKS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{settings.root / CONFIG_NAME}: checks.ignore: there is no check {code!r}{hint}; "
            "docs/check.md lists them"
        )
    return ignored


def run(
    settings: Settings,
    compiled: CompiledIssue,
    send_date: dt.date,
    *,
    online: bool = False,
    text: str | None = None,
    network: Network | None = None,
    fetch_limits: FetchLimits | None = None,
) -> Report:
    """Every check not silenced in mailer.toml; the network ones only when ``online``.
    ``text``: the issue.yaml the issue was compiled from, if not the file on disk."""
    ignored = _ignored(settings)
    # Judged with the issue's own settings (its brand colours, its footer), as it is sent.
    issue_wide = issue_settings(settings, compiled.issue)
    ctx = Context(
        issue_wide,
        compiled,
        send_date,
        Source(compiled.issue, settings.root, text),
        online,
        network=network,
        fetch_limits=fetch_limits,
    )
    findings = []
    for check in CHECKS.values():
        if check.code in ignored or (check.online and not online):
            continue
        for hit in check.function(ctx):
            findings.append(
                Finding(
                    severity=check.severity,
                    code=check.code,
                    message=hit.message,
                    file=hit.file or ctx.source.file,
                    line=hit.line,
                    hint=hit.hint or check.hint,
                )
            )
    findings.sort(key=lambda f: (f.severity.rank, f.file, f.line or 0, f.code))
    return Report(compiled.issue.slug, send_date, findings)


# The last few reports, so `mailer send` checks once for its preview and its send.
_RECENT: dict[tuple[object, ...], Report] = {}


def _cached_run(settings: Settings, compiled: CompiledIssue, send_date: dt.date) -> Report:
    key = (settings, compiled.content_hash, compiled.issue, send_date)
    if key not in _RECENT:
        if len(_RECENT) >= 4:
            _RECENT.pop(next(iter(_RECENT)))
        _RECENT[key] = run(settings, compiled, send_date)
    return _RECENT[key]


def clean_reason(reason: str | None) -> str | None:
    """A --skip-checks reason as it is stored: one line of plain text, or InvalidInput."""
    if reason is None:
        return None
    text = " ".join(reason.split())
    if not text:
        raise InvalidInput(
            '--skip-checks needs a reason, e.g. --skip-checks "dates confirmed by phone"'
        )
    if len(text) > SKIP_REASON_MAX:
        raise InvalidInput(f"--skip-checks: keep the reason under {SKIP_REASON_MAX} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidInput("--skip-checks: the reason must be plain text")
    return text


def require_clean(
    settings: Settings, compiled: CompiledIssue, send_date: dt.date, skip_reason: str | None
) -> Report | None:
    """The checks for ``send_date``; ChecksFailed if any is an error and no reason to skip
    them was given. None when mailer.toml turns the checks off before sending."""
    reason = clean_reason(skip_reason)
    if not settings.checks.enforce:
        return None
    report = _cached_run(settings, compiled, send_date)
    record(settings, report.slug)
    errors = report.errors
    slug = compiled.issue.slug
    if errors and reason is not None:
        log.info(
            "%s: going ahead despite %d check error(s) (%s): %s",
            slug,
            len(errors),
            ", ".join(sorted({f.code for f in errors})),
            reason,
        )
        return report
    if errors:
        lines = [
            f"{slug} has {len(errors)} check error{'s' if len(errors) != 1 else ''} for a send on "
            f"{long_date(send_date)}:"
        ]
        lines += [f"  {f}" for f in errors[:SHOWN]]
        if len(errors) > SHOWN:
            lines.append(f"  and {len(errors) - SHOWN} more")
        lines.append(
            f"See each fix with: mailer check {slug} --send-date {send_date.isoformat()}; "
            'or, if you are sure, add --skip-checks "why"'
        )
        raise ChecksFailed("\n".join(lines))
    return report
