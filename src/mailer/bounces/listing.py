"""``mailer bounces list`` and ``mailer bounces apply``: the operator sees, and decides.

Addresses are masked unless the operator asks for people (``--people``), as the send
report does: the list is for checking what came back, not for reading who.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from mailer.addresses import mask
from mailer.bounces import policy
from mailer.config import Settings
from mailer.formats import local_time
from mailer.store import bounces as store
from mailer.store.database import Database


@dataclass(frozen=True)
class Row:
    event: store.ListedEvent

    def as_dict(self, *, people: bool, tz: ZoneInfo) -> dict[str, Any]:
        e = self.event
        address = e.address if people or not e.address else mask(e.address)
        reason = e.reason
        if not people and e.address and e.address in reason:
            reason = reason.replace(e.address, address)
        return {
            "id": e.id,
            "received": local_time(e.received_at, tz),
            "kind": e.kind,
            "verified": e.verified,
            "address": address,
            "send_id": e.send_id,
            "status": e.status,
            "reason": reason,
            "source": e.source,
            "action": e.action,
        }


def recent(
    db: Database, *, unverified: bool = False, quarantined: bool = False, limit: int = 50
) -> list[Row]:
    with db.session() as session:
        found = store.listing(session, unverified=unverified, quarantined=quarantined, limit=limit)
    return [Row(e) for e in found]


def apply(settings: Settings, db: Database, event_id: int, *, by: str) -> tuple[str, str]:
    """Act on one unverified report by hand; (its kind, what was done)."""
    with db.session(write=True) as session:
        event, done = policy.apply_event(session, settings.bounces, event_id, by=by)
        kind = str(event.kind)
    return kind, done
