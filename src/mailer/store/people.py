"""Queries on lists, subscribers and memberships; erasure.

Every function takes a session (from :meth:`mailer.store.database.Database.session`) and
expects email addresses already normalised by :func:`mailer.addresses.normalise`.
Functions that read many rows stream them with ``yield_per`` rather than loading them all.

:func:`set_status` applies the subscriber status rules of :mod:`mailer.store.status`;
:func:`erase` forgets a person; :func:`eligible_recipients` is who a send goes to. Who may
join a list is decided in :mod:`mailer.store.joining`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from mailer.errors import AlreadyExists, InvalidInput, NotFound, StateError, StoreError
from mailer.store import eligibility, signups, webmail
from mailer.store.connections import describe, store_error
from mailer.store.models import (
    CONSENT_SOURCE_LENGTH,
    BounceEvent,
    Consent,
    Delivery,
    MailingList,
    Membership,
    MembershipStatus,
    Send,
    Subscriber,
    SubscriberStatus,
    Suppression,
    SuppressionReason,
    table_of,
    utcnow,
)
from mailer.store.status import (
    OPERATOR_REACTIVATION,
    DeliveryStatus,
    mark_subscribers,
    set_subscriber_status,
    subscriber_may_be_reactivated,
)
from mailer.store.suppression import address_hash, hash_key

LIST_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
YIELD_PER = 1000
S, M, L, C = Subscriber, Membership, MailingList, Consent
_subscriber = table_of(Subscriber)


# --- Lists -----------------------------------------------------------------------------------


class ListSummary(NamedTuple):
    slug: str
    name: str
    subscribed: int  # active people on the list: the next issue goes to them
    unsubscribed: int  # left this list or everything, bounced or complained


def create_list(
    session: Session, slug: str, name: str, description: str = "", *, public: bool = False
) -> MailingList:
    if not LIST_SLUG.fullmatch(slug):
        raise InvalidInput(
            f"{slug!r} is not a valid list slug: use lower-case letters, digits and '-', "
            "like all-practitioners"
        )
    if not name.strip():
        raise InvalidInput("a list needs a name, for example --name 'All practitioners'")
    if find_list(session, slug):
        raise AlreadyExists(f"list {slug!r} exists already: see it with: mailer lists show {slug}")
    mailing_list = L(slug=slug, name=name.strip(), description=description.strip(), public=public)
    session.add(mailing_list)
    session.flush()
    return mailing_list


def find_list(session: Session, slug: str) -> MailingList | None:
    return session.exec(select(L).where(L.slug == slug)).first()


def get_list(session: Session, slug: str) -> MailingList:
    mailing_list = find_list(session, slug)
    if mailing_list is None:
        known = list(session.exec(select(MailingList.slug).order_by(col(MailingList.slug))))
        close = difflib.get_close_matches(slug, known, n=1, cutoff=0.6)
        # A typo is far likelier than a list nobody created: suggest the list it resembles.
        if close:
            hint = f"did you mean {close[0]!r}? (see the lists with: mailer lists list)"
        elif known:
            hint = (
                f"the lists are {', '.join(known[:10])}{', ...' if len(known) > 10 else ''}; "
                f"create a new one with: mailer lists create {slug} --name ..."
            )
        else:
            hint = f"there are no lists yet: create it with: mailer lists create {slug} --name ..."
        raise NotFound(f"no list {slug!r}: {hint}")
    return mailing_list


def rename_list(session: Session, slug: str, name: str) -> MailingList:
    if not name.strip():
        raise InvalidInput("the new name is empty")
    mailing_list = get_list(session, slug)
    mailing_list.name = name.strip()
    session.add(mailing_list)
    session.flush()
    return mailing_list


def _effective_status() -> Any:
    """A person's status on one list: their own status first, then the membership's."""
    return sa.case(
        (col(S.status) != SubscriberStatus.ACTIVE, col(S.status)),
        (col(M.status) == MembershipStatus.UNSUBSCRIBED, SubscriberStatus.UNSUBSCRIBED.value),
        else_=SubscriberStatus.ACTIVE.value,
    )


def status_counts(session: Session, list_id: int) -> dict[SubscriberStatus, int]:
    """How many people on a list are active, unsubscribed, bounced or complained."""
    status = _effective_status()
    rows = session.connection().execute(
        sa.select(status, sa.func.count())
        .select_from(M)
        .join(S, col(S.id) == col(M.subscriber_id))
        .where(col(M.list_id) == list_id)
        .group_by(status)
    )
    counts: dict[SubscriberStatus, int] = {
        s: 0 for s in SubscriberStatus if s != SubscriberStatus.ERASED
    }
    for value, n in rows:
        counts[SubscriberStatus(value)] = n
    return counts


def list_summaries(session: Session) -> list[ListSummary]:
    active = eligibility.on_the_list(table_of(S), table_of(M))
    rows = session.connection().execute(
        sa.select(
            col(L.slug),
            col(L.name),
            sa.func.count(col(S.id)).filter(active),
            sa.func.count(col(S.id)).filter(sa.not_(active)),
        )
        .select_from(L)
        .outerjoin(M, col(M.list_id) == col(L.id))
        .outerjoin(S, col(S.id) == col(M.subscriber_id))
        .group_by(col(L.id))
        .order_by(col(L.slug))
    )
    return [ListSummary(*row) for row in rows]


# --- Subscribers -----------------------------------------------------------------------------


def find_subscriber(session: Session, email: str) -> Subscriber | None:
    return session.exec(select(S).where(S.email == email)).first()


def get_subscriber(session: Session, email: str) -> Subscriber:
    subscriber = find_subscriber(session, email)
    if subscriber is None:
        raise NotFound(f"no subscriber {email}")
    return subscriber


def memberships_of(
    session: Session, subscriber_id: int
) -> list[tuple[Membership, MailingList, Consent | None]]:
    consent = sa.and_(
        col(C.subscriber_id) == col(M.subscriber_id), col(C.list_id) == col(M.list_id)
    )
    rows = session.exec(
        select(M, L, C)
        .join(L, col(L.id) == col(M.list_id))
        .outerjoin(C, consent)
        .where(M.subscriber_id == subscriber_id)
        .order_by(L.slug)
    )
    return [(m, ml, c) for m, ml, c in rows]


def set_status(
    session: Session, subscriber: Subscriber, status: SubscriberStatus, *, strict: bool = True
) -> bool:
    """Move a subscriber to ``status`` by the rules of :mod:`mailer.store.status`; True if it
    changed (see :func:`mailer.store.status.set_subscriber_status`)."""
    return set_subscriber_status(session, subscriber, status, strict=strict)


def _mark(session: Session, subscriber_ids: Iterable[int], status: SubscriberStatus) -> int:
    session.flush()
    changed = mark_subscribers(session.connection(), _subscriber, subscriber_ids, status)
    session.expire_all()
    return changed


def reactivate(
    session: Session, subscriber: Subscriber, since: dt.datetime | None, *, reason: str
) -> list[str]:
    """Undo a bounce or a complaint recorded in error: the person is active again.

    A complaint unsubscribed them from every list: the lists they left at ``since`` (the
    complaint's time) or later are joined again. Returns those lists' slugs.

    The consent evidence of every list they are on afterwards says so, with the reason
    (:func:`consent_with_reactivation`): why they may be mailed again is part of why they
    are on the list, next to the source of their original consent, which is kept.
    """
    if not subscriber_may_be_reactivated(subscriber.status):
        raise StateError(
            f"{subscriber.email} is {subscriber.status}: only someone bounced or complained "
            "can be reactivated"
        )
    was = subscriber.status
    set_subscriber_status(
        session, subscriber, SubscriberStatus.ACTIVE, because=OPERATOR_REACTIVATION
    )
    rejoined: list[str] = []
    if was == SubscriberStatus.COMPLAINED and since is not None:
        rows = session.exec(
            select(M, L)
            .join(L, col(L.id) == col(M.list_id))
            .where(
                M.subscriber_id == subscriber.id,
                M.status == MembershipStatus.UNSUBSCRIBED,
                col(M.changed_at) >= since - dt.timedelta(seconds=1),
            )
            .order_by(L.slug)
        )
        now = utcnow()
        for membership, mailing_list in rows:
            membership.status = MembershipStatus.SUBSCRIBED
            membership.changed_at = now
            session.add(membership)
            rejoined.append(mailing_list.slug)
    session.flush()
    note = f"{_NOTE_START}{utcnow():%Y-%m-%d} (was {was}): {reason}"
    for membership, _list, consent in memberships_of(session, subscriber.id or 0):
        if consent is not None and membership.status == MembershipStatus.SUBSCRIBED:
            consent.source = consent_with_reactivation(consent.source, note)
            session.add(consent)
    session.flush()
    return rejoined


_NOTE_SEPARATOR = "; "
_NOTE_START = "reactivated on "


def consent_with_reactivation(source: str, note: str) -> str:
    """A consent source with an operator's reactivation noted after it: the original
    source first (shortened only if it leaves no room for the note), then the newest
    notes that fit."""
    original, *older = source.split(_NOTE_SEPARATOR + _NOTE_START)
    newest = note[:200]
    original = original[: CONSENT_SOURCE_LENGTH - len(_NOTE_SEPARATOR) - len(newest)]
    kept = [newest]
    for entry in reversed([_NOTE_START + n for n in older]):
        length = len(original) + sum(len(_NOTE_SEPARATOR) + len(k) for k in kept)
        if length + len(_NOTE_SEPARATOR) + len(entry) > CONSENT_SOURCE_LENGTH:
            break
        kept.insert(0, entry)
    return _NOTE_SEPARATOR.join([original, *kept])


def mark_bounced(session: Session, subscriber_ids: Iterable[int]) -> int:
    """Record permanent delivery failures: these people are not mailed again.

    Returns how many changed; someone already unsubscribed, complained or erased keeps that.
    """
    return _mark(session, subscriber_ids, SubscriberStatus.BOUNCED)


def mark_complained(session: Session, subscriber_ids: Iterable[int]) -> int:
    """Record spam complaints (feedback-loop reports): these people are not mailed again."""
    return _mark(session, subscriber_ids, SubscriberStatus.COMPLAINED)


def unsubscribe(
    session: Session, subscriber: Subscriber, mailing_list: MailingList | None = None
) -> bool:
    """Unsubscribe from one list, or from everything; True if anything changed."""
    query = select(M).where(M.subscriber_id == subscriber.id)
    changed = False
    if mailing_list is not None:
        query = query.where(M.list_id == mailing_list.id)
    else:
        # Someone who bounced or complained keeps that stronger status.
        changed = set_status(session, subscriber, SubscriberStatus.UNSUBSCRIBED, strict=False)
    memberships = session.exec(query).all()
    if mailing_list is not None and not memberships:
        raise NotFound(f"{subscriber.email} is not on list {mailing_list.slug}")
    # Leaving everything also leaves each list, so no membership comes back to life if the
    # person ever signs up again.
    now = utcnow()
    for membership in memberships:
        if membership.status == MembershipStatus.SUBSCRIBED:
            membership.status = MembershipStatus.UNSUBSCRIBED
            membership.changed_at = now
            session.add(membership)
            changed = True
    session.flush()
    return changed


class SubscriberRow(NamedTuple):
    id: int
    email: str
    name: str
    organisation: str
    status: SubscriberStatus  # on the list, if one was asked for; else the person's own
    lists: str  # slugs of the lists the person is subscribed to, space-separated
    created: dt.datetime


def iter_subscribers(
    session: Session,
    *,
    list_id: int | None = None,
    status: SubscriberStatus | None = None,
    search: str | None = None,
) -> Iterator[SubscriberRow]:
    """Subscribers in id order, streamed; erased people are never included."""
    lists = (
        sa.select(sa.func.aggregate_strings(col(L.slug), " "))
        .select_from(M)
        .join(L, col(L.id) == col(M.list_id))
        .where(col(M.subscriber_id) == col(S.id), col(M.status) == MembershipStatus.SUBSCRIBED)
        .scalar_subquery()
    )
    effective: Any = col(S.status) if list_id is None else _effective_status()
    query = sa.select(
        col(S.id), col(S.email), col(S.name), col(S.organisation), effective, lists, col(S.created)
    ).where(col(S.email).is_not(None))
    if list_id is not None:
        on_list = sa.and_(col(M.subscriber_id) == col(S.id), col(M.list_id) == list_id)
        query = query.join(M, on_list)
    if status is not None:
        query = query.where(effective == status.value)
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        fields = (col(S.email), col(S.name), col(S.organisation))
        query = query.where(sa.or_(*(f.ilike(pattern, escape="\\") for f in fields)))
    rows = session.connection().execute(
        query.order_by(col(S.id)).execution_options(yield_per=YIELD_PER)
    )
    for sid, email, name, organisation, state, slugs, created in rows:
        yield SubscriberRow(
            sid, email, name, organisation, SubscriberStatus(state), slugs or "", created
        )


# --- Sending ---------------------------------------------------------------------------------


# Who a send goes to is the rule of mailer.store.eligibility: these are its names here.
EligiblePerson = eligibility.EligiblePerson
eligible_recipients = eligibility.recipients
count_eligible = eligibility.count


# --- Erasure ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Erasure:
    """What :func:`erase` removed, for the confirmation it prints."""

    email: str
    held: bool  # whether anything was held about the address
    already: bool  # it had been erased before
    name: bool
    organisation: bool
    lists: list[str]
    # (issue slug, Message-ID) of each copy sent, so files written for them can be removed.
    copies: list[tuple[str, str]] = field(default_factory=list)
    # What the database may still hold that erasure cannot reach (see clear_traces).
    remains: tuple[str, ...] = ()


def erase(session: Session, email: str) -> Erasure:
    """Delete everything held about ``email`` and suppress it for good.

    The subscriber row stays as an anonymous tombstone (no address, no name, status
    erased) so records that point at it stay consistent; memberships and their consent
    records are deleted. Tables added later that hold personal data must be cleared here.
    """
    digest = address_hash(hash_key(session), email)
    already = session.exec(select(Suppression).where(Suppression.email_hash == digest)).first()
    if already is None:
        session.add(Suppression(email_hash=digest, reason=SuppressionReason.ERASED))
    subscriber = session.exec(select(Subscriber).where(Subscriber.email == email)).first()
    signups.erase(session, email, subscriber.id if subscriber else None)
    webmail.erase(session, email)
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
    conn = session.connection()
    delivery, send = table_of(Delivery), table_of(Send)
    copies = [
        (slug, message_id)
        for slug, message_id in conn.execute(
            sa.select(send.c.slug, delivery.c.message_id)
            .join(send, send.c.id == delivery.c.send_id)
            .where(delivery.c.subscriber_id == subscriber.id, delivery.c.message_id != "")
        )
    ]
    erasure = Erasure(
        email,
        True,
        False,
        bool(subscriber.name),
        bool(subscriber.organisation),
        slugs,
        copies,
    )
    consent, membership = table_of(Consent), table_of(Membership)
    conn.execute(sa.delete(consent).where(consent.c.subscriber_id == subscriber.id))
    conn.execute(sa.delete(membership).where(membership.c.subscriber_id == subscriber.id))
    # The send ledger keeps a copy of the address and name for delivery: a copy not yet
    # sent is dropped (the person must not be mailed), the record of one sent is blanked,
    # and so is the server's last reply, which often quotes the address.
    conn.execute(
        sa.delete(delivery).where(
            delivery.c.subscriber_id == subscriber.id, delivery.c.status == DeliveryStatus.PENDING
        )
    )
    conn.execute(
        sa.update(delivery)
        .where(delivery.c.subscriber_id == subscriber.id)
        .values(email="", name="", last_error="")
    )
    # What a remote server said about the address may quote it: keep only the kind of event.
    bounce_event = table_of(BounceEvent)
    conn.execute(
        sa.update(bounce_event)
        .where(bounce_event.c.subscriber_id == subscriber.id)
        .values(reason="", address="")
    )
    # An unverified report that names the address, tied to nobody, is blanked the same way.
    conn.execute(
        sa.update(bounce_event)
        .where(sa.func.lower(bounce_event.c.address) == email.lower())
        .values(reason="", address="")
    )
    set_status(session, subscriber, SubscriberStatus.ERASED)
    subscriber.email, subscriber.name, subscriber.organisation = None, "", ""
    subscriber.updated = utcnow()
    session.add(subscriber)
    session.flush()
    return erasure


# The tables an erasure changes, and the indexes that hold addresses (see clear_traces).
_ERASED_FROM = ("subscriber", "consent", "membership", "delivery", "bounce_event", "signup")
_ADDRESS_INDEXES = ("uq_subscriber_email", "ix_signup_email")

# What an erasure on PostgreSQL cannot reach, said to whoever erases (docs/scaling.md).
POSTGRES_REMAINS = (
    "On PostgreSQL the erased rows' old versions were vacuumed and the indexes of addresses "
    "rebuilt; the address may remain in PostgreSQL's write-ahead log until it is recycled, "
    "and in its archive, replicas and backups until they expire (see docs/scaling.md)."
)


def clear_traces(engine: sa.Engine) -> list[str]:
    """Remove what the database keeps of erased rows beyond the rows themselves, after the
    erasure committed; returns what it could not reach, to be said.

    SQLite: fold the write-ahead log into the file and empty it (with secure_delete on,
    the freed pages are zeroed). PostgreSQL: an update leaves the old row version in the
    table, and the address in the indexes, until they are vacuumed, and vacuuming an index
    marks entries dead without overwriting them. VACUUM removes the old row versions
    without stopping anyone; REINDEX writes each index of addresses anew (a few moments in
    which other writers to that table wait; either the new index or the old one, never
    neither). VACUUM must run outside a transaction, hence a connection of its own.
    Running the erasure again runs this again, should it fail after the erasure committed.
    """
    dialect = engine.dialect.name
    try:
        if dialect == "sqlite":
            with engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            return []
        if dialect != "postgresql":
            return []
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in _ERASED_FROM:
                connection.exec_driver_sql(f'VACUUM "{table}"')
            for index in _ADDRESS_INDEXES:
                connection.exec_driver_sql(f'REINDEX INDEX "{index}"')
        return [POSTGRES_REMAINS]
    except SQLAlchemyError as exc:
        failed = store_error(describe(engine.url), exc)
        raise StoreError(
            f"{failed}; the erasure itself is done: run the same erase command again to clear "
            "the database's old copies"
        ) from exc
