"""Training sessions' calendar entries: each says what the email says about its session.

The entry is the file `mailer build` publishes for the session (made by the same code),
read back; the email's words are those of the built HTML around the session's "Add to
calendar" link. A template override that shows other times, or a mistake anywhere between
issue.yaml and the file, is caught before readers put the wrong time in their calendars.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterator

from mailer import urls
from mailer.checks.registry import Context, Hit, Severity, check
from mailer.formats import long_date, time_12
from mailer.site import training

_PROPERTY = re.compile(r"^([A-Z-]+)(?:;[^:]*)?:(.*)$")


def read_entry(text: str) -> dict[str, str]:
    """The properties of the (one) event of an iCalendar file, unfolded and unescaped."""
    unfolded = re.sub(r"\r\n[ \t]", "", text)
    found: dict[str, str] = {}
    inside = False
    for line in unfolded.split("\r\n"):
        if line == "BEGIN:VEVENT":
            inside = True
        elif line == "END:VEVENT":
            inside = False
        elif inside and (m := _PROPERTY.match(line)):
            value = re.sub(r"\\([\\;,nN])", lambda e: "\n" if e[1] in "nN" else e[1], m[2])
            found.setdefault(m[1], value)
    return found


def _moment(value: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(value or "", "%Y%m%dT%H%M%S")
    except ValueError:
        return None


def _shown(email_html: str, url: str) -> str | None:
    """The words of the list item that holds the link to ``url``, as a reader sees them."""
    at = email_html.find(f'href="{html.escape(url)}"')
    if at < 0:
        return None
    start = email_html.rfind("<li", 0, at)
    item = email_html[start:at] if start >= 0 else email_html[max(0, at - 600) : at]
    text = re.sub(r"<br\s*/?>", " ", item)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", text)).split())


@check(
    "calendar-differs",
    Severity.ERROR,
    "A session's calendar entry says another date, time or place than the email shows.",
    "a template override shows the session differently: show the session's own date, times "
    "and venue",
)
def entries_match_text(ctx: Context) -> Iterator[Hit]:
    files = training.issue_calendars(ctx.settings, ctx.issue, [])
    for i, section in enumerate(ctx.issue.sections):
        for j, session in enumerate(section.sessions):
            line = ctx.source.line("sections", i, "sessions", j)
            what = f"the session on {long_date(session.date)} ({session.venue})"
            name = urls.session_file(section.course_id, session.key)
            url = urls.session_calendar_url(
                ctx.settings, ctx.issue.slug, section.course_id, session.key
            )
            shown = _shown(ctx.compiled.email_html, url)
            if shown is None:
                continue  # calendar-link-missing says so
            entry = read_entry(files.get(name, ""))
            start, end = _moment(entry.get("DTSTART")), _moment(entry.get("DTEND"))
            said = []
            if start is None:
                said.append("no start")
            else:
                said += [long_date(start.date()), time_12(start.time())]
            if end is not None:
                said.append(time_12(end.time()))
            said.append(entry.get("LOCATION", ""))
            missing = [part for part in said if part not in shown]
            if missing:
                yield Hit(
                    f"the calendar entry of {what} says {', '.join(said)}; the email says "
                    f'"{shown}"',
                    line,
                )


@check(
    "calendar-link-missing",
    Severity.WARNING,
    'A session has no "Add to calendar" link in the email.',
    'a template override leaves out the link: add <a href="{{ urls.session_ics(section, s) '
    '}}">Add to calendar</a> to each session',
)
def every_session_has_a_link(ctx: Context) -> Iterator[Hit]:
    for i, section in enumerate(ctx.issue.sections):
        for j, session in enumerate(section.sessions):
            url = urls.session_calendar_url(
                ctx.settings, ctx.issue.slug, section.course_id, session.key
            )
            if _shown(ctx.compiled.email_html, url) is None:
                yield Hit(
                    f"the session on {long_date(session.date)} ({session.venue}) has no "
                    '"Add to calendar" link',
                    ctx.source.line("sections", i, "sessions", j),
                )


@check(
    "session-no-end",
    Severity.WARNING,
    "A training session has no end time.",
    'add its end time, e.g. end: "12:30": without one, the calendar entry lasts no time and '
    "readers cannot plan around it",
)
def sessions_have_an_end(ctx: Context) -> Iterator[Hit]:
    for i, section in enumerate(ctx.issue.sections):
        for j, session in enumerate(section.sessions):
            if session.end is None:
                yield Hit(
                    f"the session on {long_date(session.date)} ({session.venue}) of "
                    f'"{section.title}" has no end time',
                    ctx.source.line("sections", i, "sessions", j),
                )
