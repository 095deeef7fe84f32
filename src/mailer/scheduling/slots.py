"""Deciding one schedule's slot: start its send, keep it to try again, or give it up.

Only the worker holding the scheduler lease decides (:mod:`mailer.scheduling.leader`), on
the schedule as it is at that moment, and writes each decision in one transaction that
also confirms the lease: a slot that starts is moved on in the transaction that creates
its send, so it starts exactly once, and a worker that dies before that commit leaves it
due for the next scheduler.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailer.config import Settings
from mailer.content import all_slugs, load_issue
from mailer.errors import ContentError, LeaseLost, MailerError, ScheduleError
from mailer.formats import local_time
from mailer.operations import service
from mailer.scheduling.leader import JobLease
from mailer.scheduling.rules import parse_rule
from mailer.sending import alerts
from mailer.sending.transports import TransportFactory
from mailer.store import schedules, sends
from mailer.store.database import Database
from mailer.store.models import Schedule, ScheduleKind, ScheduleStatus

if TYPE_CHECKING:
    from sqlmodel import Session

log = logging.getLogger("mailer.scheduler")


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


def next_slot(item: Schedule, now: dt.datetime, settings: Settings) -> dt.datetime | None:
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


@dataclass(frozen=True)
class Started:
    """A slot whose send was created: any worker may now run the send."""

    item: Schedule
    slug: str
    send_id: int
    # "; note: ..." for each other issue that could not be read, kept beside the outcome.
    notes: str = ""


class SlotGone(ScheduleError):
    """The slot was started, moved on or cancelled by someone else meanwhile."""


def decide(
    settings: Settings,
    database: Database,
    schedule_id: int,
    slot: dt.datetime,
    current: dt.datetime,
    grace: dt.timedelta,
    factory: TransportFactory | None,
    lease: JobLease | None,
) -> RunOutcome | Started | None:
    """Start one slot's send, or say why not; None if someone else has dealt with it."""
    with database.session() as session:
        item = schedules.get(session, schedule_id)
    if item is None or item.status != ScheduleStatus.ACTIVE or item.next_run_at != slot:
        return None
    upcoming = next_slot(item, current, settings)
    if current - slot > grace:
        return give_up(settings, database, item, slot, upcoming, current, factory, lease)
    slug = item.slug
    notes = ""

    def claim(session: Session, send_id: int) -> None:
        # In the transaction that makes the send: both commit, or neither.
        if lease is not None:
            lease.confirm(session)
        outcome = f"{schedules.STARTED}{slug} (send {send_id}){notes}"
        if not schedules.advance(
            session, schedule_id, slot, upcoming, current, outcome=outcome, send_id=send_id
        ):
            raise SlotGone(f"schedule {schedule_id} was started or cancelled meanwhile")

    try:
        if slug is None:
            slug, unreadable = issue_for_month(
                settings, database, slot.astimezone(settings.tz).date()
            )
            for note in unreadable:
                log.warning("schedule %s: %s; it was left out", schedule_id, note)
            notes = "".join(f"; note: {n}" for n in unreadable)
        send_id = service.create(
            settings,
            slug,
            alerts.lists_of(item),
            database=database,
            scheduled_at=slot,
            skip_checks=item.checks_skipped,
            on_create=claim,
        )
    except SlotGone as exc:
        log.info("%s", exc)
        return None
    except LeaseLost:
        raise
    except NothingToSend as exc:
        outcome = str(exc)
        log.info("schedule %s: %s", schedule_id, outcome)
        with database.session(write=True) as session:
            if lease is not None:
                lease.confirm(session)
            settled = schedules.advance(
                session, schedule_id, slot, upcoming, current, outcome=outcome
            )
        return RunOutcome(schedule_id, slug, outcome, False) if settled else None
    except MailerError as exc:
        return failed(settings, database, item, slot, current, slug, exc, factory, lease)
    log.info("started scheduled send of %s (schedule %s, send %s)", slug, schedule_id, send_id)
    if item.failing_since is not None:
        # Whoever was told it failed is told it is fixed, so nobody sends it by hand too.
        alerts.send(settings, alerts.now_sent(settings.tz, item, slug, send_id, current), factory)
    return Started(item, slug, send_id, notes)


def give_up(
    settings: Settings,
    database: Database,
    item: Schedule,
    slot: dt.datetime,
    upcoming: dt.datetime | None,
    current: dt.datetime,
    factory: TransportFactory | None,
    lease: JobLease | None,
) -> RunOutcome | None:
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
    with database.session(write=True) as session:
        if lease is not None:
            lease.confirm(session)
        settled = schedules.advance(
            session,
            item.id,
            slot,
            upcoming,
            current,
            outcome=outcome,
            status=status if once else None,
        )
    if not settled:
        return None
    log.warning("schedule %s %s", item.id, outcome)
    alerts.send(settings, alerts.given_up(item, outcome), factory)
    return RunOutcome(item.id, item.slug, outcome, False, problem=True)


def failed(
    settings: Settings,
    database: Database,
    item: Schedule,
    slot: dt.datetime,
    current: dt.datetime,
    slug: str | None,
    exc: MailerError,
    factory: TransportFactory | None,
    lease: JobLease | None,
) -> RunOutcome | None:
    """A slot that could not start for a reason a person can fix: keep it, and say so."""
    assert item.id is not None
    tz = settings.tz
    until = slot + dt.timedelta(hours=settings.misfire_grace_hours)
    reason = f"not sent: {exc}"
    outcome = f"{reason} (tried again at every look until {local_time(until, tz)})"
    with database.session(write=True) as session:
        if lease is not None:
            lease.confirm(session)
        kept = schedules.fail(session, item.id, slot, current, outcome)
    if not kept:
        return None
    log.warning("schedule %s %s", item.id, outcome)
    # The first failure of a slot, and every new reason, is alerted; the same reason at
    # the next look is not, so a failing slot does not alert every 30 seconds. ``item`` was
    # read just before this look decided, so two looks never both take it for the first.
    if item.failing_since is None or item.last_outcome != outcome:
        problems = [str(exc)]
        if slug is not None:
            # Everything in the way, not only the first thing: fixed in one round.
            problems = (
                service.blockers(
                    settings,
                    slug,
                    alerts.lists_of(item),
                    database=database,
                    scheduled_at=slot,
                    skip_checks=item.checks_skipped,
                )
                or problems
            )
        alert = alerts.slot_failed(tz, item, slug, slot, until, problems)
        alerts.send(settings, alert, factory)
    return RunOutcome(item.id, slug, outcome, False, problem=True)
