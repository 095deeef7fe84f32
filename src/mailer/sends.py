"""The life of a send: approval, creation, claiming, status transitions and reports.

:func:`transition` is the only code that changes ``send.status``. It is a compare-and-set
``UPDATE``, so two processes can never both move the same send (two workers, or a worker
and a manual ``mailer send``): one wins, the other gets a :class:`StateError`.

::

    scheduled ──► sending ──► sent ──(retry failed)──► sending
        │           │  ▲
        │           ▼  │
        │         paused ──► cancelled
        ├──► cancelled
        └──► failed (missed, content changed) ──(resume)──► sending
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlmodel import Session, col, select

from mailer import store
from mailer.errors import ApprovalError, NotFound, StateError
from mailer.models import (
    Approval,
    Delivery,
    DeliveryStatus,
    MailingList,
    Send,
    SendList,
    SendStatus,
    as_utc,
    table_of,
    utcnow,
)
from mailer.render import CompiledIssue

SEND = table_of(Send)
DELIVERY = table_of(Delivery)
SEND_LIST = table_of(SendList)

S = SendStatus
# For each status, the statuses a send may come from.
ALLOWED_FROM: dict[SendStatus, frozenset[SendStatus]] = {
    S.SCHEDULED: frozenset(),
    S.SENDING: frozenset({S.SCHEDULED, S.PAUSED, S.SENT, S.FAILED}),
    S.PAUSED: frozenset({S.SENDING, S.SCHEDULED}),
    S.SENT: frozenset({S.SENDING}),
    S.CANCELLED: frozenset({S.SCHEDULED, S.PAUSED, S.FAILED}),
    S.FAILED: frozenset({S.SCHEDULED, S.SENDING, S.PAUSED}),
}
OPEN = (S.SCHEDULED, S.SENDING, S.PAUSED)
# A sender that has not touched its heartbeat for this long is presumed dead.
STALE_AFTER = timedelta(seconds=60)


def _start_time(pid: int) -> str | None:
    """When a process started, in clock ticks since boot (Linux), to tell reused pids apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def this_process() -> str:
    """``host:pid:start``: names the process that holds a send."""
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
    owner: str | None = None,
) -> None:
    """Move a send to ``new`` if its current status allows it; raise StateError if not.

    ``owner`` is the process holding the send when it changes its own status. A pause from
    anyone else (``mailer pause``) keeps the claim: the sender still holds the send until it
    has stopped, and only then lets go (:func:`release`), so nobody resumes it too early.
    """
    conn = _conn(db)
    now = utcnow()
    values: dict[str, object] = {"status": new, "status_reason": reason}
    if new == S.SENDING:
        values.update(
            claimed_by=owner or this_process(),
            heartbeat_at=now,
            started_at=sa.func.coalesce(
                SEND.c.started_at, sa.bindparam("now", now, type_=SEND.c.started_at.type)
            ),
        )
    elif new in (S.SENT, S.FAILED, S.CANCELLED):
        values.update(finished_at=now, claimed_by=None)
    elif new == S.PAUSED and owner is not None:
        values.update(claimed_by=None)
    condition = sa.and_(SEND.c.id == send_id, SEND.c.status.in_(list(ALLOWED_FROM[new])))
    if owner is not None and new != S.SENDING:
        # Only the process that holds a send may finish or pause it on its own behalf.
        condition = sa.and_(
            condition, sa.or_(SEND.c.status != S.SENDING, SEND.c.claimed_by == owner)
        )
    result = conn.execute(sa.update(SEND).where(condition).values(**values))
    if result.rowcount != 1:
        row = conn.execute(
            sa.select(SEND.c.slug, SEND.c.status).where(SEND.c.id == send_id)
        ).first()
        if row is None:
            raise NotFound(f"there is no send {send_id}")
        raise StateError(f"the send of {row.slug} is {row.status} and cannot become {new}")


def release(db: Connection | Session, send_id: int, owner: str) -> None:
    """The sender has stopped: let go of a send that someone else paused or cancelled."""
    _conn(db).execute(
        sa.update(SEND)
        .where(SEND.c.id == send_id, SEND.c.claimed_by == owner)
        .values(claimed_by=None)
    )


def claim(db: Connection | Session, send_id: int, owner: str) -> None:
    """Take a send for sending; a send held by a process that is gone may be taken over.

    A send is held while its ``claimed_by`` is set, whatever its status: a paused send whose
    sender is still finishing the messages in hand cannot be resumed until it has stopped.
    """
    conn = _conn(db)
    row = conn.execute(
        sa.select(SEND.c.slug, SEND.c.status, SEND.c.claimed_by, SEND.c.heartbeat_at).where(
            SEND.c.id == send_id
        )
    ).first()
    if row is None:
        raise NotFound(f"there is no send {send_id}")
    if row.claimed_by is not None and not abandoned(row.claimed_by, row.heartbeat_at):
        if row.status == S.SENDING:
            raise StateError(
                f"{row.slug} is being sent by another process ({row.claimed_by}); "
                f"run `mailer pause {row.slug}` first if it should stop"
            )
        raise StateError(
            f"{row.slug} is {row.status}, but its sender ({row.claimed_by}) is still finishing "
            "the messages in hand: try again in a moment"
        )
    if row.status != S.SENDING:
        if row.claimed_by is not None:
            release(conn, send_id, row.claimed_by)
        transition(conn, send_id, S.SENDING, owner=owner)
        return
    # Take over from a sender that is gone: compare-and-set on the old claim.
    old = (
        SEND.c.claimed_by.is_(None)
        if row.claimed_by is None
        else SEND.c.claimed_by == row.claimed_by
    )
    result = conn.execute(
        sa.update(SEND)
        .where(SEND.c.id == send_id, SEND.c.status == S.SENDING, old)
        .values(claimed_by=owner, heartbeat_at=utcnow())
    )
    if result.rowcount != 1:
        raise StateError(f"{row.slug} was just taken by another process")


def abandoned(claimed_by: str | None, heartbeat: datetime | None) -> bool:
    """Whether the process that holds a send is gone.

    On this machine the process table answers (the start time guards against a reused
    pid). A process on another machine is presumed gone when its heartbeat, refreshed every
    few seconds by its ledger, is older than STALE_AFTER.
    """
    if not claimed_by:
        return True
    host, _, rest = claimed_by.partition(":")
    pid, _, started = rest.partition(":")
    if host == socket.gethostname() and pid.isdigit():
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
    if heartbeat is None:
        return True
    return utcnow() - as_utc(heartbeat) > STALE_AFTER


# -- approval ---------------------------------------------------------------------------


def content_summary(compiled: CompiledIssue) -> dict[str, object]:
    """What a reviewer approved, part by part, so a later change can be named."""

    def digest(value: object) -> str:
        blob = json.dumps(value, default=str, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    issue = compiled.issue
    sections = []
    for section in issue.sections:
        data = dataclasses.asdict(section)
        if data.get("image"):
            data["image"].pop("path", None)
        sections.append({"title": section.title, "hash": digest(data)})
    return {
        "subject": issue.subject,
        "preheader": issue.preheader,
        "date": issue.date.isoformat(),
        "intro": digest(issue.intro),
        "sections": sections,
    }


def approve(session: Session, compiled: CompiledIssue, by: str) -> Approval:
    by = by.strip()
    if not by:
        raise ApprovalError("say who approves with --by NAME")
    approval = Approval(
        slug=compiled.issue.slug,
        content_hash=compiled.content_hash,
        approved_by=by,
        summary=json.dumps(content_summary(compiled)),
    )
    session.add(approval)
    session.commit()
    session.refresh(approval)
    return approval


def latest_approval(session: Session, slug: str) -> Approval | None:
    query = select(Approval).where(Approval.slug == slug).order_by(col(Approval.id).desc())
    return session.exec(query).first()


def require_approval(session: Session, compiled: CompiledIssue) -> Approval:
    """The approval of exactly this content, or an ApprovalError saying what changed."""
    slug = compiled.issue.slug
    approval = latest_approval(session, slug)
    again = f"review it, then run: mailer approve {slug} --by NAME"
    if approval is None:
        raise ApprovalError(f"{slug} has not been approved: {again}")
    if approval.content_hash == compiled.content_hash:
        return approval
    when = as_utc(approval.approved_at).strftime("%d %b %Y %H:%M UTC")
    changes = describe_changes(json.loads(approval.summary), content_summary(compiled))
    raise ApprovalError(
        f"{slug} changed since {approval.approved_by} approved it on {when} "
        f"({'; '.join(changes)}): {again}"
    )


def describe_changes(old: dict[str, object], new: dict[str, object]) -> list[str]:
    changes = [
        f"{key} changed"
        for key in ("subject", "preheader", "date", "intro")
        if old.get(key) != new.get(key)
    ]
    before = {s["title"]: s["hash"] for s in old.get("sections", [])}  # type: ignore[attr-defined]
    after = {s["title"]: s["hash"] for s in new.get("sections", [])}  # type: ignore[attr-defined]
    changes += [f"section '{t}' added" for t in after if t not in before]
    changes += [f"section '{t}' removed" for t in before if t not in after]
    changes += [f"section '{t}' changed" for t in after if t in before and before[t] != after[t]]
    if not changes and list(before) != list(after):
        changes.append("sections reordered")
    return changes or ["the templates or mailer.toml changed"]


# -- creating and finding sends -----------------------------------------------------------


def create(
    session: Session,
    compiled: CompiledIssue,
    list_slugs: Sequence[str],
    approval: Approval,
    *,
    scheduled_at: datetime | None = None,
) -> Send:
    """A new send of this compiled issue to these lists, frozen as approved."""
    slug = compiled.issue.slug
    lists = [store.get_list(session, name) for name in dict.fromkeys(list_slugs)]
    if not lists:
        raise StateError("name at least one list with --list")
    busy = open_sends(session, slug)
    if busy:
        b = busy[0]
        raise StateError(
            f"{slug} already has a send that is {b.status} (send {b.id}): "
            f"use `mailer send {slug} --resume`, or `mailer cancel {slug}` first"
        )
    send = Send(
        slug=slug,
        content_hash=compiled.content_hash,
        subject=compiled.issue.subject,
        html=compiled.email_html,
        text=compiled.email_text,
        approved_by=approval.approved_by,
        scheduled_at=scheduled_at,
    )
    session.add(send)
    session.flush()
    assert send.id is not None
    for lst in lists:
        assert lst.id is not None
        session.add(SendList(send_id=send.id, list_id=lst.id))
    session.commit()
    session.refresh(send)
    return send


def open_sends(session: Session, slug: str) -> list[Send]:
    query = select(Send).where(Send.slug == slug, col(Send.status).in_([str(s) for s in OPEN]))
    return list(session.exec(query.order_by(col(Send.id))).all())


def latest(session: Session, slug: str) -> Send:
    send = session.exec(select(Send).where(Send.slug == slug).order_by(col(Send.id).desc())).first()
    if send is None:
        raise NotFound(f"{slug} has never been sent: nothing to show")
    return send


def get(session: Session, send_id: int) -> Send:
    send = session.get(Send, send_id)
    if send is None:
        raise NotFound(f"there is no send {send_id}")
    return send


def list_slugs_of(session: Session, send_id: int) -> list[str]:
    ml = table_of(MailingList)
    rows = session.connection().execute(
        sa.select(ml.c.slug)
        .join(SEND_LIST, SEND_LIST.c.list_id == ml.c.id)
        .where(SEND_LIST.c.send_id == send_id)
        .order_by(ml.c.slug)
    )
    return [r.slug for r in rows]


def _already_mailed(conn: Connection, slug: str, send_id: int | None) -> set[int]:
    """Subscribers an earlier send of this issue reached (or may have reached)."""
    query = (
        sa.select(DELIVERY.c.subscriber_id)
        .join(SEND, SEND.c.id == DELIVERY.c.send_id)
        .where(
            SEND.c.slug == slug,
            DELIVERY.c.status.in_([DeliveryStatus.SENT, DeliveryStatus.IN_FLIGHT]),
        )
    )
    if send_id is not None:
        query = query.where(SEND.c.id != send_id)
    return set(conn.execute(query).scalars())


def count_recipients(session: Session, list_ids: Sequence[int], slug: str) -> int:
    """How many a new send of ``slug`` to these lists would mail (see fix_recipients)."""
    already = _already_mailed(session.connection(), slug, None)
    return sum(
        1 for r in store.eligible_recipients(session, list_ids) if r.subscriber_id not in already
    )


def fix_recipients(session: Session, send: Send) -> int:
    """Write the ledger: every eligible subscriber once, in one transaction.

    Eligible means active and subscribed to any of the send's lists, not suppressed, and not
    already mailed this issue by an earlier send (so a second list never duplicates).
    """
    assert send.id is not None
    conn = session.connection()
    list_ids = list(
        conn.execute(sa.select(SEND_LIST.c.list_id).where(SEND_LIST.c.send_id == send.id)).scalars()
    )
    already = _already_mailed(conn, send.slug, send.id)
    insert = sa.insert(DELIVERY)
    total = 0
    batch: list[dict[str, object]] = []
    for r in store.eligible_recipients(session, list_ids):
        if r.subscriber_id in already:
            continue
        batch.append(
            {
                "send_id": send.id,
                "subscriber_id": r.subscriber_id,
                "email": r.email,
                "name": r.name or "",
                "status": DeliveryStatus.PENDING,
                "attempts": 0,
                "last_error": "",
                "message_id": "",
            }
        )
        if len(batch) >= 1000:
            conn.execute(insert, batch)
            total += len(batch)
            batch = []
    if batch:
        conn.execute(insert, batch)
        total += len(batch)
    conn.execute(sa.update(SEND).where(SEND.c.id == send.id).values(total=total))
    session.commit()
    return total


# -- reporting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailedRecipient:
    email: str
    status: str
    attempts: int
    error: str


@dataclass(frozen=True)
class Report:
    send_id: int
    slug: str
    status: str
    reason: str
    lists: list[str]
    total: int
    counts: dict[str, int]
    started_at: datetime | None
    finished_at: datetime | None
    scheduled_at: datetime | None
    last_sent_at: datetime | None
    failed: list[FailedRecipient]
    in_flight: list[str]

    @property
    def sent(self) -> int:
        return self.counts.get(DeliveryStatus.SENT, 0)

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or self.last_sent_at or utcnow()
        return max((end - self.started_at).total_seconds(), 0.0)

    @property
    def rate(self) -> float | None:
        d = self.duration
        return self.sent / d if d and self.sent else None

    def as_dict(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data.update(sent=self.sent, duration_seconds=self.duration, rate_per_second=self.rate)
        for key in ("started_at", "finished_at", "scheduled_at", "last_sent_at"):
            value = data[key]
            data[key] = value.isoformat() if value else None
        return data


def report(session: Session, send: Send, failed_limit: int = 1000) -> Report:
    assert send.id is not None
    conn = session.connection()
    d = DELIVERY.c
    counts = {str(s): 0 for s in DeliveryStatus}
    for status, n in conn.execute(
        sa.select(d.status, sa.func.count()).where(d.send_id == send.id).group_by(d.status)
    ):
        counts[str(status)] = n
    failed = [
        FailedRecipient(r.email, str(r.status), r.attempts, r.last_error)
        for r in conn.execute(
            sa.select(d.email, d.status, d.attempts, d.last_error)
            .where(
                d.send_id == send.id,
                d.status.in_([DeliveryStatus.FAILED_TEMPORARY, DeliveryStatus.FAILED_PERMANENT]),
            )
            .order_by(d.id)
            .limit(failed_limit)
        )
    ]
    in_flight = list(
        conn.execute(
            sa.select(d.email)
            .where(d.send_id == send.id, d.status == DeliveryStatus.IN_FLIGHT)
            .order_by(d.id)
        ).scalars()
    )
    last = conn.execute(sa.select(sa.func.max(d.sent_at)).where(d.send_id == send.id)).scalar()
    return Report(
        send_id=send.id,
        slug=send.slug,
        status=str(send.status),
        reason=send.status_reason,
        lists=list_slugs_of(session, send.id),
        total=send.total or 0,
        counts=counts,
        started_at=as_utc(send.started_at) if send.started_at else None,
        finished_at=as_utc(send.finished_at) if send.finished_at else None,
        scheduled_at=as_utc(send.scheduled_at) if send.scheduled_at else None,
        last_sent_at=as_utc(_datetime(last)) if last else None,
        failed=failed,
        in_flight=in_flight,
    )


def _datetime(value: datetime | str) -> datetime:
    # An aggregate loses the column's type, so SQLite hands back its stored text.
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def reset_for_retry(session: Session, send_id: int, statuses: Iterable[DeliveryStatus]) -> int:
    result = session.connection().execute(
        sa.update(DELIVERY)
        .where(DELIVERY.c.send_id == send_id, DELIVERY.c.status.in_(list(statuses)))
        .values(status=DeliveryStatus.PENDING)
    )
    session.commit()
    return int(result.rowcount)
