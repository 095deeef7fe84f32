"""Queries on web sign-ups: pending, then the evidence of consent.

The limits on the forms count the queued emails (:mod:`mailer.store.webmail`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailer.store.models import Signup, Subscriber, table_of

_signup = table_of(Signup)


def create(
    session: Session,
    email: str | None,
    name: str,
    organisation: str,
    lists: Sequence[str],
    wording: str,
    ip: str,
) -> Signup:
    signup = Signup(
        email=email,
        name=name,
        organisation=organisation,
        lists=json.dumps(list(lists)),
        wording=wording,
        requested_ip=ip,
    )
    session.add(signup)
    session.flush()
    return signup


def create_placeholder(session: Session, lists: Sequence[str], wording: str) -> None:
    """The same write as :func:`create`, holding nothing about anyone: a sign-up that sends
    no email does the same work as one that does, so its time tells nobody whether the
    address was known. The next :func:`forget_unconfirmed` deletes it."""
    create(session, None, "", "", lists, wording, "")


def get(session: Session, signup_id: int) -> Signup | None:
    return session.get(Signup, signup_id)


def list_slugs(signup: Signup) -> list[str]:
    return [str(s) for s in json.loads(signup.lists)]


def confirmed(session: Session, signup: Signup, who: Subscriber, ip: str, now: dt.datetime) -> None:
    """Keep the sign-up as evidence of consent; the address and name now live in ``who``."""
    signup.confirmed_at, signup.confirmed_ip, signup.subscriber_id = now, ip, who.id
    signup.email, signup.name, signup.organisation = None, "", ""
    session.add(signup)
    session.flush()


def forget_unconfirmed(session: Session, older_than: dt.datetime) -> int:
    """Delete sign-ups nobody confirmed in time (they hold an address without consent), and
    the placeholders of :func:`create_placeholder`."""
    result = session.connection().execute(
        sa.delete(_signup).where(
            _signup.c.confirmed_at.is_(None),
            sa.or_(_signup.c.requested_at < older_than, _signup.c.email.is_(None)),
        )
    )
    return int(result.rowcount)


def of_subscriber(session: Session, subscriber_id: int) -> list[Signup]:
    query = select(Signup).where(Signup.subscriber_id == subscriber_id)
    return list(session.exec(query.order_by(col(Signup.id))))


def erase(session: Session, email: str, subscriber_id: int | None) -> None:
    """Delete every sign-up of a person being erased (see mailer.store.people.erase)."""
    condition = _signup.c.email == email
    if subscriber_id is not None:
        condition = sa.or_(condition, _signup.c.subscriber_id == subscriber_id)
    session.connection().execute(sa.delete(_signup).where(condition))
