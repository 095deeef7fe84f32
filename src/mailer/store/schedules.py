"""Queries on schedules: when a send will be created, and what came of it.

A schedule's slot is claimed with a compare-and-set on ``next_run_at`` (:func:`claim_slot`),
so two workers, or a worker and ``mailer worker --once`` from cron, never run one slot twice.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailer.errors import NotFound, StateError
from mailer.store.database import Database
from mailer.store.models import Schedule, ScheduleKind, ScheduleStatus, table_of

SCHEDULE = table_of(Schedule)


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


def claim_slot(
    database: Database,
    item: Schedule,
    now: dt.datetime,
    upcoming_run: dt.datetime | None,
) -> bool:
    """Move the schedule past its slot; False if another worker got there first."""
    with database.session(write=True) as session:
        result = session.connection().execute(
            sa.update(SCHEDULE)
            .where(
                SCHEDULE.c.id == item.id,
                SCHEDULE.c.status == ScheduleStatus.ACTIVE,
                SCHEDULE.c.next_run_at == item.next_run_at,
            )
            .values(next_run_at=upcoming_run, last_run_at=now)
        )
        return bool(result.rowcount == 1)


def keep_slot(
    database: Database,
    item: Schedule,
    slot: dt.datetime,
    claimed: dt.datetime | None,
    now: dt.datetime,
) -> bool:
    """Put back a slot that failed for a reason a person can fix, so the next look tries it
    again; remember when it first failed. A compare-and-set on what :func:`claim_slot`
    wrote: False if the schedule was cancelled or changed meanwhile."""
    where = [SCHEDULE.c.id == item.id, SCHEDULE.c.status == ScheduleStatus.ACTIVE]
    where.append(
        SCHEDULE.c.next_run_at.is_(None) if claimed is None else SCHEDULE.c.next_run_at == claimed
    )
    with database.session(write=True) as session:
        result = session.connection().execute(
            sa.update(SCHEDULE)
            .where(*where)
            .values(
                next_run_at=slot,
                failing_since=sa.func.coalesce(
                    SCHEDULE.c.failing_since,
                    sa.bindparam("now", now, type_=SCHEDULE.c.failing_since.type),
                ),
            )
        )
        return bool(result.rowcount == 1)


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
