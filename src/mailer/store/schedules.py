"""Queries on schedules: when a send will be created, and what came of it.

A schedule's slot is moved on with a compare-and-set on ``next_run_at`` (:func:`advance`), in
the transaction that creates its send, so two workers, or a worker and ``mailer worker
--once`` from cron, never start one slot twice, and a worker that dies before that
transaction commits leaves the slot due for another.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailer.errors import NotFound, StateError
from mailer.store.database import Database
from mailer.store.models import (
    Schedule,
    ScheduleKind,
    ScheduleStatus,
    Send,
    SendStatus,
    table_of,
)

SCHEDULE = table_of(Schedule)
# How the outcome of a slot whose send was created, and not yet run, begins.
STARTED = "sending "


def add(
    session: Session,
    kind: ScheduleKind,
    lists: Sequence[str],
    next_run_at: dt.datetime,
    *,
    slug: str | None = None,
    rule: str | None = None,
    checks_skipped: str | None = None,
) -> Schedule:
    item = Schedule(
        kind=kind,
        slug=slug,
        rule=rule,
        lists=json.dumps(list(lists)),
        next_run_at=next_run_at,
        checks_skipped=checks_skipped,
    )
    session.add(item)
    session.flush()
    session.refresh(item)
    return item


def every(session: Session) -> list[Schedule]:
    return list(session.exec(select(Schedule).order_by(col(Schedule.id))).all())


def active_for_issue(session: Session, slug: str) -> list[Schedule]:
    """The active one-off schedules of an issue."""
    query = select(Schedule).where(Schedule.slug == slug, Schedule.status == ScheduleStatus.ACTIVE)
    return list(session.exec(query.order_by(col(Schedule.id))).all())


def active(session: Session, kind: ScheduleKind) -> list[Schedule]:
    """The active schedules of one kind, oldest first."""
    query = select(Schedule).where(Schedule.kind == kind, Schedule.status == ScheduleStatus.ACTIVE)
    return list(session.exec(query.order_by(col(Schedule.id))).all())


def cancel(session: Session, schedule_id: int) -> Schedule:
    item = session.get(Schedule, schedule_id)
    if item is None:
        raise NotFound(f"there is no schedule {schedule_id} (see: mailer schedules)")
    if item.status != ScheduleStatus.ACTIVE:
        raise StateError(f"schedule {schedule_id} is already {item.status}")
    item.status = ScheduleStatus.CANCELLED
    item.next_run_at = None
    session.add(item)
    session.flush()
    return item


def due(session: Session, now: dt.datetime) -> list[Schedule]:
    query = select(Schedule).where(
        Schedule.status == ScheduleStatus.ACTIVE, col(Schedule.next_run_at) <= now
    )
    return list(session.exec(query.order_by(col(Schedule.next_run_at))).all())


def upcoming(session: Session) -> list[Schedule]:
    """Active schedules with a next run, for the worker's timers."""
    query = select(Schedule).where(
        Schedule.status == ScheduleStatus.ACTIVE, col(Schedule.next_run_at).is_not(None)
    )
    return list(session.exec(query).all())


def get(session: Session, schedule_id: int) -> Schedule | None:
    """The schedule as it is now: a decision is made on this, not on an earlier list."""
    return session.get(Schedule, schedule_id)


def _slot_is(slot: dt.datetime | None) -> sa.ColumnElement[bool]:
    return (
        SCHEDULE.c.next_run_at.is_(None)
        if slot is None
        else SCHEDULE.c.next_run_at == sa.bindparam(None, slot, type_=SCHEDULE.c.next_run_at.type)
    )


def advance(
    session: Session,
    schedule_id: int,
    slot: dt.datetime,
    upcoming: dt.datetime | None,
    now: dt.datetime,
    *,
    outcome: str | None = None,
    status: ScheduleStatus | None = None,
    send_id: int | None = None,
) -> bool:
    """Move an active schedule from ``slot`` to the next one (None: there is none) and
    settle the slot: it was started, given up, or had nothing to send, so it is no longer
    failing. A compare-and-set on ``next_run_at``, in the caller's transaction: False if
    the slot was moved or the schedule cancelled meanwhile."""
    values: dict[str, object] = {"next_run_at": upcoming, "last_run_at": now, "failing_since": None}
    if outcome is not None:
        values["last_outcome"] = outcome[:1000]
    if status is not None:
        values["status"] = status
    if send_id is not None:
        values["last_send_id"] = send_id
    result = session.connection().execute(
        sa.update(SCHEDULE)
        .where(SCHEDULE.c.id == schedule_id, SCHEDULE.c.status == ScheduleStatus.ACTIVE)
        .where(_slot_is(slot))
        .values(**values)
    )
    return bool(result.rowcount == 1)


def claim_slot(
    database: Database,
    item: Schedule,
    now: dt.datetime,
    upcoming_run: dt.datetime | None,
) -> bool:
    """Move the schedule past its slot in a transaction of its own; False if another
    process got there first."""
    assert item.id is not None and item.next_run_at is not None
    with database.session(write=True) as session:
        return advance(session, item.id, item.next_run_at, upcoming_run, now)


def fail(
    session: Session, schedule_id: int, slot: dt.datetime, now: dt.datetime, outcome: str
) -> bool:
    """Keep a slot that failed for a reason a person can fix, so the next look tries it
    again; remember when it first failed and why. A compare-and-set on ``next_run_at``:
    False if the schedule was cancelled or moved on meanwhile."""
    result = session.connection().execute(
        sa.update(SCHEDULE)
        .where(SCHEDULE.c.id == schedule_id, SCHEDULE.c.status == ScheduleStatus.ACTIVE)
        .where(_slot_is(slot))
        .values(
            last_outcome=outcome[:1000],
            failing_since=sa.func.coalesce(
                SCHEDULE.c.failing_since,
                sa.bindparam(None, now, type_=SCHEDULE.c.failing_since.type),
            ),
        )
    )
    return bool(result.rowcount == 1)


def waiting(session: Session, status: SendStatus = SendStatus.NEW) -> list[tuple[int, int]]:
    """(schedule id, send id) of the sends a schedule started whose outcome it has not
    heard: not run yet (``new``), or ``sent`` by a worker that died before telling it.

    A schedule's run writes "sending ..." as its outcome in the transaction that creates
    the send; once a worker has run it, or could not, the outcome says so instead."""
    send = table_of(Send)
    rows = session.connection().execute(
        sa.select(SCHEDULE.c.id, send.c.id)
        .join(send, send.c.id == SCHEDULE.c.last_send_id)
        .where(send.c.status == status, SCHEDULE.c.last_outcome.startswith(STARTED))
        .order_by(send.c.id)
    )
    return [(int(a), int(b)) for a, b in rows]


def record(
    database: Database,
    schedule_id: int,
    outcome: str,
    *,
    status: ScheduleStatus | None = None,
    send_id: int | None = None,
    settled: bool = False,
) -> None:
    """Keep the outcome of a run; ``settled``: the slot is over (sent, or given up), so it
    is no longer failing."""
    with database.session(write=True) as session:
        item = session.get(Schedule, schedule_id)
        assert item is not None
        item.last_outcome = outcome[:1000]
        if send_id is not None:
            item.last_send_id = send_id
        if status is not None:
            item.status = status
        if settled:
            item.failing_since = None
        session.add(item)


def started(session: Session, send_id: int) -> list[Schedule]:
    """The schedules whose last run started this send."""
    return list(session.exec(select(Schedule).where(Schedule.last_send_id == send_id)).all())
