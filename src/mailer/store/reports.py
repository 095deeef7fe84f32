"""Queries behind ``mailer report``: a send's ledger, what came back, who left since.

Each function returns plain rows of one send; :mod:`mailer.bounces.report` adds them up.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import NamedTuple

import sqlalchemy as sa
from sqlmodel import Session

from mailer.store.models import (
    BounceEvent,
    Delivery,
    MailingList,
    Membership,
    MembershipStatus,
    Send,
    SendList,
    Subscriber,
    SubscriberStatus,
    as_utc,
    table_of,
)

DELIVERY = table_of(Delivery)
EVENT = table_of(BounceEvent)
MEMBERSHIP = table_of(Membership)
SEND = table_of(Send)
SEND_LIST = table_of(SendList)
LIST = table_of(MailingList)
SUBSCRIBER = table_of(Subscriber)


class CopyRow(NamedTuple):
    """One recipient's copy in the ledger."""

    subscriber_id: int
    email: str
    status: str
    sent_at: dt.datetime | None
    error: str


class EventRow(NamedTuple):
    subscriber_id: int | None
    kind: str
    status: str
    reason: str


def copies(session: Session, send_id: int) -> list[CopyRow]:
    d = DELIVERY.c
    rows = session.connection().execute(
        sa.select(d.subscriber_id, d.email, d.status, d.sent_at, d.last_error)
        .where(d.send_id == send_id)
        .order_by(d.id)
    )
    return [
        CopyRow(
            r.subscriber_id,
            r.email,
            str(r.status),
            as_utc(r.sent_at) if r.sent_at else None,
            r.last_error,
        )
        for r in rows
    ]


def events(session: Session, send_id: int) -> list[EventRow]:
    e = EVENT.c
    rows = session.connection().execute(
        sa.select(e.subscriber_id, e.kind, e.status, e.reason)
        .where(e.send_id == send_id)
        .order_by(e.id)
    )
    return [EventRow(r.subscriber_id, str(r.kind), r.status, r.reason) for r in rows]


def next_send_started(session: Session, send_id: int) -> dt.datetime | None:
    """When the next send (of any issue) started: unsubscribes after it belong to it."""
    value = (
        session.connection()
        .execute(
            sa.select(sa.func.min(SEND.c.started_at)).where(
                SEND.c.id > send_id, SEND.c.started_at.is_not(None)
            )
        )
        .scalar()
    )
    if value is None:
        return None
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return as_utc(moment)


def lists_of(session: Session, send_id: int) -> list[tuple[int, str, str]]:
    """(id, slug, name) of the lists a send went to."""
    rows = session.connection().execute(
        sa.select(LIST.c.id, LIST.c.slug, LIST.c.name)
        .join(SEND_LIST, SEND_LIST.c.list_id == LIST.c.id)
        .where(SEND_LIST.c.send_id == send_id)
        .order_by(LIST.c.slug)
    )
    return [(r.id, r.slug, r.name) for r in rows]


def members(session: Session, send_id: int) -> dict[int, set[int]]:
    """For each list of the send, the recipients of the send who are (or were) on it."""
    m, d = MEMBERSHIP.c, DELIVERY.c
    rows = session.connection().execute(
        sa.select(m.list_id, m.subscriber_id)
        .join(SEND_LIST, SEND_LIST.c.list_id == m.list_id)
        .join(DELIVERY, sa.and_(d.subscriber_id == m.subscriber_id, d.send_id == send_id))
        .where(SEND_LIST.c.send_id == send_id)
    )
    found: dict[int, set[int]] = defaultdict(set)
    for list_id, subscriber_id in rows:
        found[list_id].add(subscriber_id)
    return found


def unsubscribed_between(
    session: Session, send_id: int, start: dt.datetime, end: dt.datetime | None
) -> set[int]:
    """Recipients of the send who left one of its lists (or everything) in [start, end)."""
    m, d, s = MEMBERSHIP.c, DELIVERY.c, SUBSCRIBER.c
    left_list = (
        sa.select(m.subscriber_id)
        .join(SEND_LIST, SEND_LIST.c.list_id == m.list_id)
        .where(
            SEND_LIST.c.send_id == send_id,
            m.status == MembershipStatus.UNSUBSCRIBED,
            m.changed_at >= start,
        )
    )
    left_all = sa.select(s.id).where(
        s.status.in_([SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.COMPLAINED]),
        s.updated >= start,
    )
    if end is not None:
        left_list = left_list.where(m.changed_at < end)
        left_all = left_all.where(s.updated < end)
    conn = session.connection()
    found = set(conn.execute(left_list).scalars()) | set(conn.execute(left_all).scalars())
    recipients = set(conn.execute(sa.select(d.subscriber_id).where(d.send_id == send_id)).scalars())
    return found & recipients
