"""Running schedules: creating them, starting what is due, and running what they started.

The database is the source of truth; the worker (:mod:`mailer.scheduling.worker`) only
decides when to look. Every run goes through :func:`run_due`, which takes the current time
as an argument, so tests drive it with any clock. Each slot is decided by
:mod:`mailer.scheduling.slots`; the send it starts is run here, or by any worker
(:func:`run_started`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence

from mailer import checks
from mailer.config import Settings
from mailer.errors import LeaseLost, MailerError, ScheduleError
from mailer.formats import local_time
from mailer.operations import approval, service
from mailer.render import compile_slug
from mailer.scheduling import slots
from mailer.scheduling.leader import JobLease
from mailer.scheduling.rules import check_rule, in_words, parse_at, parse_rule
from mailer.scheduling.slots import RunOutcome as RunOutcome  # known as runner.RunOutcome
from mailer.scheduling.slots import Started
from mailer.sending import alerts
from mailer.sending.engine import Progress, RunResult
from mailer.sending.transports import TransportFactory
from mailer.sending.workers import SendAsSeen
from mailer.store import deliveries, people, schedules, sends
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


def _refuse_duplicate(
    session: object, kind: ScheduleKind, names: list[str], same: Callable[[Schedule], bool]
) -> None:
    """One schedule per slot and list: a second would mail the same people twice (the
    ledger would skip them, but the second send is a mistake to point out, not to run)."""
    for item in schedules.active(session, kind):  # type: ignore[arg-type]
        shared = sorted(set(alerts.lists_of(item)) & set(names))
        if shared and same(item):
            when = f"monthly ({item.rule})" if kind == ScheduleKind.MONTHLY else f"{item.slug}"
            raise ScheduleError(
                f"schedule {item.id} already sends {when} to {', '.join(shared)}: keep it, or "
                f"cancel it first with: mailer unschedule {item.id}"
            )


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
        approval.require(session, compiled, settings.tz, settings.approval)
        names = _check_lists(session, lists)
        _refuse_duplicate(session, ScheduleKind.ONCE, names, lambda other: other.slug == slug)
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
        _refuse_duplicate(
            session, ScheduleKind.MONTHLY, names, lambda other: other.rule == str(rule)
        )
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


def run_due(
    settings: Settings,
    database: Database,
    now: dt.datetime,
    *,
    factory: TransportFactory | None = None,
    stop: threading.Event | None = None,
    lease: JobLease | None = None,
    send: bool = True,
) -> list[RunOutcome]:
    """Start every schedule whose time has come; mark missed ones beyond the grace period.

    A slot that fails for a reason a person can fix (the issue changed after approval,
    a failing check, no issue for the month) is kept and tried again at every look until
    the grace period ends; the first failure, and each new reason, is alerted.

    Each slot is decided on the schedule as it is now, and moved on in the transaction
    that creates its send, so it starts once however many processes look. ``lease``, the
    worker's scheduler lease, is confirmed in every transaction that decides a slot. With
    ``send`` False (the worker), a send that a slot started is left for any worker to run
    (:func:`run_started`) and only the slots that started nothing are returned; otherwise
    each is run here, before the next slot is decided.
    """
    grace = dt.timedelta(hours=settings.misfire_grace_hours)
    with database.session() as session:
        due = [(s.id, s.next_run_at) for s in schedules.due(session, now)]
    outcomes = []
    started = time.monotonic()
    for schedule_id, slot in due:
        assert schedule_id is not None and slot is not None
        if stop is not None and stop.is_set():
            break
        # A send before this one may have taken hours: judge lateness by the time now.
        current = now + dt.timedelta(seconds=time.monotonic() - started)
        try:
            decided = slots.decide(
                settings, database, schedule_id, slot, current, grace, factory, lease
            )
        except LeaseLost as exc:
            # The scheduler that took over decides this slot and the rest.
            log.warning("schedule %s left to the new scheduler: %s", schedule_id, exc)
            break
        if isinstance(decided, Started):
            if send:
                ran = run_created(settings, database, decided, factory, stop)
                if ran is not None:
                    outcomes.append(ran)
        elif decided is not None:
            outcomes.append(decided)
    return outcomes


def run_created(
    settings: Settings,
    database: Database,
    started: Started,
    factory: TransportFactory | None = None,
    stop: threading.Event | None = None,
) -> RunOutcome | None:
    """Run a send that a slot started, and keep its outcome with the schedule; None if
    another worker started it first."""
    item, slug, send_id = started.item, started.slug, started.send_id
    assert item.id is not None
    once = item.kind == ScheduleKind.ONCE
    try:
        result = run_send(settings, database, send_id, factory, stop)
    except MailerError as exc:
        with database.session() as session:
            if sends.get(session, send_id).status != SendStatus.NEW:
                log.info("send %s: %s", send_id, exc)  # another worker took it first
                return None
        outcome = f"not sent: {exc}"
        log.warning("schedule %s %s", item.id, outcome)
        schedules.record(database, item.id, outcome, status=ScheduleStatus.FAILED if once else None)
        alert_send(settings, item, send_id, slug, outcome, factory)
        return RunOutcome(item.id, slug, outcome, False, problem=True, send_id=send_id)
    if not result.changed:
        return None  # another worker of the send finishes it, and tells the schedule
    outcome = summarise(result) + started.notes
    done = once and result.status == SendStatus.SENT
    schedules.record(database, item.id, outcome, status=ScheduleStatus.DONE if done else None)
    log.info("schedule %s: %s", item.id, outcome)
    problem = needs_a_person(database, result, None)
    if problem:
        alert_send(settings, item, send_id, slug, outcome, factory)
    return RunOutcome(
        item.id, slug, outcome, result.status == SendStatus.SENT, problem=problem, send_id=send_id
    )


def run_started(
    settings: Settings,
    database: Database,
    factory: TransportFactory | None = None,
    stop: threading.Event | None = None,
) -> list[RunOutcome]:
    """Run the sends that the scheduler started and nobody has run yet; any worker may."""
    with database.session() as session:
        waiting = []
        for schedule_id, send_id in schedules.waiting(session):
            item = schedules.get(session, schedule_id)
            assert item is not None
            slug = sends.get(session, send_id).slug
            at = item.last_outcome.find("; note: ")
            waiting.append(Started(item, slug, send_id, item.last_outcome[at:] if at >= 0 else ""))
    outcomes = []
    for started in waiting:
        if stop is not None and stop.is_set():
            break
        ran = run_created(settings, database, started, factory, stop)
        if ran is not None:
            outcomes.append(ran)
    _settle_finished(database)
    return outcomes


def _settle_finished(database: Database) -> None:
    """Give a schedule the outcome of its send when the worker that ran it died between
    the last message and telling the schedule."""
    with database.session() as session:
        found = []
        for schedule_id, send_id in schedules.waiting(session, SendStatus.SENT):
            item = schedules.get(session, schedule_id)
            assert item is not None
            report = deliveries.report(session, sends.get(session, send_id))
            at = item.last_outcome.find("; note: ")
            result = RunResult(
                send_id, report.slug, SendStatus.SENT, report.reason, report.total, report.counts
            )
            notes = item.last_outcome[at:] if at >= 0 else ""
            found.append((item, summarise(result) + notes))
    for item, outcome in found:
        assert item.id is not None
        done = ScheduleStatus.DONE if item.kind == ScheduleKind.ONCE else None
        schedules.record(database, item.id, outcome, status=done)
        log.info("schedule %s: %s", item.id, outcome)


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
    seen: SendAsSeen | None = None,
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
        seen=seen,
    )


def _progress_logger(slug: str, every: int = 500) -> Progress:
    last = [0]

    def report(done: int, total: int) -> None:
        if done - last[0] >= every:
            last[0] = done
            log.info("progress %s: %d of %d", slug, done, total)

    return report
