"""Queries on the per-recipient ledger (the ``delivery`` table).

The ledger's hot path while a send runs (claims, outcomes) is in :mod:`mailer.store.ledger_writer`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlmodel import Session

from mailer.store import people, sends
from mailer.store.connections import analyze_committed
from mailer.store.models import (
    Delivery,
    DeliveryStatus,
    Send,
    SendStatus,
    SendWorker,
    as_utc,
    table_of,
    utcnow,
)

DELIVERY = table_of(Delivery)
SEND_WORKER = table_of(SendWorker)
SEND = sends.SEND
D = DeliveryStatus
# Rows fetched at a time by the engine's dispatcher.
FETCH = 500


# -- fixing the recipients ------------------------------------------------------------------


def _already_mailed(conn: Connection, slug: str, send_id: int | None) -> set[int]:
    """Subscribers an earlier send of this issue reached, or may have reached; a rehearsal
    through the outbox reached nobody.

    A copy whose outcome is unknown counts, so a second send never mails them again on its
    own (``mailer send SLUG --resend-unknown`` does, when asked), except in a cancelled
    send: there nobody can ask any more, and missing the issue is worse than a second copy.
    """
    maybe = sa.and_(
        DELIVERY.c.status.in_([D.IN_FLIGHT, D.UNKNOWN]), SEND.c.status != SendStatus.CANCELLED
    )
    query = (
        sa.select(DELIVERY.c.subscriber_id)
        .join(SEND, SEND.c.id == DELIVERY.c.send_id)
        .where(
            SEND.c.slug == slug,
            sa.or_(DELIVERY.c.status == D.SENT, maybe),
            sends.NOT_A_REHEARSAL,
        )
    )
    if send_id is not None:
        query = query.where(SEND.c.id != send_id)
    return set(conn.execute(query).scalars())


def count_recipients(session: Session, list_ids: Sequence[int], slug: str) -> int:
    """How many a new send of ``slug`` to these lists would mail (see fix_recipients)."""
    already = _already_mailed(session.connection(), slug, None)
    return sum(
        1 for r in people.eligible_recipients(session, list_ids) if r.subscriber_id not in already
    )


def fix_recipients(session: Session, send: Send) -> int:
    """Write the ledger: every eligible subscriber once, in one transaction.

    Eligible means active and subscribed to any of the send's lists, not suppressed, and not
    already mailed this issue by an earlier send (so a second list never duplicates).
    """
    assert send.id is not None
    engine = session.get_bind()
    assert isinstance(engine, sa.Engine)
    # The people to read may have come in since PostgreSQL last looked (an import just now).
    analyze_committed(engine, ["subscriber", "membership", "send_list"])
    conn = session.connection()
    list_ids = sends.list_ids_of(conn, send.id)
    already = _already_mailed(conn, send.slug, send.id)
    insert = sa.insert(DELIVERY)
    total = 0
    batch: list[dict[str, object]] = []
    for r in people.eligible_recipients(session, list_ids):
        if r.subscriber_id in already:
            continue
        batch.append(
            {
                "send_id": send.id,
                "subscriber_id": r.subscriber_id,
                "email": r.email,
                "name": r.name or "",
                "status": D.PENDING,
                "attempts": 0,
                "last_error": "",
                "message_id": "",
            }
        )
        if len(batch) >= 1000:
            conn.execute(insert, batch)
            total += len(batch)
            batch = []
    if batch:
        conn.execute(insert, batch)
        total += len(batch)
    sends.set_total(conn, send.id, total)
    session.commit()
    # The first claims follow at once: let the planner know the ledger's rows first.
    analyze_committed(engine, ["delivery"])
    return total


# -- what the engine reads ---------------------------------------------------------------------


def in_flight_to_unknown(conn: Connection, send_id: int, workers: Sequence[str]) -> list[str]:
    """Rows of the send left in flight by these workers, found dead, become ``unknown``:
    whether the server took them cannot be known, so they are never counted as sent nor
    sent again on their own. Their addresses, in ledger order."""
    d = DELIVERY.c
    return _to_unknown(conn, send_id, d.claimed_by.in_(list(workers)))


def orphans_to_unknown(conn: Connection, send_id: int) -> list[str]:
    """Rows of the send in flight with no worker holding a lease on it (a worker that
    died, a sender from before leases) become ``unknown``, as in :func:`in_flight_to_unknown`.
    Rows in flight with a live worker are left to it."""
    d, w = DELIVERY.c, SEND_WORKER.c
    leased = sa.select(w.worker).where(w.send_id == d.send_id, w.worker == d.claimed_by).exists()
    return _to_unknown(conn, send_id, sa.or_(d.claimed_by.is_(None), sa.not_(leased)))


def _to_unknown(conn: Connection, send_id: int, whose: sa.ColumnElement[bool]) -> list[str]:
    d = DELIVERY.c
    rows = conn.execute(
        sa.update(DELIVERY)
        .where(d.send_id == send_id, d.status == D.IN_FLIGHT, whose)
        .values(
            status=D.UNKNOWN,
            last_error="in flight when its sender stopped without recording an outcome",
            updated_at=utcnow(),
        )
        .returning(d.id, d.email)
    ).all()
    return [r.email for r in sorted(rows, key=lambda r: r.id)]


def in_flight_by_worker(conn: Connection, send_id: int) -> dict[str, int]:
    """How many rows of the send each worker holds in flight."""
    d = DELIVERY.c
    rows = conn.execute(
        sa.select(d.claimed_by, sa.func.count())
        .where(d.send_id == send_id, d.status == D.IN_FLIGHT)
        .group_by(d.claimed_by)
    ).all()
    return {str(worker): int(n) for worker, n in rows if worker is not None}


def count_with_status(conn: Connection, send_id: int, status: DeliveryStatus) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count()).where(
                DELIVERY.c.send_id == send_id, DELIVERY.c.status == status
            )
        ).scalar_one()
    )


def finished_count(conn: Connection, send_id: int) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count()).where(
                DELIVERY.c.send_id == send_id, DELIVERY.c.status != D.PENDING
            )
        ).scalar_one()
    )


def sent_since(conn: Connection, since: dt.datetime) -> list[float]:
    """When each message of any send was accepted since ``since`` (epoch seconds), so a
    resumed send keeps to the hourly rate limit."""
    return [
        as_utc(t).timestamp()
        for t in conn.execute(
            sa.select(DELIVERY.c.sent_at).where(DELIVERY.c.sent_at >= since)
        ).scalars()
    ]


def pending_after(conn: Connection, send_id: int, last_id: int, limit: int = FETCH) -> list[Any]:
    """The next pending rows of a send, in ledger order: (id, subscriber_id, email, name)."""
    d = DELIVERY.c
    rows = conn.execute(
        sa.select(d.id, d.subscriber_id, d.email, d.name)
        .where(d.send_id == send_id, d.status == D.PENDING, d.id > last_id)
        .order_by(d.id)
        .limit(limit)
    ).all()
    conn.rollback()
    return list(rows)


@dataclass(frozen=True)
class FailedRecipient:
    email: str
    status: str
    attempts: int
    error: str


@dataclass(frozen=True)
class WorkerSummary:
    """A process working on a send, as ``mailer status`` shows it: no addresses."""

    worker: str  # host:pid:start/run
    connections: int
    joined_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    in_flight: int

    @property
    def host(self) -> str:
        return self.worker.partition(":")[0]

    @property
    def pid(self) -> int | None:
        parts = self.worker.split(":")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None

    def heartbeat_age(self, now: datetime | None = None) -> float:
        return max(((now or utcnow()) - self.heartbeat_at).total_seconds(), 0.0)

    def as_dict(self) -> dict[str, object]:
        return {
            "worker": self.worker,
            "host": self.host,
            "pid": self.pid,
            "connections": self.connections,
            "in_flight": self.in_flight,
            "joined_at": self.joined_at.isoformat(),
            "heartbeat_at": self.heartbeat_at.isoformat(),
            "heartbeat_age_seconds": round(self.heartbeat_age(), 1),
            "lease_expires_at": self.expires_at.isoformat(),
        }


@dataclass(frozen=True)
class SendSummary:
    send_id: int
    slug: str
    status: str
    reason: str
    lists: list[str]
    total: int
    counts: dict[str, int]
    started_at: datetime | None
    finished_at: datetime | None
    scheduled_at: datetime | None
    last_sent_at: datetime | None
    failed: list[FailedRecipient]
    in_flight: list[str]
    # Copies that may or may not have been accepted: never resent unless asked.
    unknown: list[str] = dataclasses.field(default_factory=list)
    # The processes working on it now (mailer.store.send_workers).
    workers: list[WorkerSummary] = dataclasses.field(default_factory=list)

    @property
    def sent(self) -> int:
        return self.counts.get(DeliveryStatus.SENT, 0)

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or self.last_sent_at or utcnow()
        return max((end - self.started_at).total_seconds(), 0.0)

    @property
    def rate(self) -> float | None:
        d = self.duration
        return self.sent / d if d and self.sent else None

    def as_dict(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data.update(sent=self.sent, duration_seconds=self.duration, rate_per_second=self.rate)
        for key in ("started_at", "finished_at", "scheduled_at", "last_sent_at"):
            value = data[key]
            data[key] = value.isoformat() if value else None
        data["workers"] = [w.as_dict() for w in self.workers]
        return data


def report(
    session: Session, send: Send, failed_limit: int = 1000, workers: Sequence[WorkerSummary] = ()
) -> SendSummary:
    assert send.id is not None
    conn = session.connection()
    d = DELIVERY.c
    counts = {str(s): 0 for s in DeliveryStatus}
    for status, n in conn.execute(
        sa.select(d.status, sa.func.count()).where(d.send_id == send.id).group_by(d.status)
    ):
        counts[str(status)] = n
    failed = [
        FailedRecipient(r.email, str(r.status), r.attempts, r.last_error)
        for r in conn.execute(
            sa.select(d.email, d.status, d.attempts, d.last_error)
            .where(
                d.send_id == send.id,
                d.status.in_([DeliveryStatus.FAILED_TEMPORARY, DeliveryStatus.FAILED_PERMANENT]),
            )
            .order_by(d.id)
            .limit(failed_limit)
        )
    ]

    def emails(status: DeliveryStatus) -> list[str]:
        return list(
            conn.execute(
                sa.select(d.email)
                .where(d.send_id == send.id, d.status == status)
                .order_by(d.id)
                .limit(failed_limit)
            ).scalars()
        )

    last = conn.execute(sa.select(sa.func.max(d.sent_at)).where(d.send_id == send.id)).scalar()
    return SendSummary(
        send_id=send.id,
        slug=send.slug,
        status=str(send.status),
        reason=send.status_reason,
        lists=sends.list_slugs_of(session, send.id),
        total=send.total or 0,
        counts=counts,
        started_at=as_utc(send.started_at) if send.started_at else None,
        finished_at=as_utc(send.finished_at) if send.finished_at else None,
        scheduled_at=as_utc(send.scheduled_at) if send.scheduled_at else None,
        last_sent_at=as_utc(_datetime(last)) if last else None,
        failed=failed,
        in_flight=emails(DeliveryStatus.IN_FLIGHT),
        unknown=emails(DeliveryStatus.UNKNOWN),
        workers=list(workers),
    )


def _datetime(value: datetime | str) -> datetime:
    # An aggregate loses the column's type, so SQLite hands back its stored text.
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def reset_for_retry(session: Session, send_id: int, statuses: Iterable[DeliveryStatus]) -> int:
    result = session.connection().execute(
        sa.update(DELIVERY)
        .where(DELIVERY.c.send_id == send_id, DELIVERY.c.status.in_(list(statuses)))
        .values(status=DeliveryStatus.PENDING)
    )
    session.commit()
    return int(result.rowcount)
