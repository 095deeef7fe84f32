"""``mailer new``: a new issue folder from a commented template."""

from __future__ import annotations

import datetime as dt
import functools
from importlib import resources
from pathlib import Path

from ruamel.yaml import YAML

from mailer.config import Settings
from mailer.content.awareness import calendar
from mailer.content.load import SLUG
from mailer.content.model import Issue
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


def template_text(day: dt.date, name: str = "Newsletter") -> str:
    """The commented issue.yaml of `mailer new`; the subject starts with ``name``."""
    text = (
        resources.files("mailer.content")
        .joinpath("issue_template.yaml")
        .read_text(encoding="utf-8")
    )
    # A name is one line of text (mailer.toml refuses control characters); quotes and
    # backslashes are escaped so it stays inside the subject's double quotes.
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return (
        text.replace("{date}", day.isoformat())
        .replace("{month}", f"{day:%B %Y}")
        .replace("{name}", quoted)
        .replace("{awareness}", awareness_suggestions(day))
    )


@functools.cache
def _placeholders() -> dict[str, str]:
    """The template's own sample text, by what it is, to recognise an untouched copy."""
    data = YAML(typ="safe").load(template_text(dt.date(2000, 1, 1)))
    section = data["sections"][0]
    found = {
        "preheader": data["preheader"],
        "the first section's title": section["title"],
        "the first section's body": section["body"],
    }
    return {key: " ".join(str(value).split()) for key, value in found.items()}


def untouched(issue: Issue) -> list[str]:
    """What of ``issue`` is still the `mailer new` template's sample text, word for word
    (the subject and the welcome aside: they may well be the ones wanted)."""
    texts = {"preheader": issue.preheader}
    for section in issue.sections:
        texts.setdefault("the first section's title", section.title)
        texts.setdefault("the first section's body", section.body)
    sample = _placeholders()
    return [key for key, value in sample.items() if " ".join(texts.get(key, "").split()) == value]


def check_new_slug(settings: Settings, slug: str) -> Path:
    """The folder of a new issue ``slug``; ContentError if the slug is invalid or taken."""
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
    return folder


def new_issue(settings: Settings, slug: str, day: dt.date) -> Path:
    folder = check_new_slug(settings, slug)
    (folder / "images").mkdir(parents=True)
    path = folder / "issue.yaml"
    path.write_text(template_text(day, settings.name), encoding="utf-8")
    return path
