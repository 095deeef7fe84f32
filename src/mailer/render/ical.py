"""iCalendar (RFC 5545) text for training sessions, written the way Outlook, Google Calendar
and Apple Calendar accept it.

One ``VCALENDAR`` per file, ``METHOD:PUBLISH`` (a file to add, not an invitation), a
``VTIMEZONE`` for the newsletter's zone worked out from the system's time zone data (its
daylight-saving rules as yearly ``RRULE``s where the zone follows one, its transitions one
by one where it does not), every time ``DTSTART;TZID=…`` in that zone, ``DTSTAMP`` in UTC,
text escaped, lines ending in CRLF and folded at 75 octets without splitting a character.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from mailer.clock import utcnow

PRODID = "-//mailer//Newsletter training calendar//EN"
MEDIA_TYPE = "text/calendar; charset=utf-8"
# How often a subscribed calendar should look again; clients may take longer.
REFRESH = "PT12H"
_FOLD = 75
_UTC = dt.UTC


@dataclass(frozen=True)
class CalendarEvent:
    """One session as a calendar entry. Times are wall-clock times in the calendar's zone."""

    uid: str
    start: dt.datetime
    # None for a session with no end time: the entry starts at `start` and lasts no time.
    end: dt.datetime | None
    summary: str
    location: str
    description: str
    url: str | None
    sequence: int
    # When this version of the entry was made (UTC): newer for every change.
    stamp: dt.datetime
    cancelled: bool = False


def escape_text(value: str) -> str:
    """A TEXT value (RFC 5545 3.3.11): backslash, semicolon, comma and line breaks escaped."""
    value = value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    return value.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")


def fold(line: str) -> str:
    """One content line folded at 75 octets (RFC 5545 3.1), never inside a UTF-8 character."""
    if len(line.encode("utf-8")) <= _FOLD:
        return line
    parts: list[str] = []
    current: list[str] = []
    size = 0
    limit = _FOLD
    for char in line:
        width = len(char.encode("utf-8"))
        if size + width > limit:
            parts.append("".join(current))
            current, size, limit = [], 0, _FOLD - 1
        current.append(char)
        size += width
    parts.append("".join(current))
    return "\r\n ".join(parts)


def _local(moment: dt.datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S")


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(_UTC).strftime("%Y%m%dT%H%M%SZ")


def _offset(delta: dt.timedelta | None) -> str:
    seconds = int((delta or dt.timedelta()).total_seconds())
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours:02d}{minutes:02d}" + (f"{secs:02d}" if secs else "")


@dataclass(frozen=True)
class _Transition:
    local: dt.datetime  # wall-clock time just before the change, in the old offset
    before: dt.timedelta
    after: dt.timedelta
    name: str
    daylight: bool


def _offset_at(tz: ZoneInfo, ts: float) -> dt.timedelta:
    return dt.datetime.fromtimestamp(ts, tz).utcoffset() or dt.timedelta()


def _transitions(tz: ZoneInfo, first_year: int, last_year: int) -> list[_Transition]:
    """Every change of UTC offset in the zone from ``first_year`` to ``last_year``."""
    found: list[_Transition] = []
    start = dt.datetime(first_year, 1, 1, tzinfo=_UTC).timestamp()
    stop = dt.datetime(last_year + 1, 1, 1, tzinfo=_UTC).timestamp()
    day = 86400.0
    ts = start
    previous = _offset_at(tz, ts)
    while ts < stop:
        nxt = min(ts + day, stop)
        offset = _offset_at(tz, nxt)
        if offset != previous:
            low, high = ts, nxt
            while high - low > 1:
                mid = (low + high) // 2
                if _offset_at(tz, mid) == previous:
                    low = mid
                else:
                    high = mid
            moment = dt.datetime.fromtimestamp(high, tz)
            found.append(
                _Transition(
                    local=(moment.astimezone(_UTC) + previous).replace(tzinfo=None),
                    before=previous,
                    after=offset,
                    name=moment.tzname() or "",
                    daylight=bool(moment.dst()),
                )
            )
            previous = offset
        ts = nxt
    return found


def _byday(day: dt.date) -> str:
    """The yearly rule a date follows: ``-1SU`` (last Sunday) or ``2SU`` (second Sunday)."""
    weekday = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")[day.weekday()]
    last = day.day + 7 > calendar.monthrange(day.year, day.month)[1]
    return f"-1{weekday}" if last else f"{(day.day - 1) // 7 + 1}{weekday}"


def vtimezone(tzid: str, years: Iterable[int]) -> list[str]:
    """The ``VTIMEZONE`` lines of ``tzid`` covering ``years`` (and the year before them)."""
    wanted = sorted(set(years)) or [utcnow().year]
    tz = ZoneInfo(tzid)
    lines = ["BEGIN:VTIMEZONE", f"TZID:{tzid}"]
    changes = _transitions(tz, wanted[0] - 1, wanted[-1])
    if not changes:
        moment = dt.datetime(wanted[0] - 1, 1, 1, tzinfo=tz)
        offset = _offset(moment.utcoffset())
        lines += [
            "BEGIN:STANDARD",
            "DTSTART:19700101T000000",
            f"TZOFFSETFROM:{offset}",
            f"TZOFFSETTO:{offset}",
            f"TZNAME:{escape_text(moment.tzname() or tzid)}",
            "END:STANDARD",
        ]
        return [*lines, "END:VTIMEZONE"]
    groups: dict[tuple[object, ...], list[_Transition]] = {}
    for change in changes:
        key = (change.daylight, change.before, change.after, change.name)
        groups.setdefault(key, []).append(change)
    for (daylight, before, after, name), items in groups.items():
        kind = "DAYLIGHT" if daylight else "STANDARD"
        lines += [
            f"BEGIN:{kind}",
            f"DTSTART:{_local(items[0].local)}",
            f"TZOFFSETFROM:{_offset(before)}",  # type: ignore[arg-type]
            f"TZOFFSETTO:{_offset(after)}",  # type: ignore[arg-type]
            f"TZNAME:{escape_text(str(name))}",
        ]
        rule = {(c.local.month, _byday(c.local.date()), c.local.time()) for c in items}
        years_seen = [c.local.year for c in items]
        yearly = years_seen == list(range(years_seen[0], years_seen[0] + len(items)))
        if len(rule) == 1 and yearly and len(items) > 1:
            ((month, byday, _),) = rule
            lines.append(f"RRULE:FREQ=YEARLY;BYMONTH={month};BYDAY={byday}")
        else:
            lines += [f"RDATE:{_local(c.local)}" for c in items[1:]]
        lines.append(f"END:{kind}")
    return [*lines, "END:VTIMEZONE"]


def _event_lines(event: CalendarEvent, tzid: str) -> list[str]:
    lines = [
        "BEGIN:VEVENT",
        f"UID:{escape_text(event.uid)}",
        f"DTSTAMP:{_utc(event.stamp)}",
        f"SEQUENCE:{event.sequence}",
        f"DTSTART;TZID={tzid}:{_local(event.start)}",
    ]
    if event.end is not None:
        lines.append(f"DTEND;TZID={tzid}:{_local(event.end)}")
    else:
        lines.append("DURATION:PT0S")
    lines += [
        f"SUMMARY:{escape_text(event.summary)}",
        f"LOCATION:{escape_text(event.location)}",
    ]
    if event.description:
        lines.append(f"DESCRIPTION:{escape_text(event.description)}")
    if event.url:
        lines.append(f"URL:{event.url}")
    lines += [
        f"STATUS:{'CANCELLED' if event.cancelled else 'CONFIRMED'}",
        "TRANSP:OPAQUE",
        "END:VEVENT",
    ]
    return lines


def calendar_text(
    events: Sequence[CalendarEvent],
    tzid: str,
    *,
    name: str | None = None,
    years: Iterable[int] = (),
) -> str:
    """A whole ``VCALENDAR``: one file to add (one event) or a feed to subscribe to (``name``)."""
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", f"PRODID:{PRODID}", "CALSCALE:GREGORIAN"]
    lines.append("METHOD:PUBLISH")
    if name is not None:
        lines += [
            f"X-WR-CALNAME:{escape_text(name)}",
            f"X-WR-TIMEZONE:{tzid}",
            f"REFRESH-INTERVAL;VALUE=DURATION:{REFRESH}",
            f"X-PUBLISHED-TTL:{REFRESH}",
        ]
    span = {e.start.year for e in events} | set(years)
    lines += vtimezone(tzid, span)
    for event in events:
        lines += _event_lines(event, tzid)
    lines.append("END:VCALENDAR")
    return "".join(fold(line) + "\r\n" for line in lines)
