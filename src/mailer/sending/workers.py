"""The workers of a send: how a process joins one, and what the send becomes when it leaves.

Any number of processes may work on one send, each with its own connections and its own
lease (:mod:`mailer.store.send_workers`). Joining and leaving are each one transaction
that locks the send's row, so workers decide one at a time:

- **Joining** first reaps the workers that died (of the rows they held in flight, those
  their journal, :mod:`mailer.sending.journal`, shows never begun go back to ``pending``,
  and the rest become ``unknown``), then starts the send if it is new (fixing its
  recipients), resumes it if it is paused and nobody is still finishing messages in hand,
  or simply joins it if it is sending, and adds the worker's lease. A worker that took
  the send up by itself (:mod:`mailer.scheduling.resume`) joins only if the send is still
  as it saw it (:class:`SendAsSeen`): a send finished, or paused by a person, in the
  moment between is left as it is.
- **Leaving**, once the worker's ledger is closed, reaps again, then: the send becomes
  ``sent`` when no row is pending or in flight (a compare-and-set, so exactly once,
  whichever worker is last); a stop that concerns the whole send (the server unavailable,
  too many failures, an error) pauses it for every worker; a worker that stops for its own
  reasons (Ctrl-C, SIGTERM, its worker stopping) or has nothing left to claim just goes,
  while other workers go on; the last one pauses the send if rows are left, or, if it
  stopped for no reason at all (rows came back from a worker that left), goes round again.

A pause or cancel from anywhere only changes the send's status: every worker reads it at
its next ledger commit and stops.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailer.errors import StateError
from mailer.sending.journal import Journals
from mailer.store import for_sending as store
from mailer.store.for_sending import (
    Database,
    DeliveryStatus,
    PauseReason,
    SendStatus,
    retry_while_busy,
)

if TYPE_CHECKING:
    from sqlmodel import Session

D = DeliveryStatus
# Stops that concern the send, not the worker: the send pauses for every worker.
SEND_WIDE = frozenset({PauseReason.UNAVAILABLE, PauseReason.FAILURES, PauseReason.ERROR})


@dataclass(frozen=True)
class Joined:
    slug: str
    total: int
    # Addresses left in flight by workers that died: now unknown, and not sent again.
    unknown: list[str] = field(default_factory=list)
    # Whether this worker started the send (its recipients were fixed now).
    started: bool = False


@dataclass(frozen=True)
class SendAsSeen:
    """A send's status, and why it was paused, as a worker saw them when it chose to take
    the send up by itself: it joins only if they are still so."""

    status: SendStatus
    pause_reason: PauseReason | None = None


class Next(enum.Enum):
    """What a worker does once its ledger is closed."""

    LEFT = "left"  # it went; the send's status says the rest
    AGAIN = "again"  # rows came back and nobody else is there: it goes round again


@dataclass(frozen=True)
class Left:
    next: Next
    status: SendStatus
    reason: str
    # Workers still on the send after this one left.
    others: int = 0
    # Whether this worker had lost its lease (another presumed it dead) before it left.
    lost_lease: bool = False
    # Whether this worker moved the send to its status (finished or paused it).
    changed: bool = False


def join(
    database: Database,
    send_id: int,
    worker: str,
    connections: int,
    lease: dt.timedelta,
    seen: SendAsSeen | None = None,
) -> Joined:
    """Add ``worker`` to the send, starting or resuming it if it is not sending. With
    ``seen``, only if the send is still as the worker saw it (StateError if not)."""
    return retry_while_busy(lambda: _join(database, send_id, worker, connections, lease, seen))


def _join(
    database: Database,
    send_id: int,
    worker: str,
    connections: int,
    lease: dt.timedelta,
    seen: SendAsSeen | None,
) -> Joined:
    journals = Journals(database.settings)
    with database.session(write=True) as session:
        conn = session.connection()
        slug, status, total, reason = store.lock_send(conn, send_id)
        if seen is not None and (status, reason) != (seen.status, seen.pause_reason):
            raise StateError(f"{slug} is {status} now, no longer {seen.status}: left as it is")
        unknown = store.reap_dead_workers(conn, send_id, journals)
        if status != SendStatus.SENDING:
            if status in (SendStatus.PAUSED, SendStatus.SENT) and store.other_workers(
                conn, send_id, worker
            ):
                raise StateError(
                    f"{slug} is {status}, but its senders are still finishing the messages in "
                    "hand: try again in a moment"
                )
            store.transition_send(conn, send_id, SendStatus.SENDING)
        store.join_send(conn, send_id, worker, connections, lease)
        started = total is None
        if total is None:
            total = store.fix_recipients(session, store.get_send(session, send_id))
    journals.discard()
    return Joined(slug, total, unknown, started)


def leave(
    database: Database,
    send_id: int,
    worker: str,
    pause: PauseReason | None,
    detail: str,
) -> Left:
    """Decide what the send becomes now that ``worker`` has stopped, and let it go (unless
    it should go round again). ``pause`` is why it stopped, if it stopped before the end."""
    return retry_while_busy(lambda: _leave(database, send_id, worker, pause, detail))


def _leave(
    database: Database,
    send_id: int,
    worker: str,
    pause: PauseReason | None,
    detail: str,
) -> Left:
    journals = Journals(database.settings)
    with database.session(write=True) as session:
        left = _leave_in(session, journals, send_id, worker, pause, detail)
    journals.discard()
    return left


def _leave_in(
    session: Session,
    journals: Journals,
    send_id: int,
    worker: str,
    pause: PauseReason | None,
    detail: str,
) -> Left:
    conn = session.connection()
    status = store.lock_send(conn, send_id).status
    store.reap_dead_workers(conn, send_id, journals)
    mine = store.holds_lease(conn, send_id, worker)
    others = store.other_workers(conn, send_id, worker)
    left = Left(Next.LEFT, status, "", others, lost_lease=not mine)
    if status == SendStatus.SENDING and mine:
        pending = store.count_with_status(conn, send_id, D.PENDING)
        in_flight = store.count_with_status(conn, send_id, D.IN_FLIGHT)
        if pending + in_flight == 0:
            if store.try_transition_send(conn, send_id, SendStatus.SENT):
                left = Left(Next.LEFT, SendStatus.SENT, "", others, changed=True)
        elif pause in SEND_WIDE or (pause is not None and not others):
            assert pause is not None
            store.transition_send(conn, send_id, SendStatus.PAUSED, detail, pause=pause)
            left = Left(Next.LEFT, SendStatus.PAUSED, detail, others, changed=True)
        elif pause is None and not others and pending:
            return Left(Next.AGAIN, status, "", 0)
        elif not others:
            # Rows in flight with this worker that it could not record (the ledger
            # failed): paused, and the next worker reports them as unknown.
            reason = detail or "stopped"
            store.transition_send(conn, send_id, SendStatus.PAUSED, reason, pause=PauseReason.ERROR)
            left = Left(Next.LEFT, SendStatus.PAUSED, reason, 0, changed=True)
    else:
        found = store.get_send(session, send_id)
        left = Left(Next.LEFT, status, found.status_reason, others, lost_lease=not mine)
    store.leave_send(conn, send_id, worker)
    return left
