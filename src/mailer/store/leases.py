"""Queries on leases: which worker runs a job that only one may run at a time.

A lease names a job (``scheduler``, ``bounces``), the worker that holds it, when it
expires, and a term that grows by one each time it changes hands. The holder renews it
long before it expires; another worker takes it only when it was let go, has expired, or
its holder's process is gone from this machine. Every write that a holder makes on the
job's behalf first confirms, in the same transaction, that the lease is still its own in
the same term (:func:`confirm`). On PostgreSQL that ``UPDATE`` also locks the lease's row
until the transaction ends, so a take-over waits for it and then sees the renewed expiry;
SQLite runs one writer at a time anyway. A holder that stalled past its lease and was
replaced therefore cannot write, however late it wakes up: clocks that disagree can delay a
take-over or end a lease early, never let two workers act at once; on PostgreSQL the
database server's clock is the only one read (:func:`now`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from mailer.store import send_workers, sends
from mailer.store.models import Lease, as_utc, table_of

LEASE = table_of(Lease)


@dataclass(frozen=True)
class Holding:
    """A lease as it stands: who holds it (None: nobody), in which term, until when."""

    name: str
    holder: str | None
    term: int
    expires_at: dt.datetime | None


def _at(moment: dt.datetime) -> sa.BindParameter[dt.datetime]:
    return sa.bindparam(None, moment, type_=LEASE.c.expires_at.type)


def get(session: Session, name: str) -> Holding | None:
    row = (
        session.connection()
        .execute(
            sa.select(LEASE.c.holder, LEASE.c.term, LEASE.c.expires_at).where(LEASE.c.name == name)
        )
        .first()
    )
    if row is None:
        return None
    expires = as_utc(row.expires_at) if row.expires_at is not None else None
    return Holding(name, row.holder, int(row.term), expires)


def gone(holder: str) -> bool:
    """Whether the process named ``holder`` (``host:pid:start``) is known to be gone: only
    a process on this machine can be looked up; one elsewhere is judged by its expiry."""
    return sends.process_gone(holder) is True


def now(session: Session) -> dt.datetime:
    """The time leases are written and judged by: the database server's clock on
    PostgreSQL, so machines whose clocks disagree still agree on a lease; this machine's on
    SQLite, which only processes of this machine can open."""
    return send_workers.now(session.connection())


def take(
    session: Session, name: str, holder: str, now: dt.datetime, ttl: dt.timedelta
) -> int | None:
    """Take the lease ``name`` for ``holder``, or renew it if it is already its own, until
    ``now + ttl``: the term it is held in, or None while another worker holds it."""
    conn = session.connection()
    current = get(session, name)
    until = now + ttl
    if current is None:
        try:
            # A savepoint, begun by asking the session for its connection inside it: the
            # insert that loses a race is undone alone, and the transaction goes on.
            with session.begin_nested():
                session.connection().execute(
                    sa.insert(LEASE).values(
                        name=name, holder=holder, term=1, acquired_at=now, expires_at=until
                    )
                )
        except IntegrityError:
            return None  # another worker made the row, and holds it, a moment ago
        return 1
    if current.holder == holder:
        return current.term if confirm(session, name, holder, current.term, until) else None
    free = current.holder is None or current.expires_at is None or current.expires_at < now
    if not free and not (current.holder is not None and gone(current.holder)):
        return None
    # A compare-and-set on the term and on the reason the lease looked free, checked again
    # by the database: a holder that renewed meanwhile keeps it.
    reason = [LEASE.c.holder.is_(None), LEASE.c.expires_at < _at(now)]
    if not free:
        reason.append(LEASE.c.holder == current.holder)  # gone from this machine
    result = conn.execute(
        sa.update(LEASE)
        .where(LEASE.c.name == name, LEASE.c.term == current.term, sa.or_(*reason))
        .values(holder=holder, term=current.term + 1, acquired_at=now, expires_at=until)
    )
    return current.term + 1 if result.rowcount == 1 else None


def confirm(session: Session, name: str, holder: str, term: int, until: dt.datetime) -> bool:
    """Renew a lease its holder still has in ``term``, until ``until``; False if it lost it.

    Call it in the transaction of every write made on the lease's behalf: that write then
    commits only if the lease was still this holder's."""
    result = session.connection().execute(
        sa.update(LEASE)
        .where(LEASE.c.name == name, LEASE.c.holder == holder, LEASE.c.term == term)
        .values(expires_at=until)
    )
    return bool(result.rowcount == 1)


def release(session: Session, name: str, holder: str, term: int) -> bool:
    """Let go of a lease, so that another worker may take it at once."""
    result = session.connection().execute(
        sa.update(LEASE)
        .where(LEASE.c.name == name, LEASE.c.holder == holder, LEASE.c.term == term)
        .values(holder=None, expires_at=None)
    )
    return bool(result.rowcount == 1)
