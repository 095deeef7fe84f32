"""Addresses that must never be mailed or imported again, kept as keyed hashes.

Erasure (UK GDPR Article 17) deletes what is held about a person but must not let the
address come back with the next spreadsheet. So mailer keeps, in the ``suppression``
table, only an HMAC-SHA256 of the normalised address keyed with the suppression key:
enough to recognise the address when it is offered again, useless for recovering it.
The hashes' key is kept in the database wrapped with the signing key, so a rotation of
the signing key (``mailer key rotate``) keeps every hash valid.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from sqlmodel import Session, col, select

from mailer.store import keys
from mailer.store.database import settings_for
from mailer.store.models import Suppression

# Addresses per IN (...) query: well under SQLite's limit on bound parameters.
CHUNK = 500


def address_hash(key: bytes, email: str) -> str:
    """The keyed hash kept instead of an erased address: HMAC-SHA256, in hex."""
    return hmac.new(key, email.encode("utf-8"), hashlib.sha256).hexdigest()


def hash_key(session: Session) -> bytes:
    """The key of the suppression hashes (see :mod:`mailer.store.keys`)."""
    return keys.suppression_key(session, settings_for(session))


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
