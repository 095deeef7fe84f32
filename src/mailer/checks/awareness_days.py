"""Awareness days: the ones coming up that an issue misses, and sections with the wrong date."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from mailer.checks.registry import Context, Hit, Severity, check, quote
from mailer.content.awareness import Occurrence, normalise
from mailer.formats import long_date

# How far after the send date an awareness day is worth a mention: until about the next
# monthly issue has gone out.
WINDOW = dt.timedelta(days=35)


def when(occurrence: Occurrence) -> str:
    start, end = occurrence.start, occurrence.end
    if occurrence.single:
        return long_date(start)
    if (start.year, start.month) == (end.year, end.month):
        return f"{start:%A} {start.day} to {long_date(end)}"
    return f"{long_date(start)} to {long_date(end)}"


def upcoming(ctx: Context) -> list[Occurrence]:
    return ctx.calendar.between(ctx.send_date, ctx.send_date + WINDOW)


@check(
    "awareness-upcoming",
    Severity.NOTE,
    "An awareness day in the five weeks after the send date is not mentioned.",
    "add an awareness section if it matters to your readers (see: mailer awareness)",
)
def upcoming_days_mentioned(ctx: Context) -> Iterator[Hit]:
    text = normalise(" ".join(f.text for f in ctx.source.fields()))
    line = ctx.source.line("sections")
    for occurrence in upcoming(ctx):
        day = occurrence.day
        if not any(normalise(name) in text for name in day.names):
            yield Hit(
                f"{day.name} ({when(occurrence)}) is not mentioned",
                line,
                f"add an awareness section if it matters to your readers ({day.source})",
            )


@check(
    "awareness-date",
    Severity.WARNING,
    "An awareness section's date disagrees with mailer's awareness calendar.",
    "check the date with the organiser, then correct it",
)
def awareness_dates_agree(ctx: Context) -> Iterator[Hit]:
    for i, section in enumerate(ctx.issue.sections):
        first = section.date or section.start
        if section.type != "awareness" or first is None:
            continue
        day = ctx.calendar.find(section.title)
        occurrence = day.in_year(first.year) if day else None
        if day is None or occurrence is None:
            continue
        if section.date:
            agrees = occurrence.start <= section.date <= occurrence.end
            key = "date"
        else:
            agrees = (section.start, section.end) == (occurrence.start, occurrence.end)
            key = "start"
        if not agrees:
            yield Hit(
                f"{quote(section.title, 50)} is dated {long_date(first)}, but the calendar has "
                f"{day.name} on {when(occurrence)}",
                ctx.source.line("sections", i, key),
                f"check the date at {day.source}, then correct it (calendar checked in "
                f"{day.verified})",
            )
