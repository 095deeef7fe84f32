"""Times and monthly rules as people write them: parsing and the next time a rule fires.

Pure functions: nothing here reads the clock or the database. Times are written in the
newsletter's time zone (``timezone`` in mailer.toml, default Europe/London) and returned in
UTC. UK users type dates day first, so ``--at`` takes ``2026-12-31 09:00`` and
``31/12/2026 9.30am`` alike; a monthly rule takes ``1st tue 09:00`` and ``first Tuesday
9am`` alike.

One rule for clock changes, the same for ``--at`` and monthly rules: a time the clocks skip
(01:30 on the last Sunday of March in London) is refused when it is scheduled; a time that
happens twice (01:30 on the last Sunday of October) means the first of the two. A monthly
rule that cannot fire in every month ("31 09:00", "5th mon 09:00") is refused too, naming
the months it would skip and the rule to use instead.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from mailer.errors import ScheduleError
from mailer.formats import long_date, time_12
from mailer.typed import TypedValueError, read_date, unquote
from mailer.typed import read_time as parse_time

_AT_USAGE = (
    'write the date and time like "2026-12-31 09:00" or "31/12/2026 9.30am" '
    "(in the newsletter's time zone)"
)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_NAMES = {
    **{name: i for i, name in enumerate(WEEKDAYS)},
    **{name.lower(): i for i, name in enumerate(calendar.day_name)},
    "tues": 1,
    "weds": 2,
    "thur": 3,
    "thurs": 3,
}
_ORDINALS = {
    "1st": 1,
    "first": 1,
    "2nd": 2,
    "second": 2,
    "3rd": 3,
    "third": 3,
    "4th": 4,
    "fourth": 4,
    "5th": 5,
    "fifth": 5,
    "last": -1,
}
_ORDINAL_TEXT = {1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 5: "5th", -1: "last"}
_ORDINAL_WORDS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", -1: "last"}
_MONTHLY_USAGE = (
    'write a day and a time, e.g. "1st tue 09:00", "last fri 2.30pm", "15 9am" or "last day 09:00"'
)
# How far ahead a monthly rule is checked for months it would skip or times that do not
# exist: long enough to meet every clock change a time zone has planned.
_YEARS_CHECKED = 10


def _unquote(value: str) -> str:
    return unquote(value)


def _date(text: str, value: str) -> dt.date:
    try:
        return read_date(text)
    except TypedValueError as exc:
        message = str(exc)
        if message.startswith("write a date"):
            message = _AT_USAGE
        raise ScheduleError(f"--at {value!r}: {message}") from None


def parse_at(value: str, tz: ZoneInfo) -> dt.datetime:
    """``"2025-12-02 09:00"`` (or ``"2/12/2025 9am"``, ``"7 Dec 2026 at 2pm"``) in ``tz`` as
    an aware UTC datetime, or a ScheduleError that says how to write it. A date written
    without its year is the next such day (the one place this module reads the clock)."""
    text = re.sub(r"^(\d{4}-\d{1,2}-\d{1,2})T", r"\1 ", _unquote(value))
    words = text.split()
    if len(words) < 2:
        raise ScheduleError(f"--at {value!r}: {_AT_USAGE}")
    # The time is the last word or the last two ("9:30 am", "12 noon").
    for n in (2, 1):
        if len(words) > n and parse_time(" ".join(words[-n:])) is not None:
            date_words, time_text = words[:-n], " ".join(words[-n:])
            break
    else:
        date_words, time_text = words[:-1], words[-1]
    if date_words and date_words[-1].lower() == "at":
        date_words = date_words[:-1]
    date = _date(" ".join(date_words), value)
    found = parse_time(time_text)
    if found is None:
        raise ScheduleError(
            f"--at {value!r}: {time_text!r} is not a time of day (write 09:00, 9.30am or 2pm)"
        )
    hour, minute, second = found
    local = dt.datetime.combine(date, dt.time(hour, minute, second), tzinfo=tz)
    if skipped_by_clocks(local):
        raise ScheduleError(
            f"--at {value!r}: {hour:02d}:{minute:02d} does not exist on {date:%d %B %Y} "
            f"in {tz.key} because the clocks go forward; choose another time"
        )
    return local.astimezone(dt.UTC)


def skipped_by_clocks(local: dt.datetime) -> bool:
    """Whether a wall-clock time falls in a spring-forward gap (it does not survive the
    round trip through UTC)."""
    tz = local.tzinfo
    assert tz is not None
    back = local.astimezone(dt.UTC).astimezone(tz)
    return back.replace(tzinfo=None) != local.replace(tzinfo=None)


def in_words(moment: dt.datetime, tz: ZoneInfo) -> str:
    """``Thursday 31 December 2026 at 9:30am GMT``: how a parsed time is echoed back."""
    local = moment.astimezone(tz)
    return f"{long_date(local.date())} at {time_12(local.time())} {local:%Z}"


# -- monthly rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A monthly slot: one day a month and a time of day, in the newsletter's time zone.

    ``day`` is stored as text: ``"15"`` (the 15th), ``"last"`` (the last day), ``"1st tue"``
    .. ``"5th tue"`` or ``"last fri"``.
    """

    day: str
    hour: int
    minute: int

    def __str__(self) -> str:
        day = "last day" if self.day == "last" else self.day
        return f"{day} {self.hour:02d}:{self.minute:02d}"

    @property
    def _parts(self) -> tuple[int | None, int | None, int | None]:
        """(day of month, ordinal, weekday): one of the first or the last two is set."""
        if self.day == "last":
            return -1, None, None
        if self.day.isdigit():
            return int(self.day), None, None
        ordinal, _, weekday = self.day.partition(" ")
        return None, _ORDINALS[ordinal], WEEKDAYS.index(weekday)

    def describe(self) -> str:
        """``the first Tuesday of every month at 9am``."""
        day, ordinal, weekday = self._parts
        clock = time_12(dt.time(self.hour, self.minute))
        if day == -1:
            return f"the last day of every month at {clock}"
        if day is not None:
            suffix = (
                "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
            )
            return f"the {day}{suffix} of every month at {clock}"
        assert ordinal is not None and weekday is not None
        name = calendar.day_name[weekday]
        return f"the {_ORDINAL_WORDS[ordinal]} {name} of every month at {clock}"

    def day_in(self, year: int, month: int) -> dt.date | None:
        """The rule's day in that month; None if the month has no such day."""
        length = calendar.monthrange(year, month)[1]
        day, ordinal, weekday = self._parts
        if day == -1:
            return dt.date(year, month, length)
        if day is not None:
            return dt.date(year, month, day) if day <= length else None
        assert ordinal is not None and weekday is not None
        if ordinal == -1:
            last = dt.date(year, month, length)
            return last - dt.timedelta(days=(last.weekday() - weekday) % 7)
        first = dt.date(year, month, 1)
        found = first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (ordinal - 1))
        return found if found.month == month else None

    def local_at(self, day: dt.date, tz: ZoneInfo) -> dt.datetime:
        # fold=0: a time that happens twice means the first of the two.
        return dt.datetime.combine(day, dt.time(self.hour, self.minute), tzinfo=tz)

    def occurrences(self, start: dt.date, tz: ZoneInfo, months: int) -> list[dt.datetime]:
        """The local times it fires in the ``months`` months from ``start``'s month."""
        found = []
        year, month = start.year, start.month
        for _ in range(months):
            day = self.day_in(year, month)
            if day is not None:
                found.append(self.local_at(day, tz))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return found

    def next_after(self, moment: dt.datetime, tz: ZoneInfo) -> dt.datetime:
        """The first run strictly after ``moment``, in UTC."""
        local = moment.astimezone(tz)
        # Start a month early: a rule's time in the first month may still be ahead.
        for fire in self.occurrences(local.date().replace(day=1), tz, 12 * 30):
            utc = fire.astimezone(dt.UTC)
            if utc > moment:
                return utc
        raise ScheduleError(f"--monthly {str(self)!r} never fires")  # pragma: no cover


def _weekday(word: str) -> int | None:
    return _WEEKDAY_NAMES.get(word.lower().rstrip("."))


def parse_rule(value: str) -> Rule:
    """``"1st tue 09:00"``, ``"first Tuesday 9am"``, ``"last fri 2.30pm"``, ``"15 09:00"``,
    ``"last day 09:00"`` as a :class:`Rule`. Rules stored by earlier versions (``"last
    08:00"``) read the same way.

    This only parses: :func:`check_rule` refuses a rule that skips months or names a time
    the clocks skip, when a new schedule is made.
    """
    words = _unquote(value).lower().replace(",", " ").split()
    if words and words[0] in ("every", "each", "on"):
        words = words[1:]
    if words and words[0] == "the":
        words = words[1:]
    # The time is the last word, or the last two ("9 am", "12 noon").
    found, cut = None, 0
    for n in (2, 1):
        if len(words) > n and (found := parse_time(" ".join(words[-n:]))) is not None:
            cut = n
            break
    if found is None:
        last = words[-1] if words else ""
        if len(words) >= 2 and re.fullmatch(r"\d{1,2}[:.]\d{2}|\d{1,2}\s*[ap]m", last):
            raise ScheduleError(f"--monthly {value!r}: {last} is not a time of day")
        raise ScheduleError(f"--monthly {value!r}: {_MONTHLY_USAGE}")
    hour, minute, _ = found
    day_words = [w for w in words[:-cut] if w not in ("at", "of", "the", "month", "every")]
    return Rule(_day(day_words, value), hour, minute)


def _day(words: list[str], value: str) -> str:
    text = " ".join(words)
    usage = f"--monthly {value!r}: {text!r} is not one day a month; {_MONTHLY_USAGE}"
    if text in ("last", "last day"):
        return "last"
    if len(words) == 1:
        m = re.fullmatch(r"(\d{1,2})(?:st|nd|rd|th)?", words[0])
        if m and 1 <= int(m[1]) <= 31:
            return str(int(m[1]))
        raise ScheduleError(usage)
    if len(words) == 2 and words[0] in _ORDINALS:
        weekday = _weekday(words[1])
        if weekday is not None:
            return f"{_ORDINAL_TEXT[_ORDINALS[words[0]]]} {WEEKDAYS[weekday]}"
    raise ScheduleError(usage)


def check_rule(rule: Rule, tz: ZoneInfo, start: dt.date) -> None:
    """Refuse a rule that would silently skip some months, or that names a time the clocks
    skip in some month of the next ten years (checked from ``start``)."""
    day, ordinal, weekday = rule._parts
    clock = f"{rule.hour:02d}:{rule.minute:02d}"
    if day is not None and day > 28:
        skipped = [m for m in range(1, 13) if calendar.monthrange(2025, m)[1] < day]
        months = _names(skipped)
        if day == 29:
            months = "February except in leap years"
        raise ScheduleError(
            f"--monthly {str(rule)!r}: not every month has a day {day}, so it would skip "
            f'{months}: use "last day {clock}" for the last day of every month, or a day '
            "from 1 to 28"
        )
    if ordinal == 5:
        assert weekday is not None
        year, month, missing = start.year, start.month, []
        for _ in range(12):
            if rule.day_in(year, month) is None:
                missing.append(month)
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        name = calendar.day_name[weekday]
        raise ScheduleError(
            f"--monthly {str(rule)!r}: most months have no fifth {name} (in the next twelve "
            f'months it would skip {_names(missing)}): use "last {WEEKDAYS[weekday]} '
            f'{clock}" for the last {name} of every month'
        )
    for fire in rule.occurrences(start, tz, 12 * _YEARS_CHECKED):
        if skipped_by_clocks(fire):
            raise ScheduleError(
                f"--monthly {str(rule)!r}: {clock} does not exist on "
                f"{long_date(fire.date())} in {tz.key} because the clocks go forward; "
                "choose another time"
            )


def _names(months: list[int]) -> str:
    names = [calendar.month_name[m] for m in months]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
