"""Running schedules: creating them, and sending what is due.

The database is the source of truth; the worker (:mod:`mailer.scheduling.worker`) only
decides when to look. Every run goes through :func:`run_due`, which takes the current time
as an argument, so tests drive it with any clock.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mailer import checks
from mailer.config import Settings
from mailer.content import all_slugs, load_issue
from mailer.errors import ContentError, MailerError, ScheduleError
from mailer.formats import local_time
from mailer.render import compile_slug
from mailer.scheduling import alerts
from mailer.scheduling.rules import check_rule, in_words, parse_at, parse_rule
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
    SendStatus,
)

log = logging.getLogger("mailer.scheduler")


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
            f"--at {at!r} ({in_words(when, settings.tz)}) is in the past "
            f"(it is now {local_time(now, settings.tz)})"
        )
    compiled = compile_slug(settings, slug)
    # Refuse now what the worker would refuse at the time: the checks for that day.
    checks.require_clean(settings, compiled, checks.local_date(settings, when), skip_checks)
    with database.session(write=True) as session:
        approval.require(session, compiled, settings.tz)
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
    check_rule(rule, settings.tz, now.astimezone(settings.tz).date())
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
    """What came of one schedule's slot, or of one interrupted send the worker resumed."""

    schedule_id: int | None
    slug: str | None
    outcome: str
    sent: bool
    # A person must act, or at least know: the slot failed or was missed, or the send
    # paused for a reason mailer does not get over by itself. `worker --once` exits 1.
    problem: bool = False
    send_id: int | None = None

    def __str__(self) -> str:
        what = f"schedule {self.schedule_id}" if self.schedule_id else f"send {self.send_id}"
        return f"{what}: {self.outcome}"


class NothingToSend(ScheduleError):
    """A monthly slot whose month's issue has already been sent: nothing is wrong."""


def _next_slot(item: Schedule, now: dt.datetime, settings: Settings) -> dt.datetime | None:
    """The run after this one: None for a one-off."""
    if item.kind != ScheduleKind.MONTHLY:
        return None
    assert item.next_run_at is not None and item.rule is not None
    # At least a day on: a slot at a time the clocks repeat (01:30 on the last Sunday of
    # October) must not fire again an hour later.
    after = max(now, item.next_run_at + dt.timedelta(days=1))
    return parse_rule(item.rule).next_after(after, settings.tz)


def issue_for_month(
    settings: Settings, database: Database, month: dt.date
) -> tuple[str, list[str]]:
    """The approved, not-yet-sent issue dated in ``month``, and a note for each other issue
    that could not be read. Each issue is read on its own, so a broken draft of another
    month never stops this one; ScheduleError says why there is nothing to send."""
    label = f"{month:%B %Y}"
    dated, unreadable = [], []
    for slug in all_slugs(settings):
        try:
            issue = load_issue(settings.issues_dir, slug, settings.root, settings.limits)
        except ContentError as exc:
            unreadable.append(f"{slug} could not be read ({exc.problems[0]})")
            continue
        if (issue.date.year, issue.date.month) == (month.year, month.month):
            dated.append(issue)
    dated.sort(key=lambda i: (i.date, i.slug))
    if not dated:
        problems = f" ({'; '.join(unreadable)})" if unreadable else ""
        raise ScheduleError(f"no issue is dated in {label}{problems}")
    waiting, sent = [], []
    with database.session() as session:
        for issue in dated:
            if sends.issue_is_taken(session, issue.slug):
                sent.append(f"{issue.slug} was already sent")
            elif sends.latest_approval(session, issue.slug) is None:
                waiting.append(f"{issue.slug} is not approved (mailer approve {issue.slug})")
            else:
                return issue.slug, unreadable
    if waiting:
        raise ScheduleError(f"nothing to send for {label}: {'; '.join(waiting + sent)}")
    raise NothingToSend(f"nothing to send for {label}: {'; '.join(sent)}")


def run_due(
    settings: Settings,
    database: Database,
    now: dt.datetime,
    *,
    factory: TransportFactory | None = None,
    stop: threading.Event | None = None,
) -> list[RunOutcome]:
    """Run every schedule whose time has come; mark missed ones beyond the grace period.

    A slot that fails for a reason a person can fix (the issue changed after approval,
    a failing check, no issue for the month) is kept and tried again at every look until
    the grace period ends; the first failure, and each new reason, is alerted.
    """
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
        upcoming = _next_slot(item, current, settings)
        if not schedules.claim_slot(database, item, current, upcoming):
            continue
        if current - slot > grace:
            outcomes.append(_give_up(settings, database, item, slot, current, factory))
            continue
        outcomes.append(_run_one(settings, database, item, slot, upcoming, current, factory, stop))
    return outcomes


def _give_up(
    settings: Settings,
    database: Database,
    item: Schedule,
    slot: dt.datetime,
    current: dt.datetime,
    factory: TransportFactory | None,
) -> RunOutcome:
    """The grace period is over: the slot is missed, or, if it was failing, failed."""
    assert item.id is not None
    tz = settings.tz
    once = item.kind == ScheduleKind.ONCE
    hours = f"{settings.misfire_grace_hours:g} h"
    if item.failing_since is not None:
        outcome = (
            f"not sent: still failing at the end of the {hours} grace period "
            f"(due {local_time(slot, tz)}): {item.last_outcome.removeprefix('not sent: ')}"
        )
        status = ScheduleStatus.FAILED
    else:
        outcome = (
            f"missed: due {local_time(slot, tz)}, but no worker ran until "
            f"{local_time(current, tz)} (more than the {hours} grace period); not sent"
        )
        status = ScheduleStatus.MISSED
    log.warning("schedule %s %s", item.id, outcome)
    schedules.record(database, item.id, outcome, status=status if once else None, settled=True)
    alerts.send(settings, alerts.given_up(item, outcome), factory)
    return RunOutcome(item.id, item.slug, outcome, False, problem=True)


def _run_one(
    settings: Settings,
    database: Database,
    item: Schedule,
    slot: dt.datetime,
    upcoming: dt.datetime | None,
    current: dt.datetime,
    factory: TransportFactory | None,
    stop: threading.Event | None,
) -> RunOutcome:
    assert item.id is not None
    once = item.kind == ScheduleKind.ONCE
    lists = alerts.lists_of(item)
    slug = item.slug
    notes: list[str] = []
    try:
        if slug is None:
            slug, notes = issue_for_month(settings, database, slot.astimezone(settings.tz).date())
            for note in notes:
                log.warning("schedule %s: %s; it was left out", item.id, note)
        send_id = service.create(
            settings,
            slug,
            lists,
            database=database,
            scheduled_at=slot,
            skip_checks=item.checks_skipped,
        )
    except NothingToSend as exc:
        outcome = str(exc)
        log.info("schedule %s: %s", item.id, outcome)
        schedules.record(database, item.id, outcome, settled=True)
        return RunOutcome(item.id, slug, outcome, False)
    except MailerError as exc:
        return _failed(settings, database, item, slot, upcoming, current, slug, exc, factory)
    log.info("started scheduled send of %s (schedule %s, send %s)", slug, item.id, send_id)
    schedules.record(
        database, item.id, f"sending {slug} (send {send_id})", send_id=send_id, settled=True
    )
    try:
        result = run_send(settings, database, send_id, factory, stop)
    except MailerError as exc:
        outcome = f"not sent: {exc}"
        log.warning("schedule %s %s", item.id, outcome)
        schedules.record(database, item.id, outcome, status=ScheduleStatus.FAILED if once else None)
        alert_send(settings, item, send_id, slug, outcome, factory)
        return RunOutcome(item.id, slug, outcome, False, problem=True, send_id=send_id)
    outcome = summarise(result) + "".join(f"; note: {n}" for n in notes)
    done = once and result.status == SendStatus.SENT
    schedules.record(database, item.id, outcome, status=ScheduleStatus.DONE if done else None)
    problem = needs_a_person(database, result, None)
    if problem:
        alert_send(settings, item, send_id, slug, outcome, factory)
    return RunOutcome(
        item.id, slug, outcome, result.status == SendStatus.SENT, problem=problem, send_id=send_id
    )


def _failed(
    settings: Settings,
    database: Database,
    item: Schedule,
    slot: dt.datetime,
    upcoming: dt.datetime | None,
    current: dt.datetime,
    slug: str | None,
    exc: MailerError,
    factory: TransportFactory | None,
) -> RunOutcome:
    """A slot that could not start for a reason a person can fix: keep it, and say so."""
    assert item.id is not None
    tz = settings.tz
    until = slot + dt.timedelta(hours=settings.misfire_grace_hours)
    reason = f"not sent: {exc}"
    outcome = f"{reason} (tried again at every look until {local_time(until, tz)})"
    log.warning("schedule %s %s", item.id, outcome)
    kept = schedules.keep_slot(database, item, slot, upcoming, current)
    schedules.record(database, item.id, outcome)
    # The first failure of a slot, and every new reason, is alerted; the same reason at
    # the next look is not, so a failing slot does not alert every 30 seconds.
    if kept and (item.failing_since is None or item.last_outcome != outcome):
        alerts.send(settings, alerts.slot_failed(tz, item, slug, slot, until, exc), factory)
    return RunOutcome(item.id, slug, outcome, False, problem=True)


def needs_a_person(database: Database, result: RunResult, before: PauseReason | None) -> bool:
    """Whether a run ended paused for a reason a person should hear about: too many
    failures, an error, or an unavailable server (the first time, not at every retry).
    Of several workers of a send, only the one that paused it says so."""
    if result.status != SendStatus.PAUSED or not result.changed:
        return False
    with database.session() as session:
        reason = sends.get(session, result.send_id).pause_reason
    if reason == PauseReason.UNAVAILABLE:
        return before != PauseReason.UNAVAILABLE
    return reason in (PauseReason.FAILURES, PauseReason.ERROR)


def alert_send(
    settings: Settings,
    item: Schedule | None,
    send_id: int,
    slug: str | None,
    outcome: str,
    factory: TransportFactory | None,
) -> None:
    alerts.send(settings, alerts.send_stopped(item, send_id, slug, outcome), factory)


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
