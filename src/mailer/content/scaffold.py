"""``mailer new``: a new issue folder from a commented template."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path

from mailer.config import Settings
from mailer.content.load import SLUG
from mailer.errors import ContentError, Problem


def template_text(day: dt.date) -> str:
    text = (
        resources.files("mailer.content")
        .joinpath("issue_template.yaml")
        .read_text(encoding="utf-8")
    )
    return text.replace("{date}", day.isoformat()).replace("{month}", f"{day:%B %Y}")


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
