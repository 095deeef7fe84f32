"""Schedules: one issue at a date and time, or a monthly rule, and running what is due.

The database is the source of truth; the worker (:mod:`mailer.worker`) only decides when
to look. Every run goes through :func:`run_due`, which takes the current time as an
argument, so tests drive it with any clock.

A schedule is claimed with a compare-and-set on its ``next_run_at`` before anything is
sent, so two workers (or a worker and ``mailer worker --once`` from cron) never run the
same slot twice.

Times are written in the newsletter's time zone (``timezone`` in mailer.toml, default
Europe/London) and stored in UTC. A time the clocks skip (01:30 on the last Sunday of
March in London) is refused; a time that happens twice (01:30 on the last Sunday of
October) means the first of the two.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apscheduler.triggers.cron import CronTrigger
from sqlmodel import col, select

from mailer import sender, sending, sends, store
from mailer.build import all_slugs, compile_slug, load_issues
from mailer.config import Settings
from mailer.db import Database
from mailer.errors import ContentError, MailerError, NotFound, ScheduleError, StateError
from mailer.models import (
    Schedule,
    ScheduleKind,
    ScheduleStatus,
    Send,
    SendStatus,
    as_utc,
    table_of,
    utcnow,
)
from mailer.transports import TransportFactory

log = logging.getLogger("mailer.scheduler")
_AT = re.compile(r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")
_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")
# One day a month: "15", "last", "1st tue" .. "5th tue", "last fri".
_MONTHLY_DAY = re.compile(
    r"^(?:[1-9]|[12]\d|3[01]|last|(?:[1-5](?:st|nd|rd|th)|last) (?:mon|tue|wed|thu|fri|sat|sun))$"
)


# -- parsing -------------------------------------------------------------------------------


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


def local(moment: dt.datetime | None, tz: ZoneInfo) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(tz).strftime("%a %d %b %Y %H:%M %Z")


# -- creating, listing, removing -------------------------------------------------------------


def _check_lists(session: object, lists: Sequence[str]) -> list[str]:
    if not lists:
        raise ScheduleError("name at least one list with --list")
    return [store.get_list(session, name).slug for name in dict.fromkeys(lists)]  # type: ignore[arg-type]


def schedule_once(
    settings: Settings,
    database: Database,
    slug: str,
    lists: Sequence[str],
    at: str,
    now: dt.datetime,
) -> Schedule:
    when = parse_at(at, settings.tz)
    if when <= now:
        raise ScheduleError(f"--at {at!r} is in the past (it is now {local(now, settings.tz)})")
    compiled = compile_slug(settings, slug)
    with database.session(write=True) as session:
        sends.require_approval(session, compiled)
        names = _check_lists(session, lists)
        item = Schedule(
            kind=ScheduleKind.ONCE, slug=slug, lists=json.dumps(names), next_run_at=when
        )
        session.add(item)
        session.flush()
        session.refresh(item)
    log.info(
        "scheduled %s for %s to %s (schedule %s)",
        slug,
        local(when, settings.tz),
        ", ".join(names),
        item.id,
    )
    return item


def schedule_monthly(
    settings: Settings, database: Database, rule_text: str, lists: Sequence[str], now: dt.datetime
) -> Schedule:
    rule = parse_rule(rule_text)
    with database.session(write=True) as session:
        names = _check_lists(session, lists)
        item = Schedule(
            kind=ScheduleKind.MONTHLY,
            rule=str(rule),
            lists=json.dumps(names),
            next_run_at=rule.next_after(now, settings.tz),
        )
        session.add(item)
        session.flush()
        session.refresh(item)
    log.info("scheduled monthly %s to %s (schedule %s)", rule, ", ".join(names), item.id)
    return item


def all_schedules(database: Database) -> list[Schedule]:
    with database.session() as session:
        return list(session.exec(select(Schedule).order_by(col(Schedule.id))).all())


def unschedule(database: Database, schedule_id: int) -> Schedule:
    with database.session(write=True) as session:
        item = session.get(Schedule, schedule_id)
        if item is None:
            raise NotFound(f"there is no schedule {schedule_id} (see: mailer schedules)")
        if item.status != ScheduleStatus.ACTIVE:
            raise StateError(f"schedule {schedule_id} is already {item.status}")
        item.status = ScheduleStatus.CANCELLED
        item.next_run_at = None
        session.add(item)
    log.info("unscheduled schedule %s", schedule_id)
    return item


# -- running what is due -----------------------------------------------------------------------


@dataclass(frozen=True)
class RunOutcome:
    schedule_id: int
    slug: str | None
    outcome: str
    sent: bool


def _claim(
    database: Database, item: Schedule, now: dt.datetime, tz: ZoneInfo
) -> dt.datetime | None:
    """Advance the schedule past this slot; None if another worker got there first."""
    assert item.next_run_at is not None
    # At least a day on: a slot at a time the clocks repeat (01:30 on the last Sunday of
    # October) must not fire again an hour later.
    after = max(now, item.next_run_at + dt.timedelta(days=1))
    upcoming = _rule_of(item).next_after(after, tz) if item.kind == ScheduleKind.MONTHLY else None
    table = table_of(Schedule)
    with database.session(write=True) as session:
        result = session.connection().execute(
            sa.update(table)
            .where(
                table.c.id == item.id,
                table.c.status == ScheduleStatus.ACTIVE,
                table.c.next_run_at == item.next_run_at,
            )
            .values(next_run_at=upcoming, last_run_at=now)
        )
        if result.rowcount != 1:
            return None
    return item.next_run_at


def _rule_of(item: Schedule) -> Rule:
    assert item.rule is not None
    return parse_rule(item.rule)


def _record(
    database: Database,
    schedule_id: int,
    outcome: str,
    *,
    status: ScheduleStatus | None = None,
    send_id: int | None = None,
) -> None:
    with database.session(write=True) as session:
        item = session.get(Schedule, schedule_id)
        assert item is not None
        item.last_outcome = outcome
        if send_id is not None:
            item.last_send_id = send_id
        if status is not None:
            item.status = status
        session.add(item)


def issue_for_month(settings: Settings, database: Database, month: dt.date) -> str:
    """The approved, not-yet-sent issue dated in ``month``; ScheduleError saying why not."""
    label = f"{month:%B %Y}"
    try:
        issues = load_issues(settings, all_slugs(settings))
    except ContentError as exc:
        raise ScheduleError(f"the issues folder has problems: {exc.problems[0]}") from exc
    dated = sorted(
        (i for i in issues if (i.date.year, i.date.month) == (month.year, month.month)),
        key=lambda i: (i.date, i.slug),
    )
    if not dated:
        raise ScheduleError(f"no issue is dated in {label}")
    reasons = []
    with database.session() as session:
        for issue in dated:
            done = session.exec(
                select(Send).where(
                    Send.slug == issue.slug,
                    col(Send.status).in_(
                        [str(s) for s in (SendStatus.SENT, SendStatus.SENDING, SendStatus.PAUSED)]
                    ),
                )
            ).first()
            if done is not None:
                reasons.append(f"{issue.slug} was already sent")
                continue
            if sends.latest_approval(session, issue.slug) is None:
                reasons.append(f"{issue.slug} is not approved")
                continue
            return issue.slug
    raise ScheduleError(f"nothing to send for {label}: {'; '.join(reasons)}")


def run_due(
    settings: Settings,
    database: Database,
    now: dt.datetime,
    *,
    factory: TransportFactory | None = None,
    stop: threading.Event | None = None,
) -> list[RunOutcome]:
    """Run every schedule whose time has come; mark missed ones beyond the grace period."""
    tz = settings.tz
    grace = dt.timedelta(hours=settings.misfire_grace_hours)
    with database.session() as session:
        due = list(
            session.exec(
                select(Schedule)
                .where(Schedule.status == ScheduleStatus.ACTIVE, col(Schedule.next_run_at) <= now)
                .order_by(col(Schedule.next_run_at))
            ).all()
        )
    outcomes = []
    started = time.monotonic()
    for item in due:
        assert item.id is not None
        if stop is not None and stop.is_set():
            break
        # A send before this one may have taken hours: judge lateness by the time now.
        current = now + dt.timedelta(seconds=time.monotonic() - started)
        slot = _claim(database, item, current, tz)
        if slot is None:
            continue
        once = item.kind == ScheduleKind.ONCE
        late = current - slot
        if late > grace:
            outcome = (
                f"missed: due {local(slot, tz)}, but no worker ran until {local(current, tz)} "
                f"(more than the {settings.misfire_grace_hours:g} h grace period); not sent"
            )
            log.warning("schedule %s %s", item.id, outcome)
            _record(database, item.id, outcome, status=ScheduleStatus.MISSED if once else None)
            outcomes.append(RunOutcome(item.id, item.slug, outcome, False))
            continue
        outcomes.append(_run_one(settings, database, item, slot, factory, stop))
    return outcomes


def _run_one(
    settings: Settings,
    database: Database,
    item: Schedule,
    slot: dt.datetime,
    factory: TransportFactory | None,
    stop: threading.Event | None,
) -> RunOutcome:
    assert item.id is not None
    once = item.kind == ScheduleKind.ONCE
    lists = json.loads(item.lists)
    slug = item.slug
    try:
        if slug is None:
            slug = issue_for_month(settings, database, slot.astimezone(settings.tz).date())
        compiled = compile_slug(settings, slug)
        with database.session(write=True) as session:
            approval = sends.require_approval(session, compiled)
            send = sends.create(session, compiled, lists, approval, scheduled_at=slot)
            assert send.id is not None
            send_id = send.id
    except MailerError as exc:
        outcome = f"not sent: {exc}"
        log.warning("schedule %s %s", item.id, outcome)
        _record(database, item.id, outcome, status=ScheduleStatus.FAILED if once else None)
        return RunOutcome(item.id, slug, outcome, False)
    log.info("started scheduled send of %s (schedule %s, send %s)", slug, item.id, send_id)
    _record(database, item.id, f"sending {slug} (send {send_id})", send_id=send_id)
    try:
        result = run_send(settings, database, send_id, factory, stop)
    except MailerError as exc:
        outcome = f"not sent: {exc}"
        log.warning("schedule %s %s", item.id, outcome)
        _record(database, item.id, outcome, status=ScheduleStatus.FAILED if once else None)
        return RunOutcome(item.id, slug, outcome, False)
    outcome = summarise(result)
    done = once and result.status == SendStatus.SENT
    _record(database, item.id, outcome, status=ScheduleStatus.DONE if done else None)
    return RunOutcome(item.id, slug, outcome, result.status == SendStatus.SENT)


def summarise(result: sender.RunResult) -> str:
    c = result.counts
    failed = c.get("failed-temporary", 0) + c.get("failed-permanent", 0)
    text_ = (
        f"{result.status}: {result.slug} {c.get('sent', 0)} of {result.total} sent, {failed} failed"
    )
    return text_ + (f" ({result.reason})" if result.reason else "")


def run_send(
    settings: Settings,
    database: Database,
    send_id: int,
    factory: TransportFactory | None = None,
    stop: threading.Event | None = None,
) -> sender.RunResult:
    with database.session() as session:
        slug = sends.get(session, send_id).slug
    return sending.run(
        settings,
        send_id,
        database=database,
        factory=factory,
        on_progress=_progress_logger(slug),
        stop=stop,
    )


def _progress_logger(slug: str, every: int = 500) -> sender.Progress:
    last = [0]

    def report(done: int, total: int) -> None:
        if done - last[0] >= every:
            last[0] = done
            log.info("progress %s: %d of %d", slug, done, total)

    return report


# How long the worker waits before trying again a send paused by an unavailable server.
RETRY_UNAVAILABLE_AFTER = dt.timedelta(minutes=5)


def _worth_resuming(send: Send) -> bool:
    if send.status == SendStatus.SENDING:
        return sends.abandoned(send.claimed_by, send.heartbeat_at)
    if send.status != SendStatus.PAUSED or send.claimed_by is not None:
        return False
    if send.status_reason == sender.WORKER_STOPPED:
        return True
    if send.status_reason.startswith(sender.UNAVAILABLE):
        last = send.heartbeat_at or send.started_at
        return last is None or utcnow() - as_utc(last) >= RETRY_UNAVAILABLE_AFTER
    return False


def resume_interrupted(
    settings: Settings,
    database: Database,
    factory: TransportFactory | None = None,
    *,
    stop: threading.Event | None = None,
) -> list[sender.RunResult]:
    """Resume sends whose process died or that a stopping worker paused, and try again,
    every few minutes, sends paused because the server was unavailable."""
    with database.session() as session:
        candidates = [
            s.id
            for s in session.exec(
                select(Send).where(col(Send.status).in_(["sending", "paused"]))
            ).all()
            if s.id is not None and _worth_resuming(s)
        ]
    results = []
    for send_id in candidates:
        log.info("resuming interrupted send %s", send_id)
        try:
            if stop is not None and stop.is_set():
                break
            result = run_send(settings, database, send_id, factory, stop)
        except StateError as exc:  # another worker took it first
            log.info("send %s: %s", send_id, exc)
            continue
        except MailerError as exc:
            log.warning("send %s could not be resumed: %s", send_id, exc)
            continue
        results.append(result)
        _record_resumed(database, send_id, result)
    return results


def _record_resumed(database: Database, send_id: int, result: sender.RunResult) -> None:
    """A resumed send that a schedule started: give the schedule its outcome."""
    with database.session(write=True) as session:
        for item in session.exec(select(Schedule).where(Schedule.last_send_id == send_id)).all():
            item.last_outcome = summarise(result)
            if item.kind == ScheduleKind.ONCE and result.status == SendStatus.SENT:
                item.status = ScheduleStatus.DONE
            session.add(item)
