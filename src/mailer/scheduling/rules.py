"""Times and monthly rules as people write them: parsing and the next time a rule fires.

Pure functions: nothing here reads the clock or the database. Times are written in the
newsletter's time zone (``timezone`` in mailer.toml, default Europe/London) and returned in
UTC. A time the clocks skip (01:30 on the last Sunday of March in London) is refused; a
time that happens twice (01:30 on the last Sunday of October) means the first of the two.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from mailer.errors import ScheduleError

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

_AT = re.compile(r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")
_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")
# One day a month: "15", "last", "1st tue" .. "5th tue", "last fri".
_MONTHLY_DAY = re.compile(
    r"^(?:[1-9]|[12]\d|3[01]|last|(?:[1-5](?:st|nd|rd|th)|last) (?:mon|tue|wed|thu|fri|sat|sun))$"
)


def parse_at(value: str, tz: ZoneInfo) -> dt.datetime:
    """``"2025-12-02 09:00"`` in ``tz`` as an aware UTC datetime, or a clear ScheduleError."""
    m = _AT.match(value)
    if not m:
        raise ScheduleError(
            f"--at {value!r}: write the time as YYYY-MM-DD HH:MM, e.g. 2025-12-02 09:00"
        )
    year, month, day, hour, minute = (int(g) for g in m.groups()[:5])
    second = int(m.group(6) or 0)
    try:
        date = dt.date(year, month, day)
    except ValueError:
        raise ScheduleError(
            f"--at {value!r}: {year:04d}-{month:02d}-{day:02d} is not a date that exists"
        ) from None
    if hour > 23 or minute > 59 or second > 59:
        raise ScheduleError(f"--at {value!r}: {hour:02d}:{minute:02d} is not a time of day")
    local = dt.datetime.combine(date, dt.time(hour, minute, second), tzinfo=tz)
    # A wall-clock time inside a spring-forward gap does not survive the round trip.
    back = local.astimezone(dt.UTC).astimezone(tz)
    if back.replace(tzinfo=None) != local.replace(tzinfo=None):
        raise ScheduleError(
            f"--at {value!r}: {hour:02d}:{minute:02d} does not exist on {date:%d %B %Y} "
            f"in {tz.key} "
            "because the clocks go forward; choose another time"
        )
    return local.astimezone(dt.UTC)


@dataclass(frozen=True)
class Rule:
    """A monthly slot: a day expression in APScheduler's cron syntax, and a time."""

    day: str
    hour: int
    minute: int

    def __str__(self) -> str:
        return f"{self.day} {self.hour:02d}:{self.minute:02d}"

    def trigger(self, tz: ZoneInfo) -> CronTrigger:
        from apscheduler.triggers.cron import CronTrigger

        return CronTrigger(day=self.day, hour=self.hour, minute=self.minute, timezone=tz)

    def next_after(self, moment: dt.datetime, tz: ZoneInfo) -> dt.datetime:
        fire = self.trigger(tz).get_next_fire_time(None, moment + dt.timedelta(seconds=1))
        assert isinstance(fire, dt.datetime)
        return fire.astimezone(dt.UTC)


def parse_rule(value: str) -> Rule:
    """``"1st tue 09:00"``, ``"last fri 14:30"``, ``"15 09:00"`` as a :class:`Rule`."""
    parts = value.lower().split()
    usage = (
        f'--monthly {value!r}: write a day and a time, e.g. "1st tue 09:00", '
        '"last fri 14:30" or "15 09:00"'
    )
    if len(parts) < 2 or not _HHMM.match(parts[-1]):
        raise ScheduleError(usage)
    hour, minute = (int(x) for x in parts[-1].split(":"))
    if hour > 23 or minute > 59:
        raise ScheduleError(f"--monthly {value!r}: {parts[-1]} is not a time of day")
    rule = Rule(" ".join(parts[:-1]), hour, minute)
    if not _MONTHLY_DAY.match(rule.day):
        raise ScheduleError(f"{usage}: {rule.day!r} is not one day a month")
    try:
        rule.trigger(ZoneInfo("UTC"))
    except ValueError as exc:
        raise ScheduleError(f"{usage} ({exc})") from None
    return rule
