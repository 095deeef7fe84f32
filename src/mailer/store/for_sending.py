"""Everything the engine (``mailer/sending/``) may ask of the database, and nothing else.

``sending/`` imports this module and no other module of the store (``tests/test_architecture.py``
checks it), so what a send needs of its database is read here in one screen: the send's row
and status, the ledger (what is pending, what went, the batched writer of claims and
outcomes), the workers' leases on a send, the relays' shared rate limits, and bounced
people. Each operation is the store's own function under a name that says what it acts on;
which database runs underneath (SQLite or PostgreSQL) is the store's business, never the
engine's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from mailer.store import deliveries, people, relay_slots, send_workers, sends
from mailer.store.connections import retry_while_busy
from mailer.store.database import Database
from mailer.store.ledger_writer import LEASE, Final, LedgerRow, Mark, Written, ledger_writer
from mailer.store.models import DeliveryStatus, Schedule, SendStatus, utcnow
from mailer.store.recovery import BEGUN, JournalEntry
from mailer.store.relay_slots import End, Held, Taken, Wait, Window
from mailer.store.status import PauseReason

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = [
    "BEGUN",
    "LEASE",
    "Database",
    "DeliveryStatus",
    "End",
    "Final",
    "Held",
    "JournalEntry",
    "LedgerRow",
    "Mark",
    "PauseReason",
    "Schedule",
    "SendStatus",
    "Taken",
    "Wait",
    "Window",
    "Written",
    "count_with_status",
    "end_slots",
    "ensure_slots",
    "finished_count",
    "fix_recipients",
    "free_orphan_slots",
    "get_send",
    "holds_lease",
    "is_sending",
    "join_send",
    "leave_send",
    "ledger_writer",
    "list_slugs_of",
    "lock_send",
    "machine_now",
    "mark_bounced",
    "new_worker_id",
    "other_workers",
    "pending_after",
    "process_gone",
    "reap_dead_workers",
    "retry_while_busy",
    "seed_slots",
    "send_report",
    "sent_since",
    "server_time",
    "slot_ready_at",
    "take_slot",
    "transition_send",
    "try_transition_send",
    "utcnow",
]


# -- the send: its row, its status, its lists ---------------------------------------------------
get_send = sends.get
lock_send = sends.lock
transition_send = sends.transition
try_transition_send = sends.try_transition
list_slugs_of = sends.list_slugs_of
process_gone = sends.process_gone


# -- the ledger: one row per recipient --------------------------------------------------------
def pending_after(conn: Connection, send_id: int, last_id: int) -> Sequence[LedgerRow]:
    """The next pending rows of a send after ``last_id``, as read (no copy on the hot path)."""
    return cast("Sequence[LedgerRow]", deliveries.pending_after(conn, send_id, last_id))


fix_recipients = deliveries.fix_recipients
count_with_status = deliveries.count_with_status
finished_count = deliveries.finished_count
sent_since = deliveries.sent_since
send_report = deliveries.report
mark_bounced = people.mark_bounced


# -- the workers of a send: their leases --------------------------------------------------------
new_worker_id = send_workers.new_worker_id
machine_now = send_workers.machine_now
join_send = send_workers.join
leave_send = send_workers.leave
holds_lease = send_workers.holds
is_sending = send_workers.is_sending
other_workers = send_workers.others
reap_dead_workers = send_workers.reap


# -- a relay's rate limits, shared by every worker sending to it ---------------------------------
server_time = relay_slots.server_time
ensure_slots = relay_slots.ensure
seed_slots = relay_slots.seed
take_slot = relay_slots.take
end_slots = relay_slots.end
slot_ready_at = relay_slots.ready_at
free_orphan_slots = relay_slots.free_orphans
