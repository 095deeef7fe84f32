"""Queries on sends, the lists they go to, and approvals; whether a process is alive.

:func:`transition` is the only code that changes ``send.status``, by the rules of
:data:`mailer.store.status.SEND_TRANSITIONS`. It is a compare-and-set ``UPDATE``, so two
processes can never both move the same send (two workers finishing at once, or a worker
and ``mailer pause``): one wins, the other gets a :class:`StateError` (or False from
:func:`try_transition`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlmodel import Session, col, select

from mailer.errors import NotFound, StateError
from mailer.store import people
from mailer.store.models import (
    Approval,
    MailingList,
    Send,
    SendList,
    SendStatus,
    as_utc,
    table_of,
    utcnow,
)
from mailer.store.status import OPEN_SENDS, SEND_TRANSITIONS, ApprovalMethod, PauseReason

SEND = table_of(Send)
SEND_LIST = table_of(SendList)

S = SendStatus
# A send through the outbox is a rehearsal: nobody was emailed (revision 0011).
NOT_A_REHEARSAL = sa.or_(SEND.c.transport.is_(None), SEND.c.transport != "outbox")
# A process on another machine that has not touched its heartbeat for this long is
# presumed dead (see abandoned; the workers of a send keep leases in send_workers instead).
STALE_AFTER = timedelta(seconds=60)


def _start_time(pid: int) -> str | None:
    """When a process started, in clock ticks since boot (Linux), to tell reused pids apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def this_process() -> str:
    """``host:pid:start``: names this process (a worker, ``mailer send``) in the database."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '-'}"


def _conn(db: Connection | Session) -> Connection:
    return db.connection() if isinstance(db, Session) else db


def transition(
    db: Connection | Session,
    send_id: int,
    new: SendStatus,
    reason: str = "",
    *,
    pause: PauseReason | None = None,
) -> None:
    """Move a send to ``new`` if its current status allows it; raise StateError if not.

    Which processes are working on the send is not kept here but in ``send_worker``
    (:mod:`mailer.store.send_workers`): a pause or a cancel from anywhere changes only the
    status, and each worker stops at its next ledger commit, when it reads it.
    """
    if not try_transition(db, send_id, new, reason, pause=pause):
        row = (
            _conn(db)
            .execute(sa.select(SEND.c.slug, SEND.c.status).where(SEND.c.id == send_id))
            .first()
        )
        if row is None:
            raise NotFound(f"there is no send {send_id}")
        raise StateError(f"the send of {row.slug} is {row.status} and cannot become {new}")


def try_transition(
    db: Connection | Session,
    send_id: int,
    new: SendStatus,
    reason: str = "",
    *,
    pause: PauseReason | None = None,
) -> bool:
    """:func:`transition`, answering False instead of raising when the status does not
    allow it (another worker finished or paused the send first)."""
    now = utcnow()
    values: dict[str, object] = {
        "status": new,
        "status_reason": reason,
        "pause_reason": pause if new == S.PAUSED else None,
        "heartbeat_at": now,
    }
    if new == S.SENDING:
        values.update(
            started_at=sa.func.coalesce(
                SEND.c.started_at, sa.bindparam("now", now, type_=SEND.c.started_at.type)
            ),
        )
    elif new in (S.SENT, S.CANCELLED):
        values.update(finished_at=now)
    condition = sa.and_(SEND.c.id == send_id, SEND.c.status.in_(list(SEND_TRANSITIONS[new])))
    result = _conn(db).execute(sa.update(SEND).where(condition).values(**values))
    return bool(result.rowcount == 1)


class Locked(NamedTuple):
    """A send's row as :func:`lock` read it."""

    slug: str
    status: SendStatus
    total: int | None
    # Why it is paused (None unless it is).
    pause_reason: PauseReason | None


def lock(db: Connection | Session, send_id: int) -> Locked:
    """The send's slug, status, total and pause reason, its row locked until the
    transaction ends (on PostgreSQL; SQLite's writers take turns anyway), so workers joining
    and leaving a send decide one at a time."""
    row = (
        _conn(db)
        .execute(
            sa.select(SEND.c.slug, SEND.c.status, SEND.c.total, SEND.c.pause_reason)
            .where(SEND.c.id == send_id)
            .with_for_update()
        )
        .first()
    )
    if row is None:
        raise NotFound(f"there is no send {send_id}")
    reason = PauseReason(row.pause_reason) if row.pause_reason is not None else None
    return Locked(row.slug, SendStatus(row.status), row.total, reason)


def process_gone(worker: str) -> bool | None:
    """Whether the process named ``worker`` (``host:pid:start``, see :func:`this_process`)
    is gone from this machine's process table (the start time guards against a reused
    pid); None when it ran on another machine, whose processes cannot be looked up."""
    host, _, rest = worker.partition(":")
    pid, _, started = rest.partition(":")
    # A run of a send adds "/n" to its process's name (mailer.store.send_workers).
    started = started.partition("/")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return None
    now_started = _start_time(int(pid))
    if now_started is None:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return started not in ("", "-") and started != now_started


def abandoned(claimed_by: str | None, heartbeat: datetime | None) -> bool:
    """Whether the process ``claimed_by`` is gone.

    On this machine the process table answers (:func:`process_gone`). A process on
    another machine is presumed gone when ``heartbeat`` is older than STALE_AFTER.
    """
    if not claimed_by:
        return True
    gone = process_gone(claimed_by)
    if gone is not None:
        return gone
    if heartbeat is None:
        return True
    return utcnow() - as_utc(heartbeat) > STALE_AFTER


# -- creating and finding sends -----------------------------------------------------------


def create(
    session: Session,
    frozen: Send,
    list_slugs: Sequence[str],
    before_commit: Callable[[Session, int], None] | None = None,
) -> Send:
    """Store ``frozen`` (a new send: the issue as compiled and approved) for these lists.

    ``before_commit(session, send_id)`` runs in the same transaction: whatever it writes
    commits with the send, and if it raises, the send is never made."""
    slug = frozen.slug
    lists = [people.get_list(session, name) for name in dict.fromkeys(list_slugs)]
    if not lists:
        raise StateError("name at least one list with --list")
    busy = open_sends(session, slug)
    if busy:
        b = busy[0]
        raise StateError(
            f"{slug} already has a send that is {b.status} (send {b.id}): "
            f"use `mailer send {slug} --resume`, or `mailer cancel {slug}` first"
        )
    send = frozen
    session.add(send)
    session.flush()
    assert send.id is not None
    for lst in lists:
        assert lst.id is not None
        session.add(SendList(send_id=send.id, list_id=lst.id))
    if before_commit is not None:
        before_commit(session, send.id)
    session.commit()
    session.refresh(send)
    return send


def open_sends(session: Session, slug: str) -> list[Send]:
    query = select(Send).where(
        Send.slug == slug, col(Send.status).in_([str(s) for s in OPEN_SENDS])
    )
    return list(session.exec(query.order_by(col(Send.id))).all())


def latest(session: Session, slug: str) -> Send:
    """The newest send of ``slug``."""
    send = session.exec(select(Send).where(Send.slug == slug).order_by(col(Send.id).desc())).first()
    if send is None:
        raise NotFound(f"{slug} has never been sent: nothing to show")
    return send


def get(session: Session, send_id: int) -> Send:
    send = session.get(Send, send_id)
    if send is None:
        raise NotFound(f"there is no send {send_id}")
    return send


def list_ids_of(conn: sa.Connection, send_id: int) -> list[int]:
    """The ids of the lists a send goes to (fixed when it was made)."""
    query = sa.select(SEND_LIST.c.list_id).where(SEND_LIST.c.send_id == send_id)
    return list(conn.execute(query).scalars())


def list_slugs_of(session: Session, send_id: int) -> list[str]:
    ml = table_of(MailingList)
    rows = session.connection().execute(
        sa.select(ml.c.slug)
        .join(SEND_LIST, SEND_LIST.c.list_id == ml.c.id)
        .where(SEND_LIST.c.send_id == send_id)
        .order_by(ml.c.slug)
    )
    return [r.slug for r in rows]


def of_issue(session: Session, slug: str) -> list[Send]:
    """Every send of ``slug``, newest first."""
    return list(session.exec(select(Send).where(Send.slug == slug).order_by(col(Send.id).desc())))


def checks_skipped(session: Session, slug: str) -> dict[int, str]:
    """Send id -> why the preflight checks were skipped, for the sends of ``slug`` that did."""
    query = select(Send.id, Send.checks_skipped).where(
        Send.slug == slug, col(Send.checks_skipped).is_not(None)
    )
    return {send_id: reason for send_id, reason in session.exec(query) if send_id and reason}


def recent(session: Session, limit: int = 20) -> list[Send]:
    """The newest sends across issues."""
    return list(session.exec(select(Send).order_by(col(Send.id).desc()).limit(limit)))


def unfinished(session: Session) -> list[Send]:
    """Sends that are sending or paused, oldest first: candidates for the worker to resume."""
    query = select(Send).where(col(Send.status).in_([str(S.SENDING), str(S.PAUSED)]))
    return list(session.exec(query.order_by(col(Send.id))))


def issue_is_taken(session: Session, slug: str) -> bool:
    """Whether ``slug`` has a send that is sent, sending or paused (a rehearsal aside)."""
    taken = [str(s) for s in (S.SENT, S.SENDING, S.PAUSED)]
    query = sa.select(SEND.c.id).where(
        SEND.c.slug == slug, SEND.c.status.in_(taken), NOT_A_REHEARSAL
    )
    return session.connection().execute(query).first() is not None


def set_total(conn: Connection, send_id: int, total: int) -> None:
    conn.execute(sa.update(SEND).where(SEND.c.id == send_id).values(total=total))


# -- approvals ------------------------------------------------------------------------------


def add_approval(
    session: Session,
    slug: str,
    content_hash: str,
    by: str,
    summary: str,
    *,
    method: ApprovalMethod = ApprovalMethod.COMMAND,
    content_text: str | None = None,
) -> Approval:
    approval = Approval(
        slug=slug,
        content_hash=content_hash,
        approved_by=by,
        summary=summary,
        method=method,
        content_text=content_text,
    )
    session.add(approval)
    session.commit()
    session.refresh(approval)
    return approval


def latest_approval(session: Session, slug: str) -> Approval | None:
    query = select(Approval).where(Approval.slug == slug).order_by(col(Approval.id).desc())
    return session.exec(query).first()
