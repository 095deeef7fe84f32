"""Queries on an issue's way to approval: requests mailed to approvers, their decisions,
the approvals of a content hash, saves in ``mailer edit``, and the history of it all.

:func:`decide` is the only code that decides a request: a compare-and-set from
``pending``, so a link used twice (or by two tabs at once) decides once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailer.store import sends
from mailer.store.models import (
    Approval,
    ApprovalRequest,
    IssueSave,
    RequestStatus,
    Send,
    table_of,
    utcnow,
)

REQUEST = table_of(ApprovalRequest)


def add_request(
    session: Session,
    slug: str,
    content_hash: str,
    approver: str,
    content_text: str,
    at: dt.datetime | None = None,
) -> ApprovalRequest:
    request = ApprovalRequest(
        slug=slug,
        content_hash=content_hash,
        approver=approver,
        content_text=content_text,
        requested_at=at or utcnow(),
    )
    session.add(request)
    session.flush()
    return request


def forget_request(session: Session, request_id: int) -> None:
    """A request whose email could not be sent: its link never reached anyone."""
    session.connection().execute(sa.delete(REQUEST).where(REQUEST.c.id == request_id))


def get_request(session: Session, request_id: int) -> ApprovalRequest | None:
    return session.get(ApprovalRequest, request_id)


def decide(
    session: Session,
    request_id: int,
    status: RequestStatus,
    at: dt.datetime,
    reason: str | None = None,
) -> bool:
    """Decide a pending request; False if it was decided already (the link was used)."""
    result = session.connection().execute(
        sa.update(REQUEST)
        .where(REQUEST.c.id == request_id, REQUEST.c.status == RequestStatus.PENDING.value)
        .values(status=status.value, decided_at=at, reason=reason)
    )
    return result.rowcount == 1


def approvals_of(session: Session, slug: str, content_hash: str) -> list[Approval]:
    """The approvals of exactly this content, oldest first."""
    query = (
        select(Approval)
        .where(Approval.slug == slug, Approval.content_hash == content_hash)
        .order_by(col(Approval.id))
    )
    return list(session.exec(query))


def last_approved(session: Session, slug: str, other_than: str) -> Approval | None:
    """The latest approval of other content of ``slug`` whose text was kept, for a diff."""
    query = (
        select(Approval)
        .where(
            Approval.slug == slug,
            Approval.content_hash != other_than,
            col(Approval.content_text).is_not(None),
        )
        .order_by(col(Approval.id).desc())
    )
    return session.exec(query).first()


def changes_requested(session: Session, slug: str, content_hash: str) -> list[ApprovalRequest]:
    """The requests for changes to exactly this content."""
    query = (
        select(ApprovalRequest)
        .where(
            ApprovalRequest.slug == slug,
            ApprovalRequest.content_hash == content_hash,
            ApprovalRequest.status == RequestStatus.CHANGES_REQUESTED,
        )
        .order_by(col(ApprovalRequest.id))
    )
    return list(session.exec(query))


def add_save(session: Session, slug: str, by: str, content_hash: str | None) -> IssueSave:
    save = IssueSave(slug=slug, saved_by=by[:200], content_hash=content_hash)
    session.add(save)
    session.flush()
    return save


# -- history ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryEvent:
    """One thing that happened to an issue on its way out."""

    at: dt.datetime
    # requested, approved, changes-requested, saved, sent
    event: str
    by: str
    content_hash: str
    reason: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        found = asdict(self)
        found["at"] = self.at.isoformat()
        return found


def history(session: Session, slug: str) -> list[HistoryEvent]:
    """Every request, approval, request for changes, save and send of ``slug``, by time."""
    found: list[HistoryEvent] = []
    requests = select(ApprovalRequest).where(ApprovalRequest.slug == slug)
    for r in session.exec(requests):
        found.append(HistoryEvent(r.requested_at, "requested", r.approver, r.content_hash))
        if r.status == RequestStatus.CHANGES_REQUESTED and r.decided_at is not None:
            found.append(
                HistoryEvent(
                    r.decided_at, "changes-requested", r.approver, r.content_hash, r.reason or ""
                )
            )
    for a in session.exec(select(Approval).where(Approval.slug == slug)):
        how = "through the link mailed to them" if a.method == "link" else "typed with --by"
        found.append(
            HistoryEvent(a.approved_at, "approved", a.approved_by, a.content_hash, detail=how)
        )
    for s in session.exec(select(IssueSave).where(IssueSave.slug == slug)):
        found.append(HistoryEvent(s.saved_at, "saved", s.saved_by, s.content_hash or ""))
    for send in session.exec(select(Send).where(Send.slug == slug)):
        assert send.id is not None
        lists = ", ".join(sends.list_slugs_of(session, send.id))
        rehearsal = " (a rehearsal through the outbox)" if send.transport == "outbox" else ""
        found.append(
            HistoryEvent(
                send.created_at,
                "sent",
                send.approved_by,
                send.content_hash,
                detail=f"send {send.id} to {lists}: {send.status}{rehearsal}",
            )
        )
    order = {"saved": 0, "requested": 1, "approved": 2, "changes-requested": 2, "sent": 3}
    return sorted(found, key=lambda e: (e.at, order[e.event]))
