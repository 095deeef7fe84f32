"""``mailer new SLUG --from PREVIOUS``: start an issue from the last one.

Most sections of a monthly newsletter recur: the training programme, the learning
resources, the standing news. The new issue keeps them, with their images, and drops what
is past by its own date: training sessions before it, courses left with no session on or
after it, awareness days over by then, and ``closes:`` dates that have passed. The intro
is not carried: it was written for last month ("Welcome to the December newsletter").
Whatever was carried over is marked with a ``REVIEW`` comment saying what to check;
comments never reach the email, and `mailer check` reports each mark left as an error
(``review-mark``). Training courses and their sessions get the ``id:`` they had, so their
calendar entries follow them when a date moves.
"""

from __future__ import annotations

import calendar
import datetime as dt
import io
import re
import shutil
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from mailer.config import Settings
from mailer.content.load import ISSUE_FILE, load_issue
from mailer.content.model import Section
from mailer.content.scaffold import check_new_slug
from mailer.errors import ContentError, Problem

_MONTH_YEAR = re.compile(rf"\b({'|'.join(calendar.month_name[1:])}) (\d{{4}})\b")


def _as_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        return None


def _shift_months(day: dt.date, months: int) -> tuple[int, int]:
    index = day.year * 12 + day.month - 1 + months
    return index // 12, index % 12 + 1


def new_subject(subject: str, old_date: dt.date, new_date: dt.date, slug: str = "") -> str:
    """The subject with its "November 2025" moved on to the new issue's month.

    That month is the slug's when the slug is one (``2026-01``); otherwise the subject's
    month moves as far as the issue's date did, since a subject often names the month
    after the date it is sent (30 October for November).
    """
    found = _MONTH_YEAR.search(subject)
    if not found:
        return subject
    by_slug = re.fullmatch(r"(\d{4})-(\d{2})", slug)
    if by_slug and 1 <= int(by_slug[2]) <= 12:
        year, month = int(by_slug[1]), int(by_slug[2])
    else:
        named = dt.date(int(found[2]), list(calendar.month_name).index(found[1]), 1)
        offset = (named.year - old_date.year) * 12 + named.month - old_date.month
        year, month = _shift_months(new_date, offset)
    return (
        subject[: found.start()] + f"{calendar.month_name[month]} {year}" + subject[found.end() :]
    )


def _review(node: CommentedMap, key: str, text: str) -> None:
    node.yaml_add_eol_comment(f"REVIEW: {text}", key)


def _carry_section(section: CommentedMap, day: dt.date, source: str) -> bool:
    """Update one section for an issue dated ``day``; False if it should be dropped."""
    kind = section.get("type")
    if kind == "awareness":
        last = _as_date(section.get("end") or section.get("date"))
        if last is not None and last < day:
            return False
        _review(section, "type", f"carried over from {source}: is the text still right?")
        return True
    notes = []
    if "closes" in section:
        closes = _as_date(section["closes"])
        if closes is not None and closes < day:
            del section["closes"]
            notes.append(f"its deadline ({closes.isoformat()}) had passed and was removed")
    if kind == "training":
        sessions = section.get("sessions")
        sessions = sessions if isinstance(sessions, CommentedSeq) else CommentedSeq()
        kept = [s for s in sessions if (_as_date(s.get("date")) or day) >= day]
        if not kept:
            # A course with no session still to come is last month's news.
            return False
        dropped = len(sessions) - len(kept)
        sessions[:] = kept
        if dropped:
            notes.append(f"{dropped} past session(s) removed: any new dates?")
        elif not notes:
            notes.append(f"carried over from {source}: are the dates still right?")
    _review(section, "type", "; ".join(notes) or f"carried over from {source}: still current?")
    return True


def start_from(settings: Settings, slug: str, previous: str, day: dt.date) -> Path:
    """Write ``issues/SLUG/issue.yaml`` from ``previous``, as described above."""
    folder = check_new_slug(settings, slug)
    old = load_issue(settings.issues_dir, previous, settings.root, settings.limits)
    yaml = YAML(typ="rt")
    # Keep the file as its author wrote it: quotes, long lines, the order of keys.
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    data = yaml.load((old.folder / ISSUE_FILE).read_text(encoding="utf-8"))
    was = str(data["subject"])
    data["subject"] = type(data["subject"])(new_subject(was, old.date, day, slug))
    _review(data, "subject", f"was {was!r}")
    data["date"] = day
    had_intro = bool(data.pop("intro", None))
    if "preheader" in data:
        # Above the key: a comment after a block of text would read as part of it.
        data.yaml_set_comment_before_after_key(
            "preheader", before=f"REVIEW: written for {previous}"
        )
    sections = data["sections"]
    for node, section in zip(sections, old.sections, strict=True):
        _pin_ids(node, section)
    sections[:] = [s for s in sections if _carry_section(s, day, previous)]
    if not sections:
        raise ContentError(
            [
                Problem(
                    f"issues/{previous}",
                    None,
                    "",
                    f"nothing of {previous} is still current on {day.isoformat()}: start "
                    f"from the template instead (mailer new {slug} --date {day.isoformat()})",
                )
            ]
        )
    out = io.StringIO()
    out.write(
        f"# Started from {previous} by mailer new --from. Check every line marked REVIEW,\n"
        f"# then delete the marks. Awareness days this month: mailer awareness --month "
        f"{day:%Y-%m}\n"
    )
    if had_intro:
        out.write(
            f"# The intro of {previous} was not carried over: write this month's (intro: |).\n"
        )
    yaml.dump(data, out)
    folder.mkdir(parents=True)
    try:
        (folder / "images").mkdir()
        for image in _images(data):
            source = old.folder / image
            if source.is_file():
                target = folder / image
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        path = folder / ISSUE_FILE
        path.write_text(out.getvalue(), encoding="utf-8")
        load_issue(settings.issues_dir, slug, settings.root, settings.limits)
    except BaseException:
        # Nothing half-written: a new issue folder is whole or not there.
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return path


def _pin_ids(node: CommentedMap, section: Section) -> None:
    """Write the ids a training course and its sessions had in the earlier issue, so their
    calendar entries keep their UIDs when the new issue changes a title, date or time."""
    if section.type != "training":
        return
    if "id" not in node:
        node.insert(list(node).index("type") + 1, "id", section.course_id)
    for item, session in zip(node.get("sessions") or [], section.sessions, strict=True):
        if isinstance(item, CommentedMap) and "id" not in item:
            item.insert(0, "id", session.key)


def _images(data: CommentedMap) -> list[str]:
    """The issue-folder images the kept sections show."""
    found = []
    for section in data["sections"]:
        image = section.get("image")
        if isinstance(image, dict):
            src = str(image.get("src", ""))
            if src and not src.startswith("https://") and ".." not in Path(src).parts:
                found.append(src)
    return found
