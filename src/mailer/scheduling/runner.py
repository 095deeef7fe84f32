"""Running schedules: creating them, and sending what is due.

The database is the source of truth; the worker (:mod:`mailer.scheduling.worker`) only
decides when to look. Every run goes through :func:`run_due`, which takes the current time
as an argument, so tests drive it with any clock.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mailer import checks
from mailer.config import Settings
from mailer.content import all_slugs, load_issues
from mailer.errors import ContentError, MailerError, ScheduleError, StateError
from mailer.formats import local_time
from mailer.render import compile_slug
from mailer.scheduling.rules import parse_at, parse_rule
from mailer.sending import approval, service
from mailer.sending.engine import Progress, RunResult
from mailer.sending.transports import TransportFactory
from mailer.store import people, schedules, sends
from mailer.store.database import Database
from mailer.store.models import (
    PauseReason,
    Schedule,
    ScheduleKind,
    ScheduleStatus,
    Send,
    SendStatus,
    as_utc,
    utcnow,
)

log = logging.getLogger("mailer.scheduler")
# How long the worker waits before trying again a send paused by an unavailable server.
RETRY_UNAVAILABLE_AFTER = dt.timedelta(minutes=5)


def _check_lists(session: object, lists: Sequence[str]) -> list[str]:
    if not lists:
        raise ScheduleError("name at least one list with --list")
    return [people.get_list(session, name).slug for name in dict.fromkeys(lists)]  # type: ignore[arg-type]


def schedule_once(
    settings: Settings,
    database: Database,
    slug: str,
    lists: Sequence[str],
    at: str,
    now: dt.datetime,
    skip_checks: str | None = None,
) -> Schedule:
    when = parse_at(at, settings.tz)
    if when <= now:
        raise ScheduleError(
            f"--at {at!r} is in the past (it is now {local_time(now, settings.tz)})"
        )
    compiled = compile_slug(settings, slug)
    # Refuse now what the worker would refuse at the time: the checks for that day.
    checks.require_clean(settings, compiled, checks.local_date(settings, when), skip_checks)
    with database.session(write=True) as session:
        approval.require(session, compiled)
        names = _check_lists(session, lists)
        item = schedules.add(
            session,
            ScheduleKind.ONCE,
            names,
            when,
            slug=slug,
            checks_skipped=checks.clean_reason(skip_checks),
        )
    log.info(
        "scheduled %s for %s to %s (schedule %s)",
        slug,
        local_time(when, settings.tz),
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
        item = schedules.add(
            session,
            ScheduleKind.MONTHLY,
            names,
            rule.next_after(now, settings.tz),
            rule=str(rule),
        )
    log.info("scheduled monthly %s to %s (schedule %s)", rule, ", ".join(names), item.id)
    return item


def all_schedules(database: Database) -> list[Schedule]:
    with database.session() as session:
        return schedules.every(session)


def unschedule(database: Database, schedule_id: int) -> Schedule:
    with database.session(write=True) as session:
        item = schedules.cancel(session, schedule_id)
    log.info("unscheduled schedule %s", schedule_id)
    return item


# -- running what is due -----------------------------------------------------------------------


@dataclass(frozen=True)
class RunOutcome:
    schedule_id: int
    slug: str | None
    outcome: str
    sent: bool


def _next_slot(item: Schedule, now: dt.datetime, settings: Settings) -> dt.datetime | None:
    """The run after this one: None for a one-off."""
    if item.kind != ScheduleKind.MONTHLY:
        return None
    assert item.next_run_at is not None and item.rule is not None
    # At least a day on: a slot at a time the clocks repeat (01:30 on the last Sunday of
    # October) must not fire again an hour later.
    after = max(now, item.next_run_at + dt.timedelta(days=1))
    return parse_rule(item.rule).next_after(after, settings.tz)


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
            if sends.issue_is_taken(session, issue.slug):
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
        due = schedules.due(session, now)
    outcomes = []
    started = time.monotonic()
    for item in due:
        assert item.id is not None and item.next_run_at is not None
        if stop is not None and stop.is_set():
            break
        # A send before this one may have taken hours: judge lateness by the time now.
        current = now + dt.timedelta(seconds=time.monotonic() - started)
        slot = item.next_run_at
        if not schedules.claim_slot(database, item, current, _next_slot(item, current, settings)):
            continue
        once = item.kind == ScheduleKind.ONCE
        late = current - slot
        if late > grace:
            outcome = (
                f"missed: due {local_time(slot, tz)}, but no worker ran until "
                f"{local_time(current, tz)} (more than the {settings.misfire_grace_hours:g} h "
                "grace period); not sent"
            )
            log.warning("schedule %s %s", item.id, outcome)
            schedules.record(
                database, item.id, outcome, status=ScheduleStatus.MISSED if once else None
            )
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
    failed = ScheduleStatus.FAILED if once else None
    try:
        if slug is None:
            slug = issue_for_month(settings, database, slot.astimezone(settings.tz).date())
        send_id = service.create(
            settings,
            slug,
            lists,
            database=database,
            scheduled_at=slot,
            skip_checks=item.checks_skipped,
        )
    except MailerError as exc:
        outcome = f"not sent: {exc}"
        log.warning("schedule %s %s", item.id, outcome)
        schedules.record(database, item.id, outcome, status=failed)
        return RunOutcome(item.id, slug, outcome, False)
    log.info("started scheduled send of %s (schedule %s, send %s)", slug, item.id, send_id)
    schedules.record(database, item.id, f"sending {slug} (send {send_id})", send_id=send_id)
    try:
        result = run_send(settings, database, send_id, factory, stop)
    except MailerError as exc:
        outcome = f"not sent: {exc}"
        log.warning("schedule %s %s", item.id, outcome)
        schedules.record(database, item.id, outcome, status=failed)
        return RunOutcome(item.id, slug, outcome, False)
    outcome = summarise(result)
    done = once and result.status == SendStatus.SENT
    schedules.record(database, item.id, outcome, status=ScheduleStatus.DONE if done else None)
    return RunOutcome(item.id, slug, outcome, result.status == SendStatus.SENT)


def summarise(result: RunResult) -> str:
    c = result.counts
    failed = c.get("failed-temporary", 0) + c.get("failed-permanent", 0)
    text = (
        f"{result.status}: {result.slug} {c.get('sent', 0)} of {result.total} sent, {failed} failed"
    )
    return text + (f" ({result.reason})" if result.reason else "")


def run_send(
    settings: Settings,
    database: Database,
    send_id: int,
    factory: TransportFactory | None = None,
    stop: threading.Event | None = None,
) -> RunResult:
    with database.session() as session:
        slug = sends.get(session, send_id).slug
    return service.run(
        settings,
        send_id,
        database=database,
        factory=factory,
        on_progress=_progress_logger(slug),
        stop=stop,
    )


def _progress_logger(slug: str, every: int = 500) -> Progress:
    last = [0]

    def report(done: int, total: int) -> None:
        if done - last[0] >= every:
            last[0] = done
            log.info("progress %s: %d of %d", slug, done, total)

    return report


def _worth_resuming(send: Send, now: dt.datetime) -> bool:
    if send.status == SendStatus.SENDING:
        return sends.abandoned(send.claimed_by, send.heartbeat_at)
    if send.status != SendStatus.PAUSED or send.claimed_by is not None:
        return False
    reason = send.pause_reason
    if reason is None or not reason.resumes_by_itself:
        return False
    if reason == PauseReason.UNAVAILABLE:
        last = send.heartbeat_at or send.started_at
        return last is None or now - as_utc(last) >= RETRY_UNAVAILABLE_AFTER
    return True


def resume_interrupted(
    settings: Settings,
    database: Database,
    factory: TransportFactory | None = None,
    *,
    stop: threading.Event | None = None,
    now: dt.datetime | None = None,
) -> list[RunResult]:
    """Resume sends whose process died or that a stopping worker paused, and try again,
    every few minutes, sends paused because the server was unavailable."""
    moment = now or utcnow()
    with database.session() as session:
        candidates = [
            s.id
            for s in sends.unfinished(session)
            if s.id is not None and _worth_resuming(s, moment)
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


def _record_resumed(database: Database, send_id: int, result: RunResult) -> None:
    """A resumed send that a schedule started: give the schedule its outcome."""
    with database.session() as session:
        started = schedules.started(session, send_id)
    for item in started:
        assert item.id is not None
        done = item.kind == ScheduleKind.ONCE and result.status == SendStatus.SENT
        schedules.record(
            database, item.id, summarise(result), status=ScheduleStatus.DONE if done else None
        )
