"""What a bounce, a complaint or an unsubscribe email changes: the policy, in one place.

Two entry points, for every way a report can arrive (the mailbox, the Postfix pipe, and
later a relay's webhook):

- :func:`apply_authenticated`: a report already tied to one copy mailer sent by a MAC
  mailer made (the VERP address, mailer's own Message-ID, the unsubscribe token; for a
  webhook, the Message-ID mailer set). It may change that copy's person, and nobody else;
- :func:`store_unverified`: anything else. It is kept, with the address it names, shown
  by ``mailer bounces list --unverified``, and changes nobody unless an operator applies
  it (``mailer bounces apply ID``, :func:`apply_event`).

What each category does (docs/bounces.md):

- ``hard`` (the address is gone) marks the person bounced at once;
- ``full`` and ``soft`` are counted: the person is marked bounced once ``soft_limit`` (3)
  sends in a row failed. A send that reached them without a failure breaks the run;
- ``policy`` (a refusal of our message or sender) flags the send and never changes the
  person;
- ``complaint`` unsubscribes the person from everything and records it as a complaint;
- ``unsubscribe`` unsubscribes them from the lists of the send it is about;
- ``delayed``, ``delivered``, ``auto-reply`` and ``unrecognised`` are recorded only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mailer.bounces.diagnose import RecipientFinding
from mailer.config import BounceSettings
from mailer.errors import NotFound, StateError
from mailer.store import bounces as store
from mailer.store import people
from mailer.store.models import BounceEvent, SubscriberStatus
from mailer.store.status import BounceKind

if TYPE_CHECKING:
    from sqlmodel import Session

log = logging.getLogger("mailer.bounces")
K = BounceKind
# Which finding wins when one report says several things about the same copy.
SEVERITY = {
    K.HARD: 8,
    K.COMPLAINT: 7,
    K.UNSUBSCRIBE: 6,
    K.FULL: 5,
    K.SOFT: 4,
    K.POLICY: 3,
    K.DELAYED: 2,
    K.DELIVERED: 1,
    K.AUTO_REPLY: 1,
}
# Categories that change something about the person of an authenticated copy.
ABOUT_THE_PERSON = (K.HARD, K.FULL, K.SOFT, K.COMPLAINT, K.UNSUBSCRIBE)


def worst(findings: Sequence[RecipientFinding]) -> RecipientFinding:
    return max(findings, key=lambda f: SEVERITY.get(f.category, 0))


def apply_authenticated(
    session: Session,
    settings: BounceSettings,
    target: store.Target,
    findings: Sequence[RecipientFinding],
    *,
    key: str,
    source: str,
    how: str,
) -> tuple[BounceKind, list[str], bool]:
    """Record what a report authenticated for ``target`` says, and act on its person.

    ``findings`` are the report's per-recipient results. mailer sends each copy to one
    person, so the findings that name the copy's address (or name nobody) are about it,
    and the worst of them decides. A report that names only other people mailer holds is
    not about this copy: it is stored unverified instead and changes nobody. One naming
    only addresses mailer does not know (a forward, an alias) is about this copy.
    ``how`` says what authenticated it ("VERP address", "Message-ID"...), for the record.

    Returns the kind recorded, what was done (a few words each), and whether the report
    was taken as about this copy (False when it was stored unverified).
    """
    copy_address = target.email.lower()
    named = [f for f in findings if f.address]
    mine = [f for f in findings if not f.address or (copy_address and f.address == copy_address)]
    others = [f for f in named if f not in mine]
    if not mine and others:
        known = store.known_addresses(session, [f.address for f in others])
        if known - {copy_address}:
            events = store_unverified(
                session,
                findings,
                key=key,
                source=source,
                note=f"names someone else than the copy its {how} names",
            )
            return worst_kind(events), [], False
        mine, others = others, []
    finding = worst(mine) if mine else RecipientFinding("", K.UNRECOGNISED)
    event = store.record(
        session,
        key=f"{key}#0",
        kind=finding.category,
        target=target,
        status=finding.status,
        reason=finding.reason,
        source=source,
        verified=True,
        address=finding.address,
    )
    actions: list[str] = []
    if finding.category in ABOUT_THE_PERSON or finding.category == K.POLICY:
        event.action = act(session, settings, finding.category, target)
        actions.append(f"subscriber {target.subscriber_id}: {event.action}")
    else:
        event.action = "none"
    if others:
        # The same report also names other people: kept for the operator, acted on never.
        store_unverified(
            session, others, key=key, source=source, first=1, note="named beside the copy"
        )
    return finding.category, actions, True


def worst_kind(events: Sequence[BounceEvent]) -> BounceKind:
    kinds = [BounceKind(e.kind) for e in events] or [K.UNRECOGNISED]
    return max(kinds, key=lambda k: SEVERITY.get(k, 0))


def store_unverified(
    session: Session,
    findings: Sequence[RecipientFinding],
    *,
    key: str,
    source: str,
    note: str = "",
    first: int = 0,
) -> list[BounceEvent]:
    """Keep a report nothing authenticated: one event per recipient, tied to nobody.

    It changes no person; ``mailer bounces list --unverified`` shows it with the address
    it names, and ``mailer bounces apply ID`` acts on it by hand.
    """
    events = []
    for i, finding in enumerate(findings or [RecipientFinding("", K.UNRECOGNISED)], start=first):
        reason = finding.reason
        if note:
            reason = f"[{note}] {reason}".strip()
        event = store.record(
            session,
            key=f"{key}#{i}",
            kind=finding.category,
            target=None,
            status=finding.status,
            reason=reason,
            source=source,
            verified=False,
            address=finding.address,
        )
        event.action = "none: unverified"
        events.append(event)
    return events


def act(
    session: Session,
    settings: BounceSettings,
    kind: BounceKind,
    target: store.Target,
) -> str:
    """Change what ``kind`` calls for about ``target``'s person; what was done, in a few words.

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
    if kind in (K.SOFT, K.FULL):
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


def apply_event(
    session: Session, settings: BounceSettings, event_id: int, *, by: str
) -> tuple[BounceEvent, str]:
    """Act on an unverified report by hand: the operator vouches for it.

    The report is tied to the newest copy sent to the address it names, and the policy
    applies as for an authenticated one. Returns the event and what was done.
    """
    event = store.event(session, event_id)
    if event is None:
        raise NotFound(f"no returned-mail event {event_id}: see mailer bounces list --unverified")
    if event.verified or event.subscriber_id is not None:
        raise StateError(f"event {event_id} is not an unverified report: nothing to apply")
    if not event.address:
        raise StateError(
            f"event {event_id} names no address (or its person was erased): nothing to apply"
        )
    target = store.latest_to(session, event.address.lower())
    if target is None:
        raise NotFound(f"event {event_id} names an address mailer has sent nothing to")
    kind = BounceKind(event.kind)
    event.send_id, event.subscriber_id = target.send_id, target.subscriber_id
    event.delivery_id = target.delivery_id
    event.verified = True  # vouched for by the operator: it counts from now on
    event.source = f"{event.source}; applied by {by}"[:200]
    session.add(event)
    if kind in ABOUT_THE_PERSON or kind == K.POLICY:
        done = act(session, settings, kind, target)
    else:
        done = "none"
    event.action = f"applied by hand: {done}"[:200]
    return event, done
