"""The date an issue will go out, which the checks judge it by."""

from __future__ import annotations

import datetime as dt

from mailer.config import Settings
from mailer.content import Issue
from mailer.store import schedules
from mailer.store.database import exists, open_db
from mailer.store.models import ScheduleKind, as_utc


def local_date(settings: Settings, moment: dt.datetime) -> dt.date:
    return as_utc(moment).astimezone(settings.tz).date()


def planned_send_date(settings: Settings, issue: Issue) -> tuple[dt.date, str]:
    """The issue's own day, and why that date: when it goes out by its next schedule, else
    its ``date:``, else (that date past, so it can only go out now) today.

    `mailer check`, `mailer approve`, approval requests and the editor all judge dates by
    this one day, so an April issue with a March session fails in December, not on the
    day it was to be sent."""
    if exists(settings):
        with open_db(settings) as database, database.session() as session:
            upcoming = schedules.upcoming(session)
        month = (issue.date.year, issue.date.month)
        slots = []
        for item in upcoming:
            assert item.next_run_at is not None
            day = local_date(settings, item.next_run_at)
            if item.kind == ScheduleKind.ONCE and item.slug == issue.slug:
                slots.append((day, f"schedule {item.id}"))
            elif item.kind == ScheduleKind.MONTHLY and (day.year, day.month) == month:
                slots.append((day, f"monthly schedule {item.id}"))
        if slots:
            day, why = min(slots)
            return day, f"the date of {why}"
    now = settings.today()
    if issue.date >= now:
        return issue.date, "its date: in issue.yaml"
    return now, "today"
