"""What a bounce, a complaint or an unsubscribe email changes: the policy, in one place.

Each threshold is a setting of ``[bounces]`` (see docs/bounces.md):

- a permanent failure of the address (``hard_statuses``: 5.1.x, 5.2.1, 5.4.x) marks the
  person bounced at once;
- a temporary failure (4.x.x, and a permanent one that is not about the address, such as
  5.2.2 mailbox full) is counted: the person is marked bounced once ``soft_limit`` (3)
  sends in a row failed. A send that reached them without a failure breaks the run, so a
  monthly newsletter reaches the threshold in three months and an address that recovers
  starts again from nothing;
- a policy or reputation refusal (``policy_statuses``: 5.7.x) flags the send for the comms
  officer and changes nothing about the person;
- a complaint unsubscribes the person from everything and records it as a complaint;
- an unsubscribe email unsubscribes them from the lists of the send its token names.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mailer.config import BounceSettings
from mailer.store import bounces as store
from mailer.store import people
from mailer.store.models import SubscriberStatus
from mailer.store.status import BounceKind

if TYPE_CHECKING:
    from sqlmodel import Session

log = logging.getLogger("mailer.bounces")
K = BounceKind
# Which finding wins when one message reports several about the same copy.
SEVERITY = {
    K.HARD: 6,
    K.COMPLAINT: 5,
    K.POLICY: 4,
    K.SOFT: 3,
    K.DELAYED: 2,
    K.DELIVERED: 1,
}


def classify(settings: BounceSettings, status: str, action: str) -> BounceKind:
    """The kind of a delivery report from its RFC 3464 ``Action`` and status code."""
    if action in ("delayed",):
        return K.DELAYED
    if action in ("delivered", "relayed", "expanded"):
        return K.DELIVERED
    if status.startswith("2."):
        return K.DELIVERED
    if any(status.startswith(p) for p in settings.policy_statuses):
        return K.POLICY
    if any(status == p or status.startswith(p) for p in settings.hard_statuses):
        return K.HARD
    return K.SOFT


def apply(
    session: Session,
    settings: BounceSettings,
    kind: BounceKind,
    target: store.Target,
) -> str:
    """Change what ``kind`` calls for about ``target``; what was done, in a few words.

    The event itself must already be added to the session: a temporary failure counts the
    sends that failed in a row, this one included.
    """
    subscriber = store.subscriber(session, target.subscriber_id)
    if subscriber is None:
        return "none: the person is not held any more"
    if subscriber.status == SubscriberStatus.ERASED:
        return "none: erased"
    sid = target.subscriber_id
    if kind == K.HARD:
        if people.mark_bounced(session, [sid]):
            log.info("subscriber %s marked bounced (send %s)", sid, target.send_id)
            return "marked bounced"
        return f"none: already {subscriber.status}"
    if kind == K.SOFT:
        session.flush()
        in_a_row = store.failed_sends_in_a_row(session, sid, target.send_id)
        if in_a_row >= settings.soft_limit:
            if people.mark_bounced(session, [sid]):
                log.info("subscriber %s marked bounced after %d sends", sid, in_a_row)
                return f"marked bounced: {in_a_row} sends in a row failed"
            return f"none: already {subscriber.status}"
        return f"counted: {in_a_row} of {settings.soft_limit} sends in a row failed"
    if kind == K.POLICY:
        log.warning("send %s was refused for policy or reputation reasons", target.send_id)
        return "send flagged: refused for policy or reputation"
    if kind == K.COMPLAINT:
        people.unsubscribe(session, subscriber)
        people.set_status(session, subscriber, SubscriberStatus.COMPLAINED, strict=False)
        log.info("subscriber %s complained: unsubscribed from everything", sid)
        return "unsubscribed from everything: complaint"
    if kind == K.UNSUBSCRIBE:
        left = []
        for mailing_list in store.lists_of_send_for(session, target.send_id, sid):
            if people.unsubscribe(session, subscriber, mailing_list):
                left.append(mailing_list.slug)
        if not left:
            return "none: already unsubscribed"
        log.info("subscriber %s unsubscribed by email from %s", sid, ", ".join(left))
        return f"unsubscribed from {', '.join(left)}"
    return "none"
