"""Queries on the web side's outgoing mail (``web_mail``): queueing, counting against the
limits, claiming, outcomes, erasure and the queue's health.

Every function takes the time as an argument, so tests move it with a fake clock.

Claims are safe across processes (``mailer serve`` and ``mailer worker`` both send): on
SQLite a writer's BEGIN IMMEDIATE lets one claimer in at a time; on PostgreSQL the claim
reads with ``FOR UPDATE SKIP LOCKED``, so two claimers take different rows. A claim holds
until ``claimed_until``; a sender that died lets its rows go to the next one after it.

Queueing and counting run under one lock per database (SQLite's write lock, an advisory
lock on PostgreSQL), so two processes cannot both squeeze under a limit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session

from mailer.store.connections import one_at_a_time
from mailer.store.models import WebMail, table_of
from mailer.store.status import WEB_MAIL_COUNTED, WebMailStatus

_mail = table_of(WebMail)
# The advisory lock of queueing on PostgreSQL ("webmal").
QUEUE_LOCK = 0x7765626D616C
# Rows that went, failed or were skipped are kept this long (without address or message)
# for the limits' windows, then deleted.
KEEP = dt.timedelta(days=2)
_OPEN = (WebMailStatus.QUEUED, WebMailStatus.SENDING)


@dataclass(frozen=True)
class Queued:
    """One email to send, as a claim hands it to the sender."""

    id: int
    kind: str
    recipient: str
    message: bytes
    attempts: int
    expires_at: dt.datetime


def lock(session: Session) -> None:
    """Hold the queue's lock until the session's transaction ends (see the module doc)."""
    one_at_a_time(session.connection(), QUEUE_LOCK)


def count(
    session: Session,
    since: dt.datetime,
    *,
    kind: str | None = None,
    mailbox_key: str | None = None,
    network_key: str | None = None,
) -> int:
    """How many emails that went or may still go were queued since ``since``."""
    query = (
        sa.select(sa.func.count())
        .select_from(_mail)
        .where(_mail.c.queued_at >= since, _mail.c.status.in_([s.value for s in WEB_MAIL_COUNTED]))
    )
    if kind is not None:
        query = query.where(_mail.c.kind == kind)
    if mailbox_key is not None:
        query = query.where(_mail.c.mailbox_key == mailbox_key)
    if network_key is not None:
        query = query.where(_mail.c.network_key == network_key)
    return int(session.connection().execute(query).scalar_one())


def add(
    session: Session,
    *,
    kind: str,
    recipient: str,
    message: bytes | None,
    mailbox_key: str,
    network_key: str,
    now: dt.datetime,
    expires_at: dt.datetime,
    skipped: bool = False,
) -> None:
    """Queue one email; a ``skipped`` row keeps neither the address nor the message."""
    session.connection().execute(
        sa.insert(_mail).values(
            kind=kind,
            status=(WebMailStatus.SKIPPED if skipped else WebMailStatus.QUEUED).value,
            recipient="" if skipped else recipient,
            message=None if skipped else message,
            mailbox_key=mailbox_key,
            network_key=network_key,
            queued_at=now,
            next_try_at=now,
            expires_at=expires_at,
            attempts=0,
            last_error="",
        )
    )


def claim(session: Session, now: dt.datetime, *, hold: dt.timedelta, limit: int) -> list[Queued]:
    """Take up to ``limit`` emails that are due (or whose sender's claim ran out) for
    ``hold``; rows past their expiry fail instead of being taken."""
    conn = session.connection()
    expired = sa.and_(_mail.c.status.in_([s.value for s in _OPEN]), _mail.c.expires_at <= now)
    conn.execute(
        sa.update(_mail)
        .where(expired, sa.or_(_mail.c.claimed_until.is_(None), _mail.c.claimed_until < now))
        .values(
            status=WebMailStatus.FAILED.value,
            recipient="",
            message=None,
            claimed_until=None,
            last_error="expired before it could be sent",
        )
    )
    due = sa.or_(
        sa.and_(_mail.c.status == WebMailStatus.QUEUED.value, _mail.c.next_try_at <= now),
        sa.and_(_mail.c.status == WebMailStatus.SENDING.value, _mail.c.claimed_until < now),
    )
    rows = conn.execute(
        sa.select(
            _mail.c.id,
            _mail.c.kind,
            _mail.c.recipient,
            _mail.c.message,
            _mail.c.attempts,
            _mail.c.expires_at,
        )
        .where(due)
        .order_by(_mail.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return []
    conn.execute(
        sa.update(_mail)
        .where(_mail.c.id.in_([r.id for r in rows]))
        .values(
            status=WebMailStatus.SENDING.value,
            claimed_until=now + hold,
            attempts=_mail.c.attempts + 1,
        )
    )
    found = []
    for r in rows:
        expires = r.expires_at if r.expires_at.tzinfo else r.expires_at.replace(tzinfo=dt.UTC)
        found.append(Queued(r.id, r.kind, r.recipient, r.message or b"", r.attempts + 1, expires))
    return found


def sent(session: Session, mail_id: int) -> None:
    """The server took it: forget the address and the message, keep the hashes."""
    session.connection().execute(
        sa.update(_mail)
        .where(_mail.c.id == mail_id, _mail.c.status == WebMailStatus.SENDING.value)
        .values(
            status=WebMailStatus.SENT.value,
            recipient="",
            message=None,
            claimed_until=None,
            last_error="",
        )
    )


def retry_at(session: Session, mail_id: int, when: dt.datetime, error: str) -> None:
    """A temporary failure: try again at ``when``."""
    session.connection().execute(
        sa.update(_mail)
        .where(_mail.c.id == mail_id, _mail.c.status == WebMailStatus.SENDING.value)
        .values(
            status=WebMailStatus.QUEUED.value,
            next_try_at=when,
            claimed_until=None,
            last_error=error[:500],
        )
    )


def failed(session: Session, mail_id: int, error: str) -> None:
    """A permanent failure (or past its expiry): it no longer counts against any limit."""
    session.connection().execute(
        sa.update(_mail)
        .where(_mail.c.id == mail_id, _mail.c.status == WebMailStatus.SENDING.value)
        .values(
            status=WebMailStatus.FAILED.value,
            recipient="",
            message=None,
            claimed_until=None,
            last_error=error[:500],
        )
    )


def purge(session: Session, now: dt.datetime) -> int:
    """Delete rows that are done and older than :data:`KEEP`."""
    result = session.connection().execute(
        sa.delete(_mail).where(
            _mail.c.status.not_in([s.value for s in _OPEN]), _mail.c.queued_at < now - KEEP
        )
    )
    return int(result.rowcount)


def erase(session: Session, email: str) -> int:
    """Delete the mail queued for a person being erased (see mailer.store.people.erase);
    rows that went or failed hold no address any more."""
    deleted = session.connection().execute(sa.delete(_mail).where(_mail.c.recipient == email))
    return int(deleted.rowcount)


@dataclass(frozen=True)
class Health:
    """What ``mailer status`` and ``mailer doctor`` say about the queue."""

    waiting: int  # queued or being sent
    oldest: dt.datetime | None  # when the oldest of them was queued
    failed_recently: int  # failed in the last day
    last_error: str  # of the latest failure or retry


def health(session: Session, now: dt.datetime) -> Health:
    conn = session.connection()
    waiting, oldest = conn.execute(
        sa.select(sa.func.count(), sa.func.min(_mail.c.queued_at)).where(
            _mail.c.status.in_([s.value for s in _OPEN])
        )
    ).one()
    failed_count = conn.execute(
        sa.select(sa.func.count()).where(
            _mail.c.status == WebMailStatus.FAILED.value,
            _mail.c.queued_at >= now - dt.timedelta(days=1),
        )
    ).scalar_one()
    error = conn.execute(
        sa.select(_mail.c.last_error)
        .where(_mail.c.last_error != "")
        .order_by(_mail.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.UTC)
    return Health(int(waiting), oldest, int(failed_count), error or "")


def kinds_of(session: Session) -> Sequence[tuple[str, str]]:
    """(kind, status) of every row, oldest first: for tests and ``mailer doctor``."""
    rows = session.connection().execute(
        sa.select(_mail.c.kind, _mail.c.status).order_by(_mail.c.id)
    )
    return [(str(k), str(s)) for k, s in rows]
