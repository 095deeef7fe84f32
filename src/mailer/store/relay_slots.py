"""Queries on ``relay_slot``: a relay's rate limits, shared by every worker sending to it.

A limit of N messages in a window (a second, an hour) is N rows, its slots. Before a
message starts, its worker takes, in one transaction, a free slot of each window whose
last message ended at least a window ago, and holds it until the message's reply came;
the slot then records that end. A ``pace`` row keeps the earliest time the next message
may start (starts are spaced ``1 / rate`` apart). mailer.sending.ratelimit says why this
holds at the server whatever the delays, and how many workers share it.

Taking a slot locks the relay's ``pace`` row first (``SELECT … FOR UPDATE`` on
PostgreSQL; SQLite's writers take turns anyway), so the workers of a relay take their
slots one at a time, and two can never take the same one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Connection

from mailer.store.models import RelaySlot, SendWorker, as_utc, table_of

SLOT = table_of(RelaySlot)
SEND_WORKER = table_of(SendWorker)
PACE = "pace"
# A slot never used ended long ago.
NEVER = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Window:
    """A limit: ``size`` messages in any ``seconds`` (the margin for rounding included)."""

    kind: str
    size: int
    seconds: float


@dataclass(frozen=True)
class Taken:
    """The slots a message took (kind -> slot), and when it took them."""

    slots: dict[str, int]
    at: dt.datetime


@dataclass(frozen=True)
class Held:
    """No slot of a window is free: the oldest message holding one, not yet ended."""

    kind: str
    slot: int
    holder: str
    started_at: dt.datetime | None


@dataclass(frozen=True)
class Wait:
    """A slot is free, but not for ``seconds`` more (or the pace says so); ``kind`` is the
    window that makes it wait longest ("" for the pace)."""

    seconds: float
    kind: str = ""


# The end of a message: (kind, slot, when it took the slot, when it ended).
End = tuple[str, int, dt.datetime, dt.datetime]


def _relay(relay: str, kind: str) -> sa.ColumnElement[bool]:
    return sa.and_(SLOT.c.relay == relay, SLOT.c.kind == kind)


def server_time(conn: Connection) -> dt.datetime | None:
    """The database server's clock on PostgreSQL, which workers on several machines
    share; None on SQLite, which only processes of one machine can open."""
    if conn.dialect.name != "postgresql":
        return None
    found = conn.execute(sa.select(sa.func.clock_timestamp())).scalar_one()
    assert isinstance(found, dt.datetime)
    return as_utc(found)


def ensure(conn: Connection, relay: str, sizes: dict[str, int]) -> None:
    """Create the relay's ``pace`` row and the slots of each window, if missing."""
    have = dict(
        conn.execute(
            sa.select(SLOT.c.kind, sa.func.max(SLOT.c.slot))
            .where(SLOT.c.relay == relay)
            .group_by(SLOT.c.kind)
        ).all()
    )
    rows = [
        {"relay": relay, "kind": kind, "slot": slot, "ended_at": NEVER}
        for kind, size in {PACE: 1, **sizes}.items()
        for slot in range(have[kind] + 1 if kind in have else 0, size)
    ]
    if not rows:
        return
    # Two workers starting at once may both create them: the second one's are ignored.
    # The dialect's module is imported here: PostgreSQL's takes tens of milliseconds to
    # import, which every send on SQLite would pay at start.
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        conn.execute(postgresql.insert(SLOT).on_conflict_do_nothing(), rows)
    else:
        from sqlalchemy.dialects import sqlite

        conn.execute(sqlite.insert(SLOT).on_conflict_do_nothing(), rows)


def seed(conn: Connection, relay: str, kind: str, size: int, ends: Sequence[dt.datetime]) -> None:
    """Make the free slots of a window count messages that ended at ``ends`` (from the
    ledger: messages sent before the slots existed, or while the clock was elsewhere):
    the newest end with the slot that ended last, and so on, whichever is later."""
    free = conn.execute(
        sa.select(SLOT.c.slot, SLOT.c.ended_at)
        .where(_relay(relay, kind), SLOT.c.slot < size, SLOT.c.holder.is_(None))
        .order_by(SLOT.c.ended_at.desc(), SLOT.c.slot)
    ).all()
    for (slot, ended), when in zip(free, sorted(ends, reverse=True), strict=False):
        if when > as_utc(ended):
            conn.execute(
                sa.update(SLOT)
                .where(_relay(relay, kind), SLOT.c.slot == slot)
                .values(ended_at=when)
            )


def take(
    conn: Connection,
    relay: str,
    worker: str,
    moment: dt.datetime,
    interval: float,
    windows: Sequence[Window],
) -> Taken | Wait | Held:
    """Take a slot of every window for a message starting at ``moment``, if the limits
    allow it now; else say how long to wait, or which message to wait for."""
    pace = conn.execute(
        sa.select(SLOT.c.ended_at).where(_relay(relay, PACE), SLOT.c.slot == 0).with_for_update()
    ).scalar_one()
    wait = (as_utc(pace) - moment).total_seconds() if interval else 0.0
    longest = ""
    chosen: dict[str, int] = {}
    for window in windows:
        mine = sa.and_(_relay(relay, window.kind), SLOT.c.slot < window.size)
        free = conn.execute(
            sa.select(SLOT.c.slot, SLOT.c.ended_at)
            .where(mine, SLOT.c.holder.is_(None))
            .order_by(SLOT.c.ended_at, SLOT.c.slot)
            .limit(1)
        ).first()
        if free is None:
            held = conn.execute(
                sa.select(SLOT.c.slot, SLOT.c.holder, SLOT.c.started_at)
                .where(mine)
                .order_by(SLOT.c.started_at, SLOT.c.slot)
                .limit(1)
            ).one()
            started = as_utc(held.started_at) if held.started_at else None
            return Held(window.kind, held.slot, held.holder or "", started)
        ready = as_utc(free.ended_at) + dt.timedelta(seconds=window.seconds)
        if (ready - moment).total_seconds() > wait:
            wait, longest = (ready - moment).total_seconds(), window.kind
        chosen[window.kind] = free.slot
    if wait > 0:
        return Wait(wait, longest)
    if interval:
        conn.execute(
            sa.update(SLOT)
            .where(_relay(relay, PACE), SLOT.c.slot == 0)
            .values(ended_at=moment + dt.timedelta(seconds=interval))
        )
    for kind, slot in chosen.items():
        conn.execute(
            sa.update(SLOT)
            .where(_relay(relay, kind), SLOT.c.slot == slot)
            .values(holder=worker, started_at=moment)
        )
    return Taken(chosen, moment)


def ready_at(conn: Connection, relay: str, window: Window) -> dt.datetime | None:
    """When a message may next start as far as ``window`` goes: a full window after the
    earliest end among its free slots; None if the relay has no such window yet."""
    earliest = conn.execute(
        sa.select(sa.func.min(SLOT.c.ended_at)).where(
            _relay(relay, window.kind), SLOT.c.slot < window.size, SLOT.c.holder.is_(None)
        )
    ).scalar_one_or_none()
    if earliest is None:
        return None
    return as_utc(earliest) + dt.timedelta(seconds=window.seconds)


def end(conn: Connection, relay: str, worker: str, ends: Sequence[End]) -> None:
    """Free the slots of messages that ended, with the time each ended. A slot that was
    taken from this worker meanwhile (it was presumed dead) is left alone."""
    for kind, slot, started, ended in ends:
        conn.execute(
            sa.update(SLOT)
            .where(
                _relay(relay, kind),
                SLOT.c.slot == slot,
                SLOT.c.holder == worker,
                SLOT.c.started_at == started,
            )
            .values(holder=None, ended_at=ended)
        )


def free_held_by(conn: Connection, workers: Sequence[str], moment: dt.datetime) -> None:
    """Free the slots held by workers found dead, as if their messages ended now: each
    may have reached the server at any time until then."""
    if workers:
        conn.execute(
            sa.update(SLOT)
            .where(SLOT.c.holder.in_(list(workers)))
            .values(holder=None, ended_at=moment)
        )


def free_orphans(conn: Connection, relay: str, moment: dt.datetime) -> int:
    """Free the slots of the relay held by a worker that has no lease on any send (it
    died, and its send was taken over), as if their messages ended now."""
    leased = sa.select(SEND_WORKER.c.worker).where(SEND_WORKER.c.worker == SLOT.c.holder)
    result = conn.execute(
        sa.update(SLOT)
        .where(SLOT.c.relay == relay, SLOT.c.holder.is_not(None), ~leased.exists())
        .values(holder=None, ended_at=moment)
    )
    return int(result.rowcount)
