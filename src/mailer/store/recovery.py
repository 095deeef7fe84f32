"""Settling the rows a dead worker left in flight from what its journal vouches for.

The journal itself (a file on the machine that sent) is read by
:mod:`mailer.sending.journal`; this module only applies it, inside the transaction of
:func:`mailer.store.send_workers.reap`, to the worker's rows still ``in-flight``:

- a row the journal never saw begun, or saw go back to be tried again, becomes
  ``pending`` again, with no worker: no byte of its message reached the server since;
- a row whose outcome the journal holds gets that outcome (the server's reply itself is
  not kept: ``last_error`` says where the outcome came from);
- a row begun without an outcome is left in flight, for the reap to make ``unknown``.

Only rows in flight with that worker are touched, so a row another worker has since
settled (or a worker that was presumed dead wrongly committed) keeps its status.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy import Connection

from mailer.store.models import Delivery, DeliveryStatus, table_of, utcnow

DELIVERY = table_of(Delivery)
D = DeliveryStatus
# The state of a row whose envelope went out and whose outcome was not recorded.
BEGUN = "begun"
FROM_JOURNAL = "outcome recorded by its sender's journal (the sender died before committing it)"
_FINAL = {D.SENT.value, D.FAILED_PERMANENT.value, D.FAILED_TEMPORARY.value, D.UNKNOWN.value}


class JournalEntry(NamedTuple):
    """What a journal says of one row: ``begun``, ``pending`` or a final status."""

    state: str
    message_id: str = ""


# Given a dead worker's name and its send, what its journal vouches for (None: nothing).
Vouched = Callable[[str, int], Mapping[int, JournalEntry] | None]


def settle(conn: Connection, send_id: int, worker: str, entries: Mapping[int, JournalEntry]) -> int:
    """Apply ``worker``'s journal to the rows it left in flight; how many it settled."""
    d = DELIVERY.c
    held = conn.execute(
        sa.select(d.id).where(d.send_id == send_id, d.status == D.IN_FLIGHT, d.claimed_by == worker)
    ).scalars()
    back: list[int] = []
    ended: dict[str, list[tuple[int, str]]] = {}
    for row in held:
        entry = entries.get(row)
        if entry is None or entry.state == D.PENDING.value:
            back.append(row)
        elif entry.state in _FINAL:
            ended.setdefault(entry.state, []).append((row, entry.message_id))
    now = utcnow()
    mine = sa.and_(d.status == D.IN_FLIGHT, d.claimed_by == worker)
    if back:
        conn.execute(
            sa.update(DELIVERY)
            .where(mine, d.id.in_(back))
            .values(status=D.PENDING, claimed_by=None, updated_at=now)
        )
    for state, rows in ended.items():
        conn.execute(
            sa.update(DELIVERY)
            .where(mine, d.id == sa.bindparam("b_id"))
            .values(
                status=state,
                attempts=d.attempts + 1,
                message_id=sa.bindparam("b_mid"),
                last_error="" if state == D.SENT.value else FROM_JOURNAL,
                sent_at=now if state == D.SENT.value else None,
                updated_at=now,
            ),
            [{"b_id": row, "b_mid": mid} for row, mid in rows],
        )
    return len(back) + sum(len(rows) for rows in ended.values())
