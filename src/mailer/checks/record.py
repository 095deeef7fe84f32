"""When the preflight last ran, kept so the accessibility statement can say so truthfully.

`mailer check`, and the checks `approve`, `send` and `schedule` run, write the day, the
issue and the accessibility checks that ran to ``.mailer/checks-last-run.json`` (0600 in
the 0700 state folder). The web statement reads it back; with no record it says the
checks have not run yet rather than inventing a date.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass

from mailer.checks.registry import CHECKS
from mailer.config import Settings

RECORD_FILE = "checks-last-run.json"
# The checks that are about accessibility, in the order the statement lists them.
ACCESSIBILITY_CHECKS = (
    "image-alt-missing",
    "image-alt-useless",
    "colour-contrast",
    "heading-skip",
    "link-generic",
    "all-caps",
)


@dataclass(frozen=True)
class LastRun:
    day: dt.date
    slug: str
    # The accessibility checks that ran (those not silenced in mailer.toml).
    codes: tuple[str, ...]


def accessibility_checks(settings: Settings) -> tuple[str, ...]:
    """The accessibility checks this folder runs: those not in [checks] ignore."""
    return tuple(c for c in ACCESSIBILITY_CHECKS if c in CHECKS and c not in settings.checks.ignore)


def record(settings: Settings, slug: str) -> None:
    """Write down that the checks ran today on issue ``slug``."""
    state = settings.state_dir
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    day = settings.today()
    text = json.dumps(
        {"day": day.isoformat(), "slug": slug, "codes": accessibility_checks(settings)}
    )
    partial = state / f"{RECORD_FILE}.part"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(partial, state / RECORD_FILE)


def last_run(settings: Settings) -> LastRun | None:
    """The last record, or None if the checks never ran here (or the record is unreadable)."""
    try:
        data = json.loads((settings.state_dir / RECORD_FILE).read_text(encoding="utf-8"))
        return LastRun(
            dt.date.fromisoformat(data["day"]),
            str(data["slug"]),
            tuple(str(c) for c in data["codes"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
