"""Who may join a list: one set of rules for ``subscribers add`` and ``subscribers import``.

A person who unsubscribed from everything, bounced, complained or was erased is never
subscribed again by mailer, and neither is someone who left the list in question. Only
their own confirmed sign-up could change that, which is not done here.

:func:`subscribe_many` works on batches of distinct addresses with a handful of queries
per batch, so a 100,000-row import stays well within seconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlmodel import Session

from mailer.formats import day
from mailer.store.connections import refresh_statistics_if_grown
from mailer.store.models import (
    Consent,
    LawfulBasis,
    MailingList,
    Membership,
    MembershipStatus,
    Subscriber,
    SubscriberStatus,
    UTCDateTime,
    table_of,
    utcnow,
)
from mailer.store.status import NEW_SUBSCRIBER
from mailer.store.suppression import CHUNK, erased_among

_T = TypeVar("_T")
_subscriber = table_of(Subscriber)
_membership = table_of(Membership)
_consent = table_of(Consent)


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


class JoinOutcome(StrEnum):
    ADDED = "added"
    ALREADY = "already on the list"
    UPDATED = "updated"
    SUPPRESSED = "suppressed"


@dataclass(frozen=True)
class Candidate:
    """A normalised address to put on a list, and where it came from (line 0: a command)."""

    email: str
    name: str = ""
    organisation: str = ""
    line: int = 0


@dataclass(frozen=True)
class Decision:
    candidate: Candidate
    outcome: JoinOutcome
    reason: str = ""


@dataclass
class _Known:
    """What the database already holds about an address."""

    id: int
    status: SubscriberStatus
    name: str
    organisation: str
    membership: MembershipStatus | None = None


def _known(session: Session, emails: Sequence[str], list_id: int | None) -> dict[str, _Known]:
    # Timestamps are left out on purpose: parsing two per row costs more than the rest of
    # the query, and only the few people who are skipped need one (see _reasons).
    conn = session.connection()
    s, m = _subscriber.c, _membership.c
    known: dict[str, _Known] = {}
    for part in _chunks(emails):
        query = sa.select(s.id, s.email, s.status, s.name, s.organisation)
        for sid, email, status, name, organisation in conn.execute(query.where(s.email.in_(part))):
            known[email] = _Known(sid, status, name, organisation)
    if list_id is not None and known:
        by_id = {k.id: k for k in known.values()}
        for ids in _chunks(list(by_id)):
            query = sa.select(m.subscriber_id, m.status)
            for sid, status in conn.execute(
                query.where(m.list_id == list_id, m.subscriber_id.in_(ids))
            ):
                by_id[sid].membership = status
    return known


def status_reason(status: SubscriberStatus, since: dt.datetime) -> str:
    """Why someone with this status is not subscribed again, in words for a report."""
    return {
        SubscriberStatus.UNSUBSCRIBED: f"unsubscribed from everything on {day(since)}",
        SubscriberStatus.BOUNCED: f"bounced on {day(since)} (the address does not work)",
        SubscriberStatus.COMPLAINED: f"reported a newsletter as spam on {day(since)}",
        SubscriberStatus.ERASED: "was erased on request",
    }[status]


def _dates(
    session: Session, column: sa.Column[Any], key: sa.Column[Any], ids: list[int], *where: Any
) -> dict[int, dt.datetime]:
    dates: dict[int, dt.datetime] = {}
    for part in _chunks(ids):
        query = sa.select(key, column).where(key.in_(part), *where)
        dates.update((sid, when) for sid, when in session.connection().execute(query))
    return dates


def _reasons(
    session: Session, erased: set[str], known: dict[str, _Known], list_id: int | None
) -> dict[str, str]:
    reasons = {email: "was erased on request" for email in erased}
    inactive = {e: k for e, k in known.items() if e not in reasons and k.status != "active"}
    left = {
        e: k
        for e, k in known.items()
        if e not in reasons and e not in inactive and k.membership == "unsubscribed"
    }
    s, m = _subscriber.c, _membership.c
    updated = _dates(session, s.updated, s.id, [k.id for k in inactive.values()])
    for email, k in inactive.items():
        reasons[email] = status_reason(k.status, updated[k.id])
    changed = _dates(
        session, m.changed_at, m.subscriber_id, [k.id for k in left.values()], m.list_id == list_id
    )
    for email, k in left.items():
        reasons[email] = f"unsubscribed from this list on {day(changed[k.id])}"
    return reasons


def why_suppressed(session: Session, email: str, list_id: int | None = None) -> str | None:
    """Why ``email`` must not be (re-)subscribed (to ``list_id``), or None if it may be."""
    known = _known(session, [email], list_id)
    return _reasons(session, erased_among(session, [email]), known, list_id).get(email)


def is_suppressed(session: Session, email: str) -> bool:
    """Whether ``email`` was erased, unsubscribed from everything, bounced or complained."""
    return why_suppressed(session, email) is not None


def _join(
    conn: sa.Connection,
    list_id: int,
    who: sa.ColumnElement[bool],
    basis: LawfulBasis,
    source: str,
    now: dt.datetime,
) -> None:
    """Put the subscribers matching ``who`` on the list with a consent record, set-based:
    INSERT ... SELECT binds each value once, not once per person."""
    s = _subscriber.c
    conn.execute(
        sa.insert(_membership).from_select(
            ["subscriber_id", "list_id", "status", "changed_at"],
            sa.select(
                s.id,
                sa.literal(list_id),
                sa.literal(MembershipStatus.SUBSCRIBED.value),
                sa.literal(now, UTCDateTime()),
            ).where(who),
        )
    )
    conn.execute(
        sa.insert(_consent).from_select(
            ["subscriber_id", "list_id", "basis", "source", "recorded_at"],
            sa.select(
                s.id,
                sa.literal(list_id),
                sa.literal(basis.value),
                sa.literal(source),
                sa.literal(now, UTCDateTime()),
            ).where(who),
        )
    )


def subscribe_many(
    session: Session,
    mailing_list: MailingList,
    candidates: Sequence[Candidate],
    *,
    basis: LawfulBasis,
    source: str,
    now: dt.datetime | None = None,
) -> list[Decision]:
    """Put distinct, normalised addresses on a list, recording consent for new members.

    Existing people take a non-empty name or organisation from the candidate if it
    differs. Anyone :func:`why_suppressed` names is skipped, never re-subscribed.
    """
    assert mailing_list.id is not None
    list_id, now = mailing_list.id, now or utcnow()
    emails = [c.email for c in candidates]
    known = _known(session, emails, list_id)
    reasons = _reasons(session, erased_among(session, emails), known, list_id)
    decisions: list[Decision] = []
    fresh: list[Candidate] = []  # new people
    joining: list[int] = []  # people already known, new to this list
    updates: list[dict[str, Any]] = []
    for c in candidates:
        k = known.get(c.email)
        if c.email in reasons:
            decisions.append(Decision(c, JoinOutcome.SUPPRESSED, reasons[c.email]))
        elif k is None:
            fresh.append(c)
            decisions.append(Decision(c, JoinOutcome.ADDED))
        else:
            name, organisation = c.name or k.name, c.organisation or k.organisation
            changed = (name, organisation) != (k.name, k.organisation)
            if changed:
                updates.append({"sid": k.id, "n": name, "o": organisation, "u": now})
            if k.membership is None:
                joining.append(k.id)
                decisions.append(Decision(c, JoinOutcome.ADDED))
            else:
                decisions.append(
                    Decision(c, JoinOutcome.UPDATED if changed else JoinOutcome.ALREADY)
                )

    conn = session.connection()
    if fresh:
        # executemany, without RETURNING: SQLite would then insert one row per statement.
        conn.execute(
            sa.insert(_subscriber),
            [
                {
                    "email": c.email,
                    "name": c.name,
                    "organisation": c.organisation,
                    "status": NEW_SUBSCRIBER,
                    "created": now,
                    "updated": now,
                }
                for c in fresh
            ],
        )
        refresh_statistics_if_grown(conn, "subscriber")
        for part in _chunks([c.email for c in fresh]):
            _join(conn, list_id, _subscriber.c.email.in_(part), basis, source, now)
    for ids in _chunks(joining):
        _join(conn, list_id, _subscriber.c.id.in_(ids), basis, source, now)
    refresh_statistics_if_grown(conn, "membership")
    if updates:
        s = _subscriber.c
        values: dict[str, Any] = {
            "name": sa.bindparam("n"),
            "organisation": sa.bindparam("o"),
            "updated": sa.bindparam("u"),
        }
        conn.execute(
            sa.update(_subscriber).where(s.id == sa.bindparam("sid")).values(values), updates
        )
    return decisions
