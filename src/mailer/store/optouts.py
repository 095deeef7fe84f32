"""Queries behind the personal web pages: whom a link names, their lists, unsubscribing with
a record of when and how, and joining a list by a person's own confirmed choice.

Subscribing someone again after they left is refused everywhere else in mailer
(:mod:`mailer.store.joining`); here it is allowed because the person asked for it from
their own mailbox (a confirmed sign-up, or their preferences page).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlmodel import Session, col, select

from mailer.store import people
from mailer.store.models import (
    Consent,
    LawfulBasis,
    MailingList,
    Membership,
    MembershipStatus,
    SendList,
    Subscriber,
    SubscriberStatus,
    UnsubscribeMethod,
    Unsubscription,
    utcnow,
)
from mailer.store.status import CONFIRMED_SIGN_UP, set_subscriber_status


def subscriber(session: Session, subscriber_id: int) -> Subscriber | None:
    return session.get(Subscriber, subscriber_id)


def lists_of_send(session: Session, send_id: int) -> list[MailingList]:
    query = (
        select(MailingList)
        .join(SendList, col(SendList.list_id) == col(MailingList.id))
        .where(SendList.send_id == send_id)
        .order_by(col(MailingList.name))
    )
    return list(session.exec(query))


def public_lists(session: Session) -> list[MailingList]:
    query = select(MailingList).where(col(MailingList.public).is_(True))
    return list(session.exec(query.order_by(col(MailingList.name))))


def set_public(session: Session, slug: str, public: bool) -> MailingList:
    mailing_list = people.get_list(session, slug)
    mailing_list.public = public
    session.add(mailing_list)
    session.flush()
    return mailing_list


def subscribed_list_ids(session: Session, subscriber_id: int) -> set[int]:
    query = select(Membership.list_id).where(
        Membership.subscriber_id == subscriber_id,
        Membership.status == MembershipStatus.SUBSCRIBED,
    )
    return set(session.exec(query))


def unsubscribe(
    session: Session,
    who: Subscriber,
    lists: Sequence[MailingList] | None,
    method: UnsubscribeMethod,
    send_id: int | None = None,
) -> bool:
    """Unsubscribe from ``lists`` (None: from everything) and record when and how.

    Idempotent: a second call changes nothing and records nothing. True if anything changed.
    """
    assert who.id is not None
    # The time is read inside the transaction, after its first statement took the write
    # lock, so it is later than any ledger mark committed before this unsubscribe.
    on = subscribed_list_ids(session, who.id)
    now = utcnow()
    changed = False
    if lists is None:
        changed = people.unsubscribe(session, who)
        if changed:
            session.add(
                Unsubscription(subscriber_id=who.id, method=method, send_id=send_id, at=now)
            )
    else:
        for mailing_list in lists:
            if mailing_list.id in on and people.unsubscribe(session, who, mailing_list):
                changed = True
                session.add(
                    Unsubscription(
                        subscriber_id=who.id,
                        list_id=mailing_list.id,
                        method=method,
                        send_id=send_id,
                        at=now,
                    )
                )
    session.flush()
    return changed


def unsubscriptions(session: Session, subscriber_id: int) -> list[Unsubscription]:
    query = select(Unsubscription).where(Unsubscription.subscriber_id == subscriber_id)
    return list(session.exec(query.order_by(col(Unsubscription.id))))


def join(
    session: Session,
    who: Subscriber,
    lists: Sequence[MailingList],
    *,
    source: str,
    now: dt.datetime | None = None,
) -> list[str]:
    """Put ``who`` on ``lists`` by their own confirmed choice; the slugs of lists joined.

    A consent record (lawful basis: consent, confirmed now) replaces any older one, and a
    person who had unsubscribed from everything or bounced becomes active again.
    """
    assert who.id is not None
    now = now or utcnow()
    # Back to active if they had unsubscribed from everything or bounced: the rule of
    # mailer.store.status (anything else, such as a complaint, stays as it is).
    set_subscriber_status(
        session, who, SubscriberStatus.ACTIVE, because=CONFIRMED_SIGN_UP, strict=False, now=now
    )
    joined: list[str] = []
    for mailing_list in lists:
        membership = session.get(Membership, (who.id, mailing_list.id))
        if membership is not None and membership.status == MembershipStatus.SUBSCRIBED:
            continue
        assert mailing_list.id is not None
        if membership is None:
            membership = Membership(subscriber_id=who.id, list_id=mailing_list.id)
            session.add(membership)
            session.flush()
        membership.status = MembershipStatus.SUBSCRIBED
        membership.changed_at = now
        session.add(membership)
        consent = session.get(Consent, (who.id, mailing_list.id)) or Consent(
            subscriber_id=who.id, list_id=mailing_list.id, basis=LawfulBasis.CONSENT, source=""
        )
        consent.basis = LawfulBasis.CONSENT
        consent.source = source
        consent.recorded_at = now
        consent.confirmed_at = now
        session.add(consent)
        joined.append(mailing_list.slug)
    session.flush()
    return joined


def update_details(session: Session, who: Subscriber, name: str, organisation: str) -> bool:
    """Change a person's name and organisation from their preferences page."""
    if (who.name, who.organisation) == (name, organisation):
        return False
    who.name, who.organisation, who.updated = name, organisation, utcnow()
    session.add(who)
    session.flush()
    return True
