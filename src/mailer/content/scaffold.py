"""``mailer new``: a new issue folder from a commented template."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path

from mailer.config import Settings
from mailer.content.awareness import calendar
from mailer.content.load import SLUG
from mailer.errors import ContentError, Problem

# Awareness days this far after the issue's date are suggested in a new issue.
SUGGEST_DAYS = 35
_GENERIC_AWARENESS = (
    "  # - type: awareness\n"
    "  #   title: Safer Internet Day\n"
    "  #   date: 2026-02-10                     "
    "# or, for a campaign, start: 2026-02-01 and end: 2026-02-28\n"
    "  #   body: |\n"
    "  #     What the day is about and how practitioners can take part."
)


def awareness_suggestions(day: dt.date) -> str:
    """Commented awareness sections for the days in the calendar soon after ``day``."""
    found = calendar().between(day, day + dt.timedelta(days=SUGGEST_DAYS))
    if not found:
        return _GENERIC_AWARENESS
    lines = [
        f"  # Awareness days in the five weeks from {day.day} {day:%B %Y}, from mailer's calendar",
        "  # (see: mailer awareness). Uncomment the ones this issue covers:",
    ]
    for o in found:
        when = (
            [f"  #   date: {o.start.isoformat()}"]
            if o.single
            else [f"  #   start: {o.start.isoformat()}", f"  #   end: {o.end.isoformat()}"]
        )
        lines += [
            "  #",
            "  # - type: awareness",
            f'  #   title: "{o.day.name}"',
            *when,
            "  #   body: |",
            f"  #     What it is about and how practitioners can take part ({o.day.source}).",
        ]
    return "\n".join(lines)


def template_text(day: dt.date) -> str:
    text = (
        resources.files("mailer.content")
        .joinpath("issue_template.yaml")
        .read_text(encoding="utf-8")
    )
    return (
        text.replace("{date}", day.isoformat())
        .replace("{month}", f"{day:%B %Y}")
        .replace("{awareness}", awareness_suggestions(day))
    )


def new_issue(settings: Settings, slug: str, day: dt.date) -> Path:
    folder = settings.issues_dir / slug
    # Name the folder as the user sees it from the newsletter folder, like mailer build does.
    shown = f"{settings.issues_dir.relative_to(settings.root)}/{slug}"
    if not SLUG.fullmatch(slug):
        message = (
            f"{slug!r} is not a valid slug: use lower-case letters, digits and '-' like 2026-01"
        )
        raise ContentError([Problem(shown, None, "", message)])
    if folder.exists():
        raise ContentError([Problem(shown, None, "", "already exists; choose another slug")])
    (folder / "images").mkdir(parents=True)
    path = folder / "issue.yaml"
    path.write_text(template_text(day), encoding="utf-8")
    return path
