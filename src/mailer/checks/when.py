"""The date an issue will go out, which the checks judge it by."""

from __future__ import annotations

import datetime as dt

from mailer.clock import utcnow
from mailer.config import Settings
from mailer.content import Issue
from mailer.store import schedules
from mailer.store.database import exists, open_db
from mailer.store.models import ScheduleKind, as_utc


def today(settings: Settings) -> dt.date:
    """Today in the newsletter's time zone."""
    return utcnow().astimezone(settings.tz).date()


def local_date(settings: Settings, moment: dt.datetime) -> dt.date:
    return as_utc(moment).astimezone(settings.tz).date()


def planned_send_date(settings: Settings, issue: Issue) -> tuple[dt.date, str]:
    """When ``issue`` goes out, and why that date: its next schedule, else today."""
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
    return today(settings), "today"
