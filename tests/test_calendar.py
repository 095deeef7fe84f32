"""Training sessions in practitioners' calendars: the files to add and the feed.

Every calendar file mailer writes is read back by two independent iCalendar libraries
(icalendar and ics, from PyPI) and its times compared with the issue's text, in real
instants of the newsletter's zone, on ordinary days and on the days the clocks change.
Later issues that move, drop and keep sessions are written as a comms officer would (with
`mailer new --from`, or by hand) and the feed is checked for the UIDs, SEQUENCE numbers and
cancellations a subscribed calendar needs.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import ics
import pytest
from fastapi.testclient import TestClient

from check_helpers import write_issue
from conftest import Result, draft_dir
from mailer import config, urls
from mailer.config import Settings
from mailer.content import Issue, load_issues
from mailer.render.markdown import smart_quotes
from mailer.render.text import markdown_to_text
from mailer.site import build as builder
from mailer.web import create_app

LONDON = ZoneInfo("Europe/London")
COURSE = """\
  - type: training
    title: "Understanding the Levels of Need"
    body: |
      A course for Designated Safeguarding Leads: "thresholds", roles and responsibilities.
    booking_url: "https://example.org/cscp/training/levels-of-need"
    sessions:
{sessions}
"""


def course(*rows: str) -> str:
    return COURSE.format(sessions="\n".join(f"      - {{{row}}}" for row in rows))


def row(day: str, start: str, end: str, venue: str, ident: str = "") -> str:
    prefix = f"id: {ident}, " if ident else ""
    return f'{prefix}date: {day}, start: "{start}", end: "{end}", venue: {venue}'


def read_both(path: Path) -> tuple[list[Any], list[Any]]:
    """The events of a file by each library; the file's own form checked on the way."""
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    lines = raw.split(b"\r\n")
    assert lines[-1] == b"" and b"\n" not in b"".join(lines), f"{path}: lines end in CRLF"
    assert max(len(line) for line in lines) <= 75, f"{path}: lines folded at 75 octets"
    parsed = icalendar.Calendar.from_ical(text)
    assert parsed["METHOD"] == "PUBLISH"
    assert [tz["TZID"] for tz in parsed.walk("VTIMEZONE")] == ["Europe/London"]
    assert "DTSTART;TZID=Europe/London:" in text
    return list(parsed.walk("VEVENT")), sorted(ics.Calendar(text).events, key=lambda e: e.begin)


def at(day: dt.date, time: dt.time | None) -> dt.datetime:
    assert time is not None
    return dt.datetime.combine(day, time, tzinfo=LONDON)


def calendar_files(settings: Settings, issue: Issue) -> dict[tuple[str, str], Path]:
    return {
        (section.course_id, s.key): builder.built_dir(settings, issue.slug)
        / urls.session_file(section.course_id, s.key)
        for section in issue.sections
        for s in section.sessions
    }


def test_every_session_file_says_what_the_issue_says(settings: Settings) -> None:
    (issue,) = load_issues(settings, ["2025-11"])
    files = calendar_files(settings, issue)
    assert len(files) == 31
    assert sorted(p.name for p in (builder.built_dir(settings, "2025-11")).glob("*.ics")) == sorted(
        p.name for p in files.values()
    )
    uids = set()
    for section in issue.sections:
        for s in section.sessions:
            path = files[(section.course_id, s.key)]
            (event,), (other,) = read_both(path)
            start, end = at(s.date, s.start), at(s.date, s.end)
            assert event.start == start and event.end == end
            assert event.start.utcoffset() == start.utcoffset()
            assert other.begin == start and other.end == end
            assert str(event["LOCATION"]) == other.location == s.venue
            assert str(event["SUMMARY"]) == other.name == smart_quotes(section.title)
            assert str(event["URL"]) == (section.booking_url or s.url)
            assert event["STATUS"] == "CONFIRMED" and event["SEQUENCE"] == 0
            assert event["DTSTAMP"].dt.tzinfo is not None
            description = str(event["DESCRIPTION"])
            opening = " ".join(markdown_to_text(section.body).split()[:6])
            assert " ".join(description.split()).startswith(opening)
            assert urls.issue_url(settings, "2025-11") in description
            uids.add(str(event["UID"]))
    assert len(uids) == 31
    assert all(uid.endswith("@news.example.org") for uid in uids)


def test_the_email_and_the_web_version_link_each_session_to_its_file(
    settings: Settings,
) -> None:
    (issue,) = load_issues(settings, ["2025-11"])
    for name in ("email.html", "index.html", "email.txt"):
        text = (builder.built_dir(settings, "2025-11") / name).read_text(encoding="utf-8")
        for (course_id, key), _ in calendar_files(settings, issue).items():
            url = urls.session_calendar_url(settings, "2025-11", course_id, key)
            assert text.count(url) == 1, (name, url)
        assert urls.training_url(settings) in text
    assert (builder.built_dir(settings, "2025-11") / "email.html").read_text().count(
        ">Add to calendar</a>"
    ) == 31


@pytest.mark.parametrize(
    ("day", "start", "utc"),
    [
        ("2026-03-29", "09:30", "2026-03-29 08:30"),  # the clocks went forward at 1am
        ("2026-10-25", "09:30", "2026-10-25 09:30"),  # the clocks went back at 2am
        ("2026-03-28", "09:30", "2026-03-28 09:30"),  # the day before: still GMT
        ("2026-07-07", "13:30", "2026-07-07 12:30"),
    ],
)
def test_a_session_on_the_day_the_clocks_change(
    newsletter: Path, cli: Any, day: str, start: str, utc: str
) -> None:
    slug = write_issue(
        newsletter, course(row(day, start, "12:30" if start < "12" else "16:30", "Carlisle"))
    )
    result: Result = cli("build", slug)
    assert result.exit_code == 0, result.output
    (path,) = draft_dir(newsletter, slug).glob("*.ics")
    (event,), (other,) = read_both(path)
    want = dt.datetime.fromisoformat(utc).replace(tzinfo=dt.UTC)
    assert event.start.astimezone(dt.UTC) == want
    assert other.begin.astimezone(dt.UTC) == want
    # The zone's rules, not a fixed offset: both libraries read the same instant back.
    assert event.end - event.start == other.end - other.begin


def feed(settings: Settings, today: str, *slugs: str) -> tuple[list[Any], list[Any], str]:
    for slug in slugs:
        builder.publish(settings, slug)
    builder.build(settings, list(slugs), archive=True, today=dt.date.fromisoformat(today))
    path = settings.build_dir / "training.ics"
    text = path.read_text(encoding="utf-8")
    parsed = icalendar.Calendar.from_ical(text)
    events = sorted(parsed.walk("VEVENT"), key=lambda e: e.start)
    return events, sorted(ics.Calendar(text).events, key=lambda e: e.begin), text


def by_start(events: list[Any]) -> dict[str, Any]:
    return {e.start.strftime("%m-%d"): e for e in events}


def test_a_later_issue_that_moves_one_session_and_drops_another(newsletter: Path, cli: Any) -> None:
    settings = config.load(newsletter)
    first = course(
        row("2026-01-12", "09:30", "12:30", "Carlisle"),
        row("2026-01-29", "09:30", "12:30", "Workington"),
        row("2026-02-03", "13:30", "16:30", "Whitehaven"),
    )
    write_issue(newsletter, first, slug="2026-01", date="2026-01-05")
    events, others, _ = feed(settings, "2026-01-05", "2026-01")
    assert [e["SEQUENCE"] for e in events] == [0, 0, 0]
    assert [str(o.status) for o in others] == ["CONFIRMED"] * 3
    before = {k: (str(e["UID"]), e["DTSTAMP"].dt) for k, e in by_start(events).items()}

    # February's issue, started from January's: the Workington session moves to 5 February
    # (its date edited in place), the Whitehaven one is dropped.
    result: Result = cli("new", "2026-02", "--date", "2026-01-26", "--from", "2026-01")
    assert result.exit_code == 0, result.output
    path = newsletter / "issues" / "2026-02" / "issue.yaml"
    text = path.read_text(encoding="utf-8")
    assert "id: 2026-01-29-0930, date: 2026-01-29" in text
    text = text.replace("date: 2026-01-29,", "date: 2026-02-05,")
    text = re.sub(r"\n\s+- \{id: 2026-02-03-1330[^\n]*", "", text)
    path.write_text(text, encoding="utf-8")

    events, others, feed_text = feed(settings, "2026-01-26", "2026-01", "2026-02")
    after = by_start(events)
    assert sorted(after) == ["02-03", "02-05"]  # 12 January has passed
    moved, dropped = after["02-05"], after["02-03"]
    assert str(moved["UID"]) == before["01-29"][0]
    assert moved["SEQUENCE"] == 1 and moved.get("STATUS") == "CONFIRMED"
    assert moved["DTSTAMP"].dt > before["01-29"][1]
    assert moved.start == at(dt.date(2026, 2, 5), dt.time(9, 30))
    assert str(dropped["UID"]) == before["02-03"][0]
    assert dropped["STATUS"] == "CANCELLED" and dropped["SEQUENCE"] == 1
    assert dropped["DTSTAMP"].dt > before["02-03"][1]
    assert [(o.uid, str(o.status)) for o in others] == [
        (before["02-03"][0], "CANCELLED"),
        (before["01-29"][0], "CONFIRMED"),
    ]
    # The moved session's own file in February's folder is the same entry, updated.
    (own,), _ = read_both(
        newsletter
        / "build"
        / "2026-02"
        / urls.session_file("understanding-the-levels-of-need", "2026-01-29-0930")
    )
    assert str(own["UID"]) == before["01-29"][0] and own["SEQUENCE"] == 1
    # The same published issues always give the same feed.
    assert feed(settings, "2026-01-26", "2026-01", "2026-02")[2] == feed_text
    # Once its date has passed, the cancelled session leaves the feed.
    events, _, _ = feed(settings, "2026-02-04", "2026-01", "2026-02")
    assert sorted(by_start(events)) == ["02-05"]


def test_a_session_moved_in_an_issue_written_by_hand_keeps_its_entry(newsletter: Path) -> None:
    settings = config.load(newsletter)
    write_issue(
        newsletter,
        course(
            row("2026-01-29", "09:30", "12:30", "Workington"),
            row("2026-02-03", "13:30", "16:30", "Whitehaven"),
        ),
        slug="2026-01",
        date="2026-01-05",
    )
    (old_a, old_b), _, _ = feed(settings, "2026-01-05", "2026-01")
    # No ids: Workington moves a week on; Whitehaven moves to the morning of the same day.
    write_issue(
        newsletter,
        course(
            row("2026-02-05", "09:30", "12:30", "Workington"),
            row("2026-02-03", "09:30", "12:30", "Whitehaven"),
        ),
        slug="2026-02",
        date="2026-01-26",
    )
    events, _, _ = feed(settings, "2026-01-26", "2026-01", "2026-02")
    assert {str(e["UID"]): (e["SEQUENCE"], e.get("STATUS")) for e in events} == {
        str(old_a["UID"]): (1, "CONFIRMED"),
        str(old_b["UID"]): (1, "CONFIRMED"),
    }


def test_a_session_carried_unchanged_keeps_its_uid_and_sequence(newsletter: Path, cli: Any) -> None:
    settings = config.load(newsletter)
    write_issue(
        newsletter,
        course(row("2026-02-03", "13:30", "16:30", "Whitehaven")),
        slug="2026-01",
        date="2026-01-05",
    )
    (first,), _, _ = feed(settings, "2026-01-05", "2026-01")
    assert cli("new", "2026-02", "--date", "2026-01-26", "--from", "2026-01").exit_code == 0
    # A special edition without the course cancels nothing.
    write_issue(
        newsletter,
        '  - type: news\n    title: "Season\'s greetings"\n',
        slug="2026-01x",
        date="2026-01-20",
    )
    (again,), _, _ = feed(settings, "2026-01-26", "2026-01", "2026-01x", "2026-02")
    assert str(again["UID"]) == str(first["UID"])
    assert again["SEQUENCE"] == 0 and again["STATUS"] == "CONFIRMED"
    assert again["DTSTAMP"] == first["DTSTAMP"]
    name = urls.session_file("understanding-the-levels-of-need", "2026-02-03-1330")
    rebuilt = (settings.build_dir / "2026-02" / name).read_bytes()
    builder.build(settings, ["2026-02"])
    assert (settings.build_dir / "2026-02" / name).read_bytes() == rebuilt


def test_mailer_serve_serves_the_files_the_page_and_the_feed(newsletter: Path) -> None:
    settings = config.load(newsletter)
    builder.publish(settings, "2025-11")
    client = TestClient(create_app(settings))
    (issue,) = load_issues(settings, ["2025-11"])
    for path in list(calendar_files(settings, issue).values())[:3]:
        answer = client.get(f"/2025-11/{path.name}")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/calendar; charset=utf-8"
        assert answer.content == path.read_bytes()
    assert client.get("/2025-11/no-such-course_2026-01-01-0930.ics").status_code == 404
    assert client.get("/2021-12/anything.ics").status_code == 404  # a draft
    feed_answer = client.get("/training.ics")
    assert feed_answer.status_code == 200
    assert feed_answer.headers["content-type"] == "text/calendar; charset=utf-8"
    assert icalendar.Calendar.from_ical(feed_answer.text)["METHOD"] == "PUBLISH"
    page = client.get("/training/")
    assert page.status_code == 200 and "training calendar" in page.text
    assert urls.training_webcal_url(settings) in page.text
    assert urls.training_url(settings) in client.get("/").text


def test_a_session_without_an_end_time_starts_and_lasts_no_time(newsletter: Path, cli: Any) -> None:
    slug = write_issue(newsletter, course('date: 2026-03-10, start: "09:30", venue: Carlisle'))
    assert cli("build", slug).exit_code == 0
    (path,) = draft_dir(newsletter, slug).glob("*.ics")
    (event,), (other,) = read_both(path)
    assert event.start == other.begin == at(dt.date(2026, 3, 10), dt.time(9, 30))
    assert event.duration == dt.timedelta(0) and other.end == other.begin
    email = (draft_dir(newsletter, slug) / "email.html").read_text(encoding="utf-8")
    assert "Tuesday 10 March 2026</strong><br>from 9:30am · Carlisle" in email


@pytest.mark.parametrize(
    ("sessions", "problem"),
    [
        (
            [row("2026-03-10", "09:30", "12:30", "Carlisle", "Bad Id")],
            "sections[0].sessions[0].id: 'Bad Id' is not an id",
        ),
        (
            [
                row("2026-03-10", "09:30", "12:30", "Carlisle", "first"),
                row("2026-03-12", "09:30", "12:30", "Wigton", "first"),
            ],
            "sections[0].sessions[1].id: 'first' is the id of an earlier session of this course",
        ),
    ],
)
def test_a_wrong_id_is_named_with_its_line(
    newsletter: Path, cli: Any, sessions: list[str], problem: str
) -> None:
    slug = write_issue(newsletter, course(*sessions))
    result: Result = cli("build", slug)
    assert result.exit_code == 1
    assert problem in result.output
    assert "Traceback" not in result.output
