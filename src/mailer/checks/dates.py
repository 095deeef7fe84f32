"""Dates: weekdays written beside dates, and the structured dates of sessions and deadlines.

A weekday written in text ("Tuesday 4 November") is checked against the calendar. Without
a year, the year is the one that puts the date nearest the issue's own date, so a
December issue's "Monday 12 January" is next January.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass

from mailer.checks.registry import Context, Hit, Severity, check, quote
from mailer.checks.source import Field
from mailer.formats import long_date

_DAYS = (
    "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
    "|Tues|Thurs|Thur|Mon|Tue|Wed|Thu|Fri|Sat|Sun"
)
_MONTHS = (
    "January|February|March|April|May|June|July|August|September|October|November|December"
    "|Sept|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
)
_ORD = r"(?:st|nd|rd|th)?"
DATE_IN_TEXT = re.compile(
    rf"\b(?:(?P<wd>{_DAYS})\.?,?\s+(?:the\s+)?)?"
    rf"(?:(?P<d>\d{{1,2}}){_ORD}\s+(?:of\s+)?(?P<m>{_MONTHS})\.?"
    rf"|(?P<m2>{_MONTHS})\.?\s+(?P<d2>\d{{1,2}}){_ORD})\b"
    rf"(?:,?\s+(?P<y>(?:19|20)\d{{2}})\b)?",
    re.IGNORECASE,
)
_MONTH_NUMBER = {name.lower()[:3]: i for i, name in enumerate(calendar.month_name) if name}
_WEEKDAY_NUMBER = {name.lower()[:3]: i for i, name in enumerate(calendar.day_name)}
# Days before a deadline that leave readers too little time to act.
DEADLINE_SOON_DAYS = 3
# Dates further ahead than this many months are probably a typing slip in the year.
FAR_AHEAD_MONTHS = 13


@dataclass(frozen=True)
class WrittenDate:
    field: Field
    start: int
    text: str
    weekday: str | None
    day: int
    month: int
    year: int | None

    @property
    def line(self) -> int | None:
        return self.field.line_at(self.start)


def written_dates(ctx: Context, fields: list[Field] | None = None) -> Iterator[WrittenDate]:
    """Every day-and-month date written in the issue's text, with its weekday if any."""
    for field in fields if fields is not None else list(ctx.source.fields()):
        if field.kind == "alt text":
            continue
        for m in DATE_IN_TEXT.finditer(field.text):
            weekday, month = m["wd"], m["m"] or m["m2"]
            # People capitalise weekdays and months; "sat 3 may" is more likely a verb.
            if not month[0].isupper() or (weekday and not weekday[0].isupper()):
                continue
            start = m.start("wd") if weekday else m.start()
            yield WrittenDate(
                field=field,
                start=start,
                text=field.text[start : m.end()].strip(),
                weekday=weekday,
                day=int(m["d"] or m["d2"]),
                month=_MONTH_NUMBER[month.lower()[:3]],
                year=int(m["y"]) if m["y"] else None,
            )


def resolve(written: WrittenDate, issue_date: dt.date) -> dt.date | None:
    """The date meant: the year written, else the one nearest the issue's date."""
    years = (
        [written.year]
        if written.year
        else [issue_date.year - 1, issue_date.year, issue_date.year + 1]
    )
    found = []
    for year in years:
        try:
            found.append(dt.date(year, written.month, written.day))
        except ValueError:
            continue
    return min(found, key=lambda d: abs((d - issue_date).days)) if found else None


@check(
    "date-weekday",
    Severity.ERROR,
    "A weekday written beside a date does not match the calendar.",
    "correct the weekday or the date",
)
def weekday_matches(ctx: Context) -> Iterator[Hit]:
    for w in written_dates(ctx):
        if not w.weekday:
            continue
        day = resolve(w, ctx.issue.date)
        if day is None:
            continue
        meant = _WEEKDAY_NUMBER[w.weekday.lower()[:3]]
        if day.weekday() != meant:
            right = calendar.day_name[day.weekday()]
            yield Hit(
                f"{quote(w.text)} in the {w.field.kind}: {day.day} {day:%B %Y} is a {right}, "
                f"not a {calendar.day_name[meant]}",
                w.line,
                f'write "{right} {day.day} {day:%B}" if the date is right, or correct the date',
            )


@check(
    "date-invalid",
    Severity.ERROR,
    "A date written in text does not exist (31 November, 29 February in a common year).",
    "correct the date",
)
def date_exists(ctx: Context) -> Iterator[Hit]:
    for w in written_dates(ctx):
        if resolve(w, ctx.issue.date) is None:
            yield Hit(f"{quote(w.text)} in the {w.field.kind} is not a date that exists", w.line)


def _structured(ctx: Context, index: int) -> set[dt.date]:
    section = ctx.issue.sections[index]
    days = {s.date for s in section.sessions}
    days.update(d for d in (section.date, section.start, section.end, section.closes) if d)
    if section.date is None and section.start and section.end:
        # Every day of a campaign is one of its dates.
        span = (section.end - section.start).days
        days.update(section.start + dt.timedelta(days=n) for n in range(span + 1))
    return days


@check(
    "date-text-differs",
    Severity.WARNING,
    "A date written in a section's text is not one of that section's session or awareness dates.",
    "make the text and the structured date agree",
)
def text_matches_structure(ctx: Context) -> Iterator[Hit]:
    for w in written_dates(ctx):
        index = w.field.section
        if index is None:
            continue
        section = ctx.issue.sections[index]
        if not section.sessions and not (section.date or section.start):
            continue
        day = resolve(w, ctx.issue.date)
        known = _structured(ctx, index)
        if day is None or day in known:
            continue
        listed = ", ".join(long_date(d) for d in sorted(known)[:3])
        yield Hit(
            f"{quote(w.text)} in the {w.field.kind} of {quote(section.title, 40)} is not one of "
            f"its dates ({listed}{', …' if len(known) > 3 else ''})",
            w.line,
        )


def _sessions(ctx: Context) -> Iterator[tuple[int, int, dt.date, str]]:
    for i, section in enumerate(ctx.issue.sections):
        for j, session in enumerate(section.sessions):
            yield i, j, session.date, f"the session on {long_date(session.date)} ({session.venue})"


def _send(ctx: Context) -> str:
    return f"the send date, {long_date(ctx.send_date)}"


@check(
    "session-past",
    Severity.ERROR,
    "A training session is before the send date: it has already happened.",
    "remove the session, or correct its date",
)
def sessions_ahead(ctx: Context) -> Iterator[Hit]:
    for i, j, day, what in _sessions(ctx):
        if day < ctx.send_date:
            yield Hit(
                f"{what} is before {_send(ctx)}", ctx.source.line("sections", i, "sessions", j)
            )


@check(
    "awareness-past",
    Severity.ERROR,
    "An awareness day (or the whole of a campaign) is before the send date.",
    "remove the section, or correct its date",
)
def awareness_ahead(ctx: Context) -> Iterator[Hit]:
    for i, section in enumerate(ctx.issue.sections):
        last = section.date or section.end
        if section.type == "awareness" and last and last < ctx.send_date:
            key = "date" if section.date else "end"
            yield Hit(
                f"{quote(section.title, 50)} ({long_date(last)}) is before {_send(ctx)}",
                ctx.source.line("sections", i, key),
            )


@check(
    "deadline-past",
    Severity.ERROR,
    "A deadline (closes:) is before the send date.",
    "remove the item, or correct the closing date",
)
def deadlines_open(ctx: Context) -> Iterator[Hit]:
    for i, section in enumerate(ctx.issue.sections):
        if section.closes and section.closes < ctx.send_date:
            yield Hit(
                f"{quote(section.title, 50)} closed on {long_date(section.closes)}, "
                f"before {_send(ctx)}",
                ctx.source.line("sections", i, "closes"),
            )


@check(
    "deadline-soon",
    Severity.WARNING,
    f"A deadline is within {DEADLINE_SOON_DAYS} days of the send date.",
    "readers may have no time to respond: extend the deadline, or say it is short",
)
def deadlines_not_too_close(ctx: Context) -> Iterator[Hit]:
    for i, section in enumerate(ctx.issue.sections):
        closes = section.closes
        if closes and 0 <= (closes - ctx.send_date).days <= DEADLINE_SOON_DAYS:
            days = (closes - ctx.send_date).days
            when = (
                "on the send date" if days == 0 else f"{days} day{'s' if days > 1 else ''} after it"
            )
            yield Hit(
                f"{quote(section.title, 50)} closes on {long_date(closes)}, {when}",
                ctx.source.line("sections", i, "closes"),
            )


@check(
    "session-weekend",
    Severity.WARNING,
    "A training session is on a Saturday or Sunday.",
    "check the date; if it is right, say in the text that it is a weekend session",
)
def sessions_on_weekdays(ctx: Context) -> Iterator[Hit]:
    for i, j, day, what in _sessions(ctx):
        if day.weekday() >= 5:
            yield Hit(
                f"{what} is on a {day:%A}", ctx.source.line("sections", i, "sessions", j, "date")
            )


@check(
    "session-bank-holiday",
    Severity.WARNING,
    "A training session is on a bank holiday (in England unless [checks] bank_holidays says).",
    "check the date; if it is right, say in the text that it is on a bank holiday",
)
def sessions_not_on_holidays(ctx: Context) -> Iterator[Hit]:
    for i, j, day, what in _sessions(ctx):
        name = ctx.holidays.get(day)
        if name:
            yield Hit(
                f"{what} is on {name}, a bank holiday",
                ctx.source.line("sections", i, "sessions", j, "date"),
            )


def months_after(day: dt.date, months: int) -> dt.date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@check(
    "date-far-ahead",
    Severity.WARNING,
    f"A session, deadline or awareness day is more than {FAR_AHEAD_MONTHS} months after the "
    "send date.",
    "check the year",
)
def dates_not_too_far(ctx: Context) -> Iterator[Hit]:
    limit = months_after(ctx.send_date, FAR_AHEAD_MONTHS)
    for i, section in enumerate(ctx.issue.sections):
        for j, session in enumerate(section.sessions):
            if session.date > limit:
                yield Hit(
                    f"the session on {long_date(session.date)} is more than "
                    f"{FAR_AHEAD_MONTHS} months after {_send(ctx)}",
                    ctx.source.line("sections", i, "sessions", j, "date"),
                )
        for key in ("closes", "date", "start"):
            day = getattr(section, key)
            if day and day > limit:
                yield Hit(
                    f"{key}: {long_date(day)} of {quote(section.title, 40)} is more than "
                    f"{FAR_AHEAD_MONTHS} months after {_send(ctx)}",
                    ctx.source.line("sections", i, key),
                )


@check(
    "session-duplicate",
    Severity.WARNING,
    "Two sessions of one course are at the same date and start time.",
    "remove the copy, or correct its date or time",
)
def sessions_distinct(ctx: Context) -> Iterator[Hit]:
    for i, section in enumerate(ctx.issue.sections):
        seen: dict[tuple[dt.date, dt.time], int] = {}
        for j, session in enumerate(section.sessions):
            key = (session.date, session.start)
            if key in seen:
                yield Hit(
                    f"the session on {long_date(session.date)} at {session.start:%H:%M} of "
                    f"{quote(section.title, 40)} repeats session {seen[key] + 1}",
                    ctx.source.line("sections", i, "sessions", j),
                )
            else:
                seen[key] = j
