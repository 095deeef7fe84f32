"""Addresses that must never be mailed or imported again, and erasure.

Erasure (UK GDPR Article 17) deletes what is held about a person but must not let the
address come back with the next spreadsheet. So mailer keeps, in the ``suppression``
table, only an HMAC-SHA256 of the normalised address keyed with ``MAILER_SECRET_KEY``:
enough to recognise the address when it is offered again, useless for recovering it.
Keep the key safe and unchanged: with a different key old hashes no longer match.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailer import db
from mailer.models import (
    Consent,
    Delivery,
    DeliveryStatus,
    MailingList,
    Membership,
    Subscriber,
    SubscriberStatus,
    Suppression,
    SuppressionReason,
    table_of,
    utcnow,
)

# Addresses per IN (...) query: well under SQLite's limit on bound parameters.
CHUNK = 500


def address_hash(key: bytes, email: str) -> str:
    """The keyed hash kept instead of an erased address: HMAC-SHA256, in hex."""
    return hmac.new(key, email.encode("utf-8"), hashlib.sha256).hexdigest()


def hash_key(session: Session) -> bytes:
    """MAILER_SECRET_KEY, from the settings the session's database was opened with."""
    return db.settings_for(session).require_secret_key()


def any_suppressed(session: Session) -> bool:
    return session.exec(select(Suppression.id).limit(1)).first() is not None


def erased_among(session: Session, emails: Sequence[str]) -> set[str]:
    """The addresses in ``emails`` whose hash is on the suppression list."""
    if not emails or not any_suppressed(session):
        return set()
    key = hash_key(session)
    digests = {address_hash(key, e): e for e in emails}
    found: set[str] = set()
    keys = list(digests)
    for start in range(0, len(keys), CHUNK):
        part = keys[start : start + CHUNK]
        found.update(
            session.exec(
                select(Suppression.email_hash).where(col(Suppression.email_hash).in_(part))
            )
        )
    return {digests[d] for d in found}


def all_hashes(session: Session) -> set[str]:
    return set(session.exec(select(Suppression.email_hash)))


def suppression_of(session: Session, email: str) -> Suppression | None:
    digest = address_hash(hash_key(session), email)
    return session.exec(select(Suppression).where(Suppression.email_hash == digest)).first()


@dataclass(frozen=True)
class Erasure:
    """What :func:`erase` removed, for the confirmation it prints."""

    email: str
    held: bool  # whether anything was held about the address
    already: bool  # it had been erased before
    name: bool
    organisation: bool
    lists: list[str]


def erase(session: Session, email: str) -> Erasure:
    """Delete everything held about ``email`` and suppress it for good.

    The subscriber row stays as an anonymous tombstone (no address, no name, status
    erased) so records that point at it stay consistent; memberships and their consent
    records are deleted. Tables added later that hold personal data must be cleared here.
    """
    from mailer.store import set_status  # store builds on this module

    digest = address_hash(hash_key(session), email)
    already = session.exec(select(Suppression).where(Suppression.email_hash == digest)).first()
    if already is None:
        session.add(Suppression(email_hash=digest, reason=SuppressionReason.ERASED))
    subscriber = session.exec(select(Subscriber).where(Subscriber.email == email)).first()
    if subscriber is None:
        session.flush()
        return Erasure(email, False, already is not None, False, False, [])
    slugs = list(
        session.exec(
            select(MailingList.slug)
            .join(Membership, col(Membership.list_id) == col(MailingList.id))
            .where(Membership.subscriber_id == subscriber.id)
            .order_by(MailingList.slug)
        )
    )
    erasure = Erasure(
        email, True, False, bool(subscriber.name), bool(subscriber.organisation), slugs
    )
    conn = session.connection()
    consent, membership = table_of(Consent), table_of(Membership)
    conn.execute(sa.delete(consent).where(consent.c.subscriber_id == subscriber.id))
    conn.execute(sa.delete(membership).where(membership.c.subscriber_id == subscriber.id))
    # The send ledger keeps a copy of the address and name for delivery: a copy not yet
    # sent is dropped (the person must not be mailed), the record of one sent is blanked.
    delivery = table_of(Delivery)
    conn.execute(
        sa.delete(delivery).where(
            delivery.c.subscriber_id == subscriber.id, delivery.c.status == DeliveryStatus.PENDING
        )
    )
    conn.execute(
        sa.update(delivery)
        .where(delivery.c.subscriber_id == subscriber.id)
        .values(email="", name="")
    )
    set_status(session, subscriber, SubscriberStatus.ERASED)
    subscriber.email, subscriber.name, subscriber.organisation = None, "", ""
    subscriber.updated = utcnow()
    session.add(subscriber)
    session.flush()
    return erasure
