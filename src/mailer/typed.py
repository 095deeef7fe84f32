"""Dates and times as people in the UK type them, read the same way everywhere.

One reader for every date a person types (`mailer new --date`, `mailer check --send-date`,
`mailer schedule --at`, and ``date:`` values in issue.yaml) and every time of day
(``--at``, monthly rules, session times): ``2026-12-07``, ``7/12/2026``, ``7/12/26``,
``7 Dec 2026``, ``7th December 2026``, ``Monday 7 December 2026``, and without a year
(``7th December``) the next such day from a given one; ``09:00``, ``9.30am``, ``2pm``,
``12 noon``. Day first, always: ``12/7/2026`` is 12 July.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re

from mailer.clock import utcnow

# Typographic quotes that word processors and chat apps put around pasted text.
QUOTES = "\"'“”‘’„«»"
_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_SLASHED = re.compile(r"(\d{1,2})[/.](\d{1,2})[/.](\d{2}|\d{4})")
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_MONTHS["sept"] = 9
_WEEKDAY = r"(?:mon|tue|tues|wed|weds|thu|thur|thurs|fri|sat|sun)[a-z]*\.?,?\s+"
_WORDS = re.compile(
    rf"(?:{_WEEKDAY})?(?:the\s+)?(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?([a-z]+)\.?,?"
    r"(?:\s+(\d{4}))?",
    re.IGNORECASE,
)
# 09:00, 9:00, 09:00:30, 9.30, 9am, 9.30am, 9:30 pm.
_TIME = re.compile(
    r"(?P<h>\d{1,2})(?:[:.](?P<m>\d{2})(?::(?P<s>\d{2}))?)?\s*(?P<ampm>am|pm|a\.m\.|p\.m\.)?"
)
DATE_FORMS = '"2026-12-07", "7/12/2026" or "7 December 2026"'
TIME_FORMS = '"09:00", "9.30am" or "2pm"'


class TypedValueError(ValueError):
    """What is wrong with a typed date or time, in words to show after the value."""


def unquote(value: str) -> str:
    return value.strip().strip(QUOTES).strip()


def read_date(text: str, after: dt.date | None = None, *, need_year: bool = False) -> dt.date:
    """The date ``text`` means; without a year, the first such day on or after ``after``
    (today if not given), or refused with ``need_year`` (in a file, where "next" would
    change with the day it is read). TypedValueError says what is wrong and how to
    write it."""
    value = unquote(text)
    iso, slashed, words = _ISO.fullmatch(value), _SLASHED.fullmatch(value), None
    if iso:
        year, month, day = (int(g) for g in iso.groups())
    elif slashed:
        day, month, year = (int(g) for g in slashed.groups())
        year += 2000 if year < 100 else 0
        if month > 12 and day <= 12:
            raise TypedValueError(
                f"{month} is not a month: write the day first, like "
                f"{month}/{day}/{year} (day/month/year)"
            )
    elif (words := _WORDS.fullmatch(value)) and words[2].lower() in _MONTHS:
        day, month = int(words[1]), _MONTHS[words[2].lower()]
        if words[3]:
            year = int(words[3])
        elif need_year:
            raise TypedValueError(f"add the year, like {day} {calendar.month_name[month]} 2026")
        else:
            start = after or utcnow().date()
            year = start.year
            try:
                if dt.date(year, month, day) < start:
                    year += 1
            except ValueError:
                pass
    else:
        raise TypedValueError(f"write a date like {DATE_FORMS}")
    try:
        return dt.date(year, month, day)
    except ValueError:
        raise TypedValueError(
            f"{year:04d}-{month:02d}-{day:02d} is not a date that exists"
        ) from None


def read_time(text: str) -> tuple[int, int, int] | None:
    """``(hour, minute, second)`` of ``09:00``, ``9.30am``, ``9am``, ``12 noon``; None if
    ``text`` is not a time of day (out-of-range values are None too)."""
    text = unquote(text).lower()
    if text in ("noon", "12 noon", "midday"):
        return 12, 0, 0
    m = _TIME.fullmatch(text)
    if not m:
        return None
    hour, minute, second = int(m["h"]), int(m["m"] or 0), int(m["s"] or 0)
    ampm = (m["ampm"] or "").replace(".", "")
    if not ampm and m["m"] is None:
        return None  # a bare "9" is a day of the month, not a time
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    return hour, minute, second
