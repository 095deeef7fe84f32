"""Every date, time and size shown to a person, in one place.

In the newsletter itself dates read in British style with a 12-hour clock ("Wednesday 3
December 2025", "9:30am"). In the command line's output, times are to the minute with
their zone named.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo


class SessionFields(Protocol):
    """What these functions read of a training session (``mailer.content.Session``): this
    module sits below ``content/``, so it names the fields rather than importing the class."""

    @property
    def date(self) -> dt.date: ...
    @property
    def start(self) -> dt.time: ...
    @property
    def end(self) -> dt.time | None: ...
    @property
    def venue(self) -> str: ...
    @property
    def online(self) -> bool: ...


class SectionDates(Protocol):
    """What :func:`awareness_when` reads of a section (``mailer.content.Section``): one
    day, or a first and a last."""

    @property
    def date(self) -> dt.date | None: ...
    @property
    def start(self) -> dt.date | None: ...
    @property
    def end(self) -> dt.date | None: ...


def long_date(day: dt.date) -> str:
    """``Wednesday 3 December 2025``."""
    return f"{day:%A} {day.day} {day:%B %Y}"


def day_month_year(day: dt.date) -> str:
    """``30 October 2025``."""
    return f"{day.day} {day:%B %Y}"


def month_year(day: dt.date) -> str:
    return f"{day:%B %Y}"


def time_12(t: dt.time) -> str:
    """``9:30am``, ``10am``, ``12 noon``, ``4:30pm``."""
    if t.hour == 12 and t.minute == 0:
        return "12 noon"
    hour = t.hour % 12 or 12
    suffix = "am" if t.hour < 12 else "pm"
    return f"{hour}{suffix}" if t.minute == 0 else f"{hour}:{t.minute:02d}{suffix}"


def time_range(session: SessionFields) -> str:
    """``9:30am to 12:30pm``; ``from 9:30am`` for a session with no end time."""
    if session.end is None:
        return f"from {time_12(session.start)}"
    return f"{time_12(session.start)} to {time_12(session.end)}"


def awareness_when(section: SectionDates) -> str:
    if section.date:
        return long_date(section.date)
    if section.start and section.end:
        return f"{long_date(section.start)} to {long_date(section.end)}"
    return ""


def session_line(session: SessionFields) -> str:
    """One session as plain text: ``Wednesday 3 December 2025, 9:30am to 12:30pm, Wigton``."""
    line = f"{long_date(session.date)}, {time_range(session)}, {session.venue}"
    return line + (" (online)" if session.online else "")


# -- the command line ---------------------------------------------------------------------


def day(moment: dt.datetime | dt.date) -> str:
    """A date as people write it in the UK: ``2 Nov 2025``."""
    return f"{moment.day} {moment:%b %Y}"


def utc_minute(moment: dt.datetime | None) -> str:
    """A stored timestamp to the minute, in UTC: ``2025-11-02 09:30 UTC``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def local_time(moment: dt.datetime | None, tz: ZoneInfo) -> str:
    """A moment in the newsletter's time zone: ``Tue 02 Dec 2025 09:00 GMT``."""
    if moment is None:
        return "-"
    return moment.astimezone(tz).strftime("%a %d %b %Y %H:%M %Z")


def human_size(n: int) -> str:
    """``812 B``, ``52.5 KB``, ``4.1 MB``."""
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 / 1024:.1f} MB"
