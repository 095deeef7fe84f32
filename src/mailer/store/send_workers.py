"""Queries on ``send_worker``: the processes working on a send, and their leases.

Any number of processes (``mailer worker`` on any machine sharing the database, and
``mailer send`` from a terminal) may work on one send. Each has a row here, its lease,
which it renews with its ledger commits (every second while rows move, every few seconds
when idle). A worker is dead when

- it ran on this machine and its process is gone (the process table answers at once), or
- it ran on another machine and its lease has expired (``expires_at``, written from the
  database's clock on PostgreSQL, so machines whose clocks disagree still agree on it).

:func:`reap` deletes the leases of dead workers and turns every row of the send left in
flight by a worker without a lease into ``unknown``: whether the server took those
messages cannot be known, so they are never sent again on their own. These are the crash
rules of a single sender, applied to each worker.
"""

from __future__ import annotations

import datetime as dt
import itertools

import sqlalchemy as sa
from sqlalchemy import Connection

from mailer.store import deliveries, recovery, relay_slots, sends
from mailer.store.models import SendStatus, SendWorker, as_utc, table_of

SEND_WORKER = table_of(SendWorker)
SEND = sends.SEND
_runs = itertools.count(1)


def new_worker_id() -> str:
    """A name for one run of a send by this process: ``host:pid:start/n``. The ``/n`` keeps
    two runs in one process apart (tests run several in threads)."""
    return f"{sends.this_process()}/{next(_runs)}"


def now(conn: Connection) -> dt.datetime:
    """The time leases are written and judged by: the database server's clock on
    PostgreSQL, shared by every machine; this machine's on SQLite, which only processes of
    this machine can open (:func:`machine_now`)."""
    if conn.dialect.name == "postgresql":
        found = conn.execute(sa.select(sa.func.now())).scalar_one()
        assert isinstance(found, dt.datetime)
        return as_utc(found)
    return machine_now()


def machine_now() -> dt.datetime:
    """This machine's clock as it is: never shifted by ``MAILER_CLOCK_OFFSET`` (which moves
    one process's idea of the time for the schedules in end-to-end tests), because a lease
    is judged by other processes."""
    return dt.datetime.now(dt.UTC)


def join(
    conn: Connection, send_id: int, worker: str, connections: int, lease: dt.timedelta
) -> None:
    """Add ``worker``'s lease on the send (renewed if it is there already)."""
    moment = now(conn)
    renewed = conn.execute(
        sa.update(SEND_WORKER)
        .where(SEND_WORKER.c.send_id == send_id, SEND_WORKER.c.worker == worker)
        .values(connections=connections, heartbeat_at=moment, expires_at=moment + lease)
    )
    if renewed.rowcount == 0:
        conn.execute(
            sa.insert(SEND_WORKER).values(
                send_id=send_id,
                worker=worker,
                connections=connections,
                joined_at=moment,
                heartbeat_at=moment,
                expires_at=moment + lease,
            )
        )


def renew(conn: Connection, send_id: int, worker: str, lease: dt.timedelta) -> bool:
    """Renew ``worker``'s lease; False if it has none any more (it was presumed dead)."""
    moment = now(conn)
    result = conn.execute(
        sa.update(SEND_WORKER)
        .where(SEND_WORKER.c.send_id == send_id, SEND_WORKER.c.worker == worker)
        .values(heartbeat_at=moment, expires_at=moment + lease)
    )
    return bool(result.rowcount == 1)


def leave(conn: Connection, send_id: int, worker: str) -> bool:
    """Delete ``worker``'s lease; False if it had none (it was presumed dead)."""
    result = conn.execute(
        sa.delete(SEND_WORKER).where(
            SEND_WORKER.c.send_id == send_id, SEND_WORKER.c.worker == worker
        )
    )
    return bool(result.rowcount == 1)


def holds(conn: Connection, send_id: int, worker: str) -> bool:
    """Whether ``worker`` still has its lease on the send."""
    found = conn.execute(
        sa.select(SEND_WORKER.c.worker).where(
            SEND_WORKER.c.send_id == send_id, SEND_WORKER.c.worker == worker
        )
    ).first()
    return found is not None


def is_sending(conn: Connection, send_id: int, worker: str) -> bool:
    """Whether the send is sending and ``worker`` still holds its lease; read on a plain
    connection (the ledger's watch when it has nothing to write), then let go."""
    found = conn.execute(
        sa.select(sa.func.count())
        .select_from(SEND.join(SEND_WORKER, SEND_WORKER.c.send_id == SEND.c.id))
        .where(
            SEND.c.id == send_id,
            SEND.c.status == SendStatus.SENDING,
            SEND_WORKER.c.worker == worker,
        )
    ).scalar_one()
    conn.rollback()
    return bool(found)


def gone(worker: str, expires_at: dt.datetime, moment: dt.datetime) -> bool:
    """Whether a worker is dead: by the process table on this machine, else by its lease."""
    on_this_machine = sends.process_gone(worker)
    if on_this_machine is not None:
        return on_this_machine
    return as_utc(expires_at) < moment


def reap(conn: Connection, send_id: int, journals: recovery.Vouched | None = None) -> list[str]:
    """Delete the leases of the send's dead workers, free the rate-limit slots they held,
    and turn the rows left in flight by any worker without a lease into ``unknown``.

    With ``journals`` (:class:`mailer.sending.journal.Journals`), a dead worker whose
    journal can be read first has its rows settled by it (:func:`recovery.settle`): the
    ones it never began go back to ``pending``, and only those begun without an outcome
    become ``unknown``.

    Returns the addresses of those rows, in ledger order, for the worker to report.
    """
    moment = now(conn)
    rows = conn.execute(
        sa.select(SEND_WORKER.c.worker, SEND_WORKER.c.expires_at).where(
            SEND_WORKER.c.send_id == send_id
        )
    ).all()
    dead = [r.worker for r in rows if gone(r.worker, r.expires_at, moment)]
    unknown: list[str] = []
    if dead:
        # Rows first, then leases: the order a ledger commit takes them in (outcomes, then
        # its lease), so a worker presumed dead while it commits never deadlocks with this.
        for worker in dead:
            entries = journals(worker, send_id) if journals is not None else None
            if entries is not None:
                recovery.settle(conn, send_id, worker, entries)
        unknown = deliveries.in_flight_to_unknown(conn, send_id, dead)
        conn.execute(
            sa.delete(SEND_WORKER).where(
                SEND_WORKER.c.send_id == send_id, SEND_WORKER.c.worker.in_(dead)
            )
        )
        relay_slots.free_held_by(conn, dead, moment)
    return unknown + deliveries.orphans_to_unknown(conn, send_id)


def others(conn: Connection, send_id: int, worker: str) -> int:
    """How many workers besides ``worker`` hold a lease on the send."""
    return int(
        conn.execute(
            sa.select(sa.func.count()).where(
                SEND_WORKER.c.send_id == send_id, SEND_WORKER.c.worker != worker
            )
        ).scalar_one()
    )


def of_send(conn: Connection, send_id: int) -> list[deliveries.WorkerSummary]:
    """The workers of a send with their leases and how many rows each holds in flight."""
    rows = conn.execute(
        sa.select(
            SEND_WORKER.c.worker,
            SEND_WORKER.c.connections,
            SEND_WORKER.c.joined_at,
            SEND_WORKER.c.heartbeat_at,
            SEND_WORKER.c.expires_at,
        )
        .where(SEND_WORKER.c.send_id == send_id)
        .order_by(SEND_WORKER.c.joined_at, SEND_WORKER.c.worker)
    ).all()
    held = deliveries.in_flight_by_worker(conn, send_id)
    return [
        deliveries.WorkerSummary(
            r.worker,
            r.connections,
            as_utc(r.joined_at),
            as_utc(r.heartbeat_at),
            as_utc(r.expires_at),
            held.get(r.worker, 0),
        )
        for r in rows
    ]


def any_live(conn: Connection, send_id: int) -> bool:
    """Whether any worker of the send is alive (none: whoever comes next takes it over)."""
    moment = now(conn)
    rows = conn.execute(
        sa.select(SEND_WORKER.c.worker, SEND_WORKER.c.expires_at).where(
            SEND_WORKER.c.send_id == send_id
        )
    ).all()
    return any(not gone(r.worker, r.expires_at, moment) for r in rows)
