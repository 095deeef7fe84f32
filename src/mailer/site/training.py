"""Training sessions across the published issues: calendar entries that follow them.

Each session of a training section becomes a calendar entry: a file to add from the issue
(``build/SLUG/COURSE_SESSION.ics``) and an event of the feed of every upcoming session
(``build/training.ics``, with the page ``build/training/index.html``). Calendar apps match
an entry by its ``UID``, so an entry must keep it for as long as it is the same session:

- A session is identified by its course and its own id (:attr:`Section.course_id`,
  :attr:`Session.key`): the ``id:`` keys of issue.yaml, or by default the course's title
  and the session's first date and start time. ``mailer new --from`` writes both ids into
  the new issue, so a session whose date is then changed stays the same session.
- A session written afresh (no ``id:``) that a later issue lists instead of one of the same
  course that disappeared before its date is taken to be that session, moved: on the same
  day at another time or place, or at the same place and times on another day.
- The issues are read in order of their dates. An entry's ``SEQUENCE`` is the number of
  times its date, times, place or status changed from one issue to the next, and its
  ``DTSTAMP`` the date of the issue that made the change, so the same published issues
  always give the same feed, and every change reaches calendars as an update.
- A session that a later issue no longer lists, while that issue still lists its course
  and the session's date has not come, is cancelled: ``STATUS:CANCELLED`` until its date
  passes. An issue without the course (a special edition) cancels nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailer import urls
from mailer.config import Settings
from mailer.content import Issue, Section, Session
from mailer.render.compile import environment
from mailer.render.ical import CalendarEvent, calendar_text
from mailer.render.markdown import smart_quotes
from mailer.render.text import markdown_to_text

# The time of day an issue's changes are stamped with, in the newsletter's zone.
_STAMP_TIME = dt.time(9, 0)
UNWRAPPED = 100_000


@dataclass(frozen=True)
class Entry:
    """One session's calendar entry as of some issue."""

    uid: str
    slug: str  # the latest issue that lists it
    section: Section
    session: Session
    sequence: int
    stamp: dt.datetime
    cancelled: bool = False

    @property
    def version(self) -> tuple[object, ...]:
        """What a change of makes calendars update the entry."""
        s = self.session
        return (s.date, s.start, s.end, s.venue, self.cancelled)

    @property
    def file(self) -> str:
        """Its file to add, in the folder of the latest issue that lists it."""
        return urls.session_file(self.section.course_id, self.session.key)


def in_order(issues: Iterable[Issue]) -> list[Issue]:
    """Issues in the order their news happened: by date, then slug."""
    return sorted(issues, key=lambda i: (i.date, i.slug))


def _stamp(settings: Settings, issue: Issue) -> dt.datetime:
    return dt.datetime.combine(issue.date, _STAMP_TIME, tzinfo=settings.tz).astimezone(dt.UTC)


class History:
    """The entries of every session of ``issues``, read in order (see the module's text)."""

    def __init__(self, settings: Settings, issues: Iterable[Issue]) -> None:
        self.settings = settings
        self.host = urls.calendar_host(settings)
        self.entries: dict[str, Entry] = {}
        # (course id, session key) -> uid: every name a session has had.
        self.names: dict[tuple[str, str], str] = {}
        # (slug, course id, session key) -> the entry as that issue made it.
        self.as_listed: dict[tuple[str, str, str], Entry] = {}
        for issue in in_order(issues):
            self._read(issue)

    def _read(self, issue: Issue) -> None:
        stamp = _stamp(self.settings, issue)
        listed: set[str] = set()
        courses = {s.course_id for s in issue.sections if s.type == "training"}
        for section in issue.sections:
            fresh: list[Session] = []
            for session in section.sessions:
                uid = self.names.get((section.course_id, session.key))
                if uid is None or uid in listed:
                    fresh.append(session)
                else:
                    self._list(issue, section, session, uid, stamp, listed)
            for session in fresh:
                uid = self._moved(issue, section, session, listed) if session.id is None else None
                if uid is None:
                    name, n = f"{section.course_id}/{session.key}", 1
                    uid = f"{name}@{self.host}"
                    while uid in self.entries:  # names that an earlier session had
                        n += 1
                        uid = f"{name}-{n}@{self.host}"
                self._list(issue, section, session, uid, stamp, listed)
        for uid, entry in self.entries.items():
            gone = (
                uid not in listed
                and not entry.cancelled
                and entry.section.course_id in courses
                and entry.session.date >= issue.date
            )
            if gone:
                self.entries[uid] = dataclasses.replace(
                    entry, cancelled=True, sequence=entry.sequence + 1, stamp=stamp
                )

    def _moved(
        self, issue: Issue, section: Section, session: Session, listed: set[str]
    ) -> str | None:
        """The entry ``session`` takes the place of, if it is one of its course, moved."""
        candidates = [
            e
            for uid, e in self.entries.items()
            if uid not in listed
            and not e.cancelled
            and e.section.course_id == section.course_id
            and e.session.date >= issue.date
        ]

        def same_day(e: Entry) -> bool:
            return e.session.date == session.date

        def same_place_and_times(e: Entry) -> bool:
            s = e.session
            return (s.venue, s.start, s.end) == (session.venue, session.start, session.end)

        for rule in (same_day, same_place_and_times):
            matches = [e for e in candidates if rule(e)]
            if matches:
                best = min(
                    matches, key=lambda e: (abs((e.session.date - session.date).days), e.uid)
                )
                return best.uid
        return None

    def _list(
        self,
        issue: Issue,
        section: Section,
        session: Session,
        uid: str,
        stamp: dt.datetime,
        listed: set[str],
    ) -> None:
        before = self.entries.get(uid)
        entry = Entry(uid, issue.slug, section, session, 0, stamp)
        if before is not None:
            changed = before.version != entry.version
            entry = dataclasses.replace(
                entry,
                sequence=before.sequence + (1 if changed else 0),
                stamp=stamp if changed else before.stamp,
            )
        self.entries[uid] = entry
        self.names[(section.course_id, session.key)] = uid
        self.as_listed[(issue.slug, section.course_id, session.key)] = entry
        listed.add(uid)

    def upcoming(self, today: dt.date) -> list[Entry]:
        """Every entry whose day has not passed, cancelled ones included, soonest first."""
        found = [e for e in self.entries.values() if e.session.date >= today]
        return sorted(found, key=lambda e: (e.session.date, e.session.start, e.uid))

    def of_issue(self, issue: Issue) -> list[Entry]:
        """The entries of ``issue``'s sessions as it lists them, in its order."""
        return [
            self.as_listed[(issue.slug, section.course_id, session.key)]
            for section in issue.sections
            for session in section.sessions
        ]


def event(settings: Settings, entry: Entry) -> CalendarEvent:
    """An entry as an iCalendar event."""
    section, session = entry.section, entry.session
    # Paragraphs unwrapped: calendar apps wrap the text to their own width.
    lines = [markdown_to_text(section.body, UNWRAPPED)] if section.body else []
    if session.note:
        lines.append(smart_quotes(session.note))
    if session.url:
        lines.append(f"Join online: {session.url}")
    if section.booking_url:
        booking = section.booking_url.removeprefix("mailto:")
        lines.append(f"{smart_quotes(section.booking_text)}: {booking}")
    lines.append(f"From {settings.name}: {urls.issue_url(settings, entry.slug)}")
    return CalendarEvent(
        uid=entry.uid,
        start=dt.datetime.combine(session.date, session.start),
        end=dt.datetime.combine(session.date, session.end) if session.end else None,
        summary=smart_quotes(section.title),
        location=session.venue,
        description="\n\n".join(lines),
        url=section.booking_url or session.url or urls.issue_url(settings, entry.slug),
        sequence=entry.sequence,
        stamp=entry.stamp,
        cancelled=entry.cancelled,
    )


def issue_calendars(settings: Settings, issue: Issue, published: Sequence[Issue]) -> dict[str, str]:
    """``{file name: iCalendar text}`` for each session of ``issue``, as it stands after the
    published issues up to it (the issue itself included, published or not)."""
    if not any(section.sessions for section in issue.sections):
        return {}
    earlier = [
        i for i in published if i.slug != issue.slug and (i.date, i.slug) < (issue.date, issue.slug)
    ]
    history = History(settings, [*earlier, issue])
    return {
        entry.file: calendar_text([event(settings, entry)], settings.timezone)
        for entry in history.of_issue(issue)
    }


def feed_text(settings: Settings, published: Iterable[Issue], day: dt.date) -> str:
    """The feed of every upcoming session of the published issues (``training.ics``)."""
    entries = History(settings, published).upcoming(day)
    return calendar_text(
        [event(settings, e) for e in entries],
        settings.timezone,
        name=f"{settings.name}: training",
        years=[day.year],
    )


def page_html(settings: Settings, published: Iterable[Issue], day: dt.date) -> str:
    """The page listing every upcoming session (``training/index.html``)."""
    entries = History(settings, published).upcoming(day)
    rows = [
        {
            "entry": e,
            "title": smart_quotes(e.section.title),
            "course_url": f"{urls.issue_url(settings, e.slug)}#{e.section.anchor}",
            "calendar_url": urls.session_calendar_url(
                settings, e.slug, e.section.course_id, e.session.key
            ),
        }
        for e in entries
    ]
    template = environment(settings).get_template("training.html.j2")
    return template.render(
        settings=settings,
        rows=rows,
        feed_url=urls.training_feed_url(settings),
        webcal_url=urls.training_webcal_url(settings),
        archive_url=urls.archive_url(settings),
        logo_url=urls.asset_url(settings, settings.brand.logo) if settings.brand.logo else None,
    )
