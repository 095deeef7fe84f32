"""Queries on bounce events (the ``bounce_event`` table) and on the copies they are about.

A bounce, complaint or unsubscribe email is tied to one copy of a send (a ``delivery``
row), which names the send and the person. :func:`record` adds one event per thing a
message reports, keyed so the same message never counts twice. The run of failed sends
that decides a soft bounce is computed from the events, never kept as a counter that
could drift (:func:`failed_sends_in_a_row`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailer.store.models import (
    BounceEvent,
    Delivery,
    MailingList,
    Membership,
    MembershipStatus,
    SendList,
    Subscriber,
    as_utc,
    table_of,
)
from mailer.store.status import BounceKind, DeliveryStatus

EVENT = table_of(BounceEvent)
DELIVERY = table_of(Delivery)
MEMBERSHIP = table_of(Membership)
SEND_LIST = table_of(SendList)
LIST = table_of(MailingList)
# Kinds that mean a copy did not reach its reader.
FAILED = (BounceKind.HARD, BounceKind.FULL, BounceKind.SOFT)
# How far back the run of failed sends is looked for: well past any sensible soft_limit.
LOOK_BACK = 50


@dataclass(frozen=True)
class Target:
    """The copy a message is about: its ledger row, send and person."""

    delivery_id: int | None
    send_id: int
    subscriber_id: int
    email: str = ""  # the address the copy went to ("" once the person is erased)


def _target(row: Any) -> Target | None:
    return None if row is None else Target(row.id, row.send_id, row.subscriber_id, row.email)


def by_delivery(session: Session, delivery_id: int) -> Target | None:
    d = DELIVERY.c
    query = sa.select(d.id, d.send_id, d.subscriber_id, d.email).where(d.id == delivery_id)
    return _target(session.connection().execute(query).first())


def by_send_and_subscriber(session: Session, send_id: int, subscriber_id: int) -> Target | None:
    """The copy of a send one person was due (an unsubscribe token names both)."""
    d = DELIVERY.c
    row = (
        session.connection()
        .execute(
            sa.select(d.id, d.send_id, d.subscriber_id, d.email).where(
                d.send_id == send_id, d.subscriber_id == subscriber_id
            )
        )
        .first()
    )
    if row is not None:
        return _target(row)
    return None


def latest_to(session: Session, email: str) -> Target | None:
    """The newest copy sent to ``email``: how a report naming only an address is tied."""
    d = DELIVERY.c
    row = (
        session.connection()
        .execute(
            sa.select(d.id, d.send_id, d.subscriber_id, d.email)
            .where(d.email == email, d.status == DeliveryStatus.SENT)
            .order_by(d.send_id.desc())
            .limit(1)
        )
        .first()
    )
    return _target(row)


def known_addresses(session: Session, emails: list[str]) -> set[str]:
    """Which of ``emails`` (lower-case) belong to people mailer holds."""
    if not emails:
        return set()
    s = table_of(Subscriber).c
    rows = session.connection().execute(sa.select(s.email).where(s.email.in_(emails[:200])))
    return {str(r[0]).lower() for r in rows}


def subscriber(session: Session, subscriber_id: int) -> Subscriber | None:
    return session.get(Subscriber, subscriber_id)


def seen(session: Session, key_prefix: str) -> bool:
    """Whether a message with this key was processed already."""
    row = (
        session.connection()
        .execute(
            sa.select(EVENT.c.id)
            .where(EVENT.c.key.startswith(key_prefix, autoescape=True))
            .limit(1)
        )
        .first()
    )
    return row is not None


def kind_of(session: Session, key_prefix: str) -> BounceKind | None:
    """The kind recorded for a message processed before, for where to file it again."""
    value = (
        session.connection()
        .execute(
            sa.select(EVENT.c.kind)
            .where(EVENT.c.key.startswith(key_prefix, autoescape=True))
            .order_by(EVENT.c.id)
            .limit(1)
        )
        .scalar()
    )
    return None if value is None else BounceKind(value)


def record(
    session: Session,
    *,
    key: str,
    kind: BounceKind,
    target: Target | None,
    status: str = "",
    reason: str = "",
    source: str = "",
    verified: bool = True,
    address: str = "",
) -> BounceEvent:
    """Add one event; the caller commits, after the policy has filled in ``action``."""
    event = BounceEvent(
        verified=verified,
        address=address[:320],
        key=key[:200],
        kind=kind,
        send_id=target.send_id if target else None,
        subscriber_id=target.subscriber_id if target else None,
        delivery_id=target.delivery_id if target else None,
        status=status[:20],
        reason=reason[:1000],
        source=source[:200],
    )
    session.add(event)
    return event


def failed_sends_in_a_row(session: Session, subscriber_id: int, up_to_send: int) -> int:
    """How many of the person's latest sends, up to ``up_to_send``, failed in a row.

    A send counts as failed when a hard or temporary failure was reported for their copy;
    the first newer-to-older send without one (it reached them) ends the run.
    """
    d, e = DELIVERY.c, EVENT.c
    # An operator's reactivation starts the count again.
    reactivated = (
        sa.select(sa.func.max(e.received_at))
        .where(e.subscriber_id == subscriber_id, e.kind == BounceKind.REACTIVATED)
        .scalar_subquery()
    )
    failed = (
        sa.select(e.id)
        .where(
            e.subscriber_id == d.subscriber_id,
            e.send_id == d.send_id,
            e.kind.in_([k.value for k in FAILED]),
            e.verified == sa.true(),
            sa.or_(reactivated.is_(None), e.received_at > reactivated),
        )
        .exists()
    )
    rows = session.connection().execute(
        sa.select(d.send_id, failed)
        .where(
            d.subscriber_id == subscriber_id,
            d.send_id <= up_to_send,
            d.status == DeliveryStatus.SENT,
        )
        .order_by(d.send_id.desc())
        .limit(LOOK_BACK)
    )
    count = 0
    for _send_id, has_failed in rows:
        if not has_failed:
            break
        count += 1
    return count


def lists_of_send_for(session: Session, send_id: int, subscriber_id: int) -> list[MailingList]:
    """The lists a send went to that the person is subscribed to."""
    query = (
        select(MailingList)
        .join(SendList, col(SendList.list_id) == col(MailingList.id))
        .join(Membership, col(Membership.list_id) == col(MailingList.id))
        .where(
            SendList.send_id == send_id,
            Membership.subscriber_id == subscriber_id,
            Membership.status == MembershipStatus.SUBSCRIBED,
        )
        .order_by(col(MailingList.slug))
    )
    return list(session.exec(query))


@dataclass(frozen=True)
class BounceEventRow:
    received_at: dt.datetime
    kind: str
    send_id: int | None
    status: str
    reason: str
    source: str
    action: str


def events_of(session: Session, subscriber_id: int, limit: int = 100) -> list[BounceEventRow]:
    """What came back about one person, newest first, for ``mailer subscribers show``."""
    e = EVENT.c
    rows = session.connection().execute(
        sa.select(e.received_at, e.kind, e.send_id, e.status, e.reason, e.source, e.action)
        .where(e.subscriber_id == subscriber_id)
        .order_by(e.id.desc())
        .limit(limit)
    )
    return [
        BounceEventRow(
            as_utc(r.received_at), str(r.kind), r.send_id, r.status, r.reason, r.source, r.action
        )
        for r in rows
    ]


def unrecognised_count(session: Session, since: dt.datetime | None = None) -> int:
    query = sa.select(sa.func.count()).where(EVENT.c.kind == BounceKind.UNRECOGNISED)
    if since is not None:
        query = query.where(EVENT.c.received_at >= since)
    return int(session.connection().execute(query).scalar_one())


def counts_since(session: Session, since: dt.datetime | None = None) -> tuple[int, int]:
    """(unverified reports not yet applied, quarantined messages) since ``since``."""
    e = EVENT.c
    unverified = sa.and_(
        e.verified == sa.false(),
        e.subscriber_id.is_(None),
        e.kind != BounceKind.QUARANTINED,
    )
    query = sa.select(
        sa.func.count().filter(unverified),
        sa.func.count().filter(e.kind == BounceKind.QUARANTINED),
    )
    if since is not None:
        query = query.where(e.received_at >= since)
    row = session.connection().execute(query).one()
    return int(row[0]), int(row[1])


@dataclass(frozen=True)
class ListedEvent:
    """One row of ``mailer bounces list``."""

    id: int
    received_at: dt.datetime
    kind: str
    verified: bool
    address: str  # the address the report names (unverified), or the person's
    subscriber_id: int | None
    send_id: int | None
    status: str
    reason: str
    source: str
    action: str


def listing(
    session: Session,
    *,
    unverified: bool = False,
    quarantined: bool = False,
    limit: int = 50,
) -> list[ListedEvent]:
    """The latest events, newest first: all of them, or only unverified or quarantined."""
    e, s = EVENT.c, table_of(Subscriber).c
    query = sa.select(
        e.id,
        e.received_at,
        e.kind,
        e.verified,
        sa.func.coalesce(sa.func.nullif(e.address, ""), s.email, "").label("address"),
        e.subscriber_id,
        e.send_id,
        e.status,
        e.reason,
        e.source,
        e.action,
    ).outerjoin(table_of(Subscriber), s.id == e.subscriber_id)
    if unverified:
        query = query.where(e.verified == sa.false(), e.kind != BounceKind.QUARANTINED)
    if quarantined:
        query = query.where(e.kind == BounceKind.QUARANTINED)
    rows = session.connection().execute(query.order_by(e.id.desc()).limit(limit))
    return [
        ListedEvent(
            r.id,
            as_utc(r.received_at),
            str(r.kind),
            bool(r.verified),
            r.address or "",
            r.subscriber_id,
            r.send_id,
            r.status,
            r.reason,
            r.source,
            r.action,
        )
        for r in rows
    ]


def event(session: Session, event_id: int) -> BounceEvent | None:
    return session.get(BounceEvent, event_id)


def record_reactivation(session: Session, subscriber_id: int, *, reason: str, action: str) -> None:
    """Keep an operator's reactivation in the person's history; it also ends the run of
    failed sends before it (:func:`failed_sends_in_a_row`)."""
    session.add(
        BounceEvent(
            key=f"reactivated:{subscriber_id}:{uuid.uuid4().hex}",
            kind=BounceKind.REACTIVATED,
            subscriber_id=subscriber_id,
            reason=reason[:1000],
            source="mailer subscribers reactivate",
            action=action[:200],
        )
    )
    session.flush()


def latest_complaint_at(session: Session, subscriber_id: int) -> dt.datetime | None:
    """When the person's latest applied complaint was recorded (for reactivation)."""
    e = EVENT.c
    value = (
        session.connection()
        .execute(
            sa.select(sa.func.max(e.received_at)).where(
                e.subscriber_id == subscriber_id, e.kind == BounceKind.COMPLAINT
            )
        )
        .scalar()
    )
    return None if value is None else as_utc(value)


def count_from(session: Session, source: str, kind: BounceKind, since: dt.datetime) -> int:
    """How many events of ``kind`` came from ``source`` since ``since``."""
    e = EVENT.c
    query = sa.select(sa.func.count()).where(
        e.source == source, e.kind == kind, e.received_at >= since
    )
    return int(session.connection().execute(query).scalar_one())
