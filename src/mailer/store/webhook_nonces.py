"""Queries behind the relays' webhooks: the one-time values their signed requests carry.

A request a relay signed can be captured and sent again. Mailgun signs a token and a time,
not the body, so the same token under another body is a forgery; an SNS message has its
MessageId. :func:`remember` keeps each value with a hash of the body it came with; the
events themselves are made idempotent by their keys in ``bounce_event``
(:mod:`mailer.store.bounces`).
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Session

from mailer.store.models import WebhookNonce, table_of

NONCE = table_of(WebhookNonce)
# Longer than any window a signed request is accepted in, so a value is never forgotten
# while its request could still be accepted.
KEEP = dt.timedelta(days=3)


class Seen(StrEnum):
    NEW = "new"  # first time: go on
    SAME = "same"  # the same request again: nothing to do
    OTHER = "other"  # the value came before with another body: a replay, refused


def remember(session: Session, provider: str, nonce: str, digest: str, now: dt.datetime) -> Seen:
    """Record ``nonce`` for ``provider`` unless it is known; whether it was, and how."""
    n = NONCE.c
    conn = session.connection()
    known = conn.execute(
        sa.select(n.digest).where(n.provider == provider, n.nonce == nonce[:200])
    ).scalar()
    if known is not None:
        return Seen.SAME if known == digest else Seen.OTHER
    conn.execute(sa.delete(NONCE).where(n.received_at < now - KEEP))
    session.add(
        WebhookNonce(provider=provider, nonce=nonce[:200], digest=digest[:64], received_at=now)
    )
    session.flush()
    return Seen.NEW
