"""The awareness-day calendar shipped with mailer (``awareness.toml`` beside this module).

Each entry has a rule ("second tuesday of february") or explicit dates per year, a source
and the year it was last checked. :func:`calendar` reads it once; :meth:`Calendar.between`
gives the occurrences that overlap a range of dates, which ``mailer check``, ``mailer new``
and ``mailer awareness`` all use.
"""

from __future__ import annotations

import calendar as cal
import datetime as dt
import functools
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from mailer.errors import ConfigError

DATA_FILE = "awareness.toml"
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
_WEEKDAYS = {name.lower(): i for i, name in enumerate(cal.day_name)}
_MONTHS = {name.lower(): i for i, name in enumerate(cal.month_name) if name}
_NTH = re.compile(r"^(first|second|third|fourth|last) (\w+) of (\w+)$")
_FIXED = re.compile(r"^(\d{1,2}) (\w+)$")


@dataclass(frozen=True)
class Occurrence:
    """One year's dates of an awareness day or campaign."""

    day: AwarenessDay
    start: dt.date
    end: dt.date

    @property
    def single(self) -> bool:
        return self.start == self.end


@dataclass(frozen=True)
class AwarenessDay:
    name: str
    source: str
    verified: int
    aliases: tuple[str, ...] = ()
    rule: str | None = None
    days: int = 1
    dates: tuple[tuple[dt.date, dt.date], ...] = ()
    month: int | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def in_year(self, year: int) -> Occurrence | None:
        """Its dates in ``year``, or None when the calendar does not know them."""
        for start, end in self.dates:
            if start.year == year:
                return Occurrence(self, start, end)
        if self.rule is None:
            return None
        start = rule_date(self.rule, year)
        return Occurrence(self, start, start + dt.timedelta(days=self.days - 1))

    @property
    def usual_month(self) -> int | None:
        if self.month is not None:
            return self.month
        return self.dates[-1][0].month if self.dates else None


def rule_date(rule: str, year: int) -> dt.date:
    """The date a rule gives in ``year``: "18 march", "second tuesday of february"."""
    text = rule.strip().lower()
    if m := _NTH.match(text):
        ordinal, weekday, month = _ORDINALS[m[1]], _WEEKDAYS[m[2]], _MONTHS[m[3]]
        days = [
            d
            for d in range(1, cal.monthrange(year, month)[1] + 1)
            if dt.date(year, month, d).weekday() == weekday
        ]
        return dt.date(year, month, days[ordinal if ordinal < 0 else ordinal - 1])
    if m := _FIXED.match(text):
        return dt.date(year, _MONTHS[m[2]], int(m[1]))
    raise ValueError(f"not a rule: {rule!r}")


def _valid_rule(rule: str) -> bool:
    text = rule.strip().lower()
    if m := _NTH.match(text):
        return m[2] in _WEEKDAYS and m[3] in _MONTHS
    if m := _FIXED.match(text):
        if m[2] not in _MONTHS:
            return False
        try:
            dt.date(2024, _MONTHS[m[2]], int(m[1]))  # a leap year, so 29 february is allowed
        except ValueError:
            return False
        return True
    return False


def _span(text: str) -> tuple[dt.date, dt.date]:
    first, _, last = text.partition("/")
    start = dt.date.fromisoformat(first)
    end = dt.date.fromisoformat(last) if last else start
    if end < start:
        raise ValueError(f"{text}: the end is before the start")
    return start, end


def _entry(raw: dict[str, Any], where: str) -> AwarenessDay:
    known = {"name", "aliases", "rule", "days", "dates", "month", "source", "verified"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}")
    for key in ("name", "source", "verified"):
        if key not in raw:
            raise ValueError(f"{where}: {key} is required")
    rule = raw.get("rule")
    if rule is not None and not _valid_rule(rule):
        raise ValueError(
            f"{where}: rule {rule!r} is not like '18 march' or 'second tuesday of may'"
        )
    dates = tuple(_span(text) for text in raw.get("dates", []))
    if rule is None and not dates:
        raise ValueError(f"{where}: give a rule or dates")
    if not str(raw["source"]).startswith("https://"):
        raise ValueError(f"{where}: source must be an https:// address")
    return AwarenessDay(
        name=str(raw["name"]),
        source=str(raw["source"]),
        verified=int(raw["verified"]),
        aliases=tuple(raw.get("aliases", ())),
        rule=rule,
        days=int(raw.get("days", 1)),
        dates=dates,
        month=raw.get("month"),
    )


@dataclass(frozen=True)
class Calendar:
    days: tuple[AwarenessDay, ...]

    def between(self, first: dt.date, last: dt.date) -> list[Occurrence]:
        """Every occurrence that overlaps ``first`` to ``last`` (inclusive), by start date."""
        found = []
        for day in self.days:
            for year in range(first.year - 1, last.year + 1):
                occurrence = day.in_year(year)
                if occurrence and occurrence.start <= last and occurrence.end >= first:
                    found.append(occurrence)
        return sorted(found, key=lambda o: (o.start, o.end, o.day.name))

    def unknown_in(self, year: int) -> list[AwarenessDay]:
        """Days whose dates in ``year`` the calendar does not know yet."""
        return [day for day in self.days if day.in_year(year) is None]

    def find(self, title: str) -> AwarenessDay | None:
        """The day a section title names, if any."""
        text = normalise(title)
        for day in self.days:
            if any(normalise(name) in text for name in day.names):
                return day
        return None


def normalise(text: str) -> str:
    """Lower case with plain apostrophes and single spaces, for matching names in text."""
    return " ".join(text.replace("\u2019", "'").replace("\u2018", "'").lower().split())


def parse(text: str, source: str = DATA_FILE) -> Calendar:
    """A calendar from the text of a calendar file; ConfigError naming a bad entry."""
    try:
        data = tomllib.loads(text)
        entries = data.get("day", [])
        return Calendar(
            tuple(_entry(raw, f"{source}: day {i + 1}") for i, raw in enumerate(entries))
        )
    except (tomllib.TOMLDecodeError, ValueError, TypeError) as exc:
        raise ConfigError(f"the awareness calendar is invalid: {exc}") from exc


@functools.cache
def calendar() -> Calendar:
    """The calendar shipped with mailer."""
    text = resources.files("mailer.content").joinpath(DATA_FILE).read_text(encoding="utf-8")
    return parse(text)
