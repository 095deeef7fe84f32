"""People as the command line sees them: adding, unsubscribing, erasing, describing.

Each function opens one session on a :class:`~mailer.store.database.Database` and calls the
queries of :mod:`mailer.store.people`; CSV import and export live beside this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailer.addresses import clean_text, has_controls, normalise, parse_address
from mailer.errors import InvalidInput, NotFound, Suppressed
from mailer.sending.transports.outbox import outbox_name, outbox_name_prefix
from mailer.store import bounces as returned
from mailer.store import joining, optouts, signups
from mailer.store import people as store
from mailer.store.database import Database
from mailer.store.joining import Candidate, JoinOutcome
from mailer.store.models import LawfulBasis, Subscriber, SubscriberStatus
from mailer.store.suppression import suppression_of
from mailer.subscribers import traces

if TYPE_CHECKING:
    from sqlmodel import Session


def add(
    db: Database,
    raw_email: str,
    list_slug: str,
    *,
    name: str = "",
    organisation: str = "",
    basis: LawfulBasis = LawfulBasis.PUBLIC_TASK,
    source: str = "mailer subscribers add",
) -> JoinOutcome:
    """Put one person on a list, under exactly the rules an import follows."""
    email, display_name = parse_address(raw_email)
    for label, value in (("name", name), ("organisation", organisation)):
        if has_controls(value):
            raise InvalidInput(f"the {label} contains a control character: retype it")
    candidate = Candidate(email, clean_text(name or display_name), clean_text(organisation))
    with db.session(write=True) as session:
        mailing_list = store.get_list(session, list_slug)
        [decision] = joining.subscribe_many(
            session, mailing_list, [candidate], basis=basis, source=source
        )
    if decision.outcome is JoinOutcome.SUPPRESSED:
        raise Suppressed(f"{email} {decision.reason}: mailer never subscribes them again")
    return decision.outcome


def unsubscribe(db: Database, raw_email: str, list_slug: str | None = None) -> bool:
    """Unsubscribe a person from one list or from everything; False if they already were."""
    email = normalise(raw_email)
    with db.session(write=True) as session:
        subscriber = store.get_subscriber(session, email)
        mailing_list = store.get_list(session, list_slug) if list_slug else None
        return store.unsubscribe(session, subscriber, mailing_list)


def reactivate(db: Database, raw_email: str, reason: str) -> tuple[str, list[str]]:
    """Undo a bounce or complaint recorded in error; (the status it had, lists rejoined).

    The reason is kept in the person's history (``mailer subscribers show``), with the
    bounces and complaints it undoes, and in the consent evidence of each list they are
    on: why they may be mailed again.
    """
    email = normalise(raw_email)
    reason = " ".join(reason.split())
    if not reason or has_controls(reason):
        raise InvalidInput("--reason: say why, in a few words (for the person's history)")
    with db.session(write=True) as session:
        subscriber = store.get_subscriber(session, email)
        assert subscriber.id is not None
        was = str(subscriber.status)
        since = returned.latest_complaint_at(session, subscriber.id)
        rejoined = store.reactivate(session, subscriber, since, reason=reason)
        returned.record_reactivation(
            session,
            subscriber.id,
            reason=reason,
            action=f"active again (was {was})"
            + (f"; rejoined {', '.join(rejoined)}" if rejoined else ""),
        )
    return was, rejoined


def erase(db: Database, raw_email: str) -> store.Erasure:
    """Erase everything held about a person, keeping only a keyed hash of the address.

    Besides the database: the outbox files of the messages sent to them, and their address
    wherever it appears in mailer's log, in web emails, kept bounces and reports that name
    people (:mod:`.traces`), are removed; the database's old copies of the rows
    are then cleared (store.clear_traces), and what it could not reach is in ``remains``.
    """
    email = normalise(raw_email)
    with db.session(write=True) as session:
        erasure = store.erase(session, email)
    erasure = replace(erasure, remains=tuple(store.clear_traces(db.engine)))
    settings = db.settings
    for slug, message_id in erasure.copies:
        for folder in (settings.outbox_dir / slug, settings.outbox_dir / slug / "proofs"):
            (folder / outbox_name(message_id)).unlink(missing_ok=True)
    _scrub_outbox_names(settings.outbox_dir, email)
    traces.scrub_files(settings, email)
    return erasure


def _scrub_outbox_names(outbox: Path, email: str) -> None:
    """Files written before outbox names carried no address were named after it."""
    if not outbox.is_dir():
        return
    legacy = outbox_name_prefix(email)
    for path in outbox.glob(f"*/{legacy}*.eml"):
        path.unlink(missing_ok=True)


def describe(db: Database, raw_email: str) -> dict[str, Any]:
    """Everything held about one person, for a subject access request (JSON-ready)."""
    email = normalise(raw_email)
    with db.session() as session:
        subscriber = store.find_subscriber(session, email)
        if subscriber is None:
            suppression = suppression_of(session, email)
            if suppression is None:
                raise NotFound(f"mailer holds nothing about {email}")
            return {
                "email": email,
                "status": SubscriberStatus.ERASED.value,
                "erased_at": suppression.created.isoformat(),
                "held": "only a keyed hash of the address, so it is never imported again",
            }
        return held_about(session, subscriber)


def held_about(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    """What :func:`describe` shows for a known person (also their preferences page's JSON)."""
    assert subscriber.id is not None
    lists = []
    for membership, mailing_list, consent in store.memberships_of(session, subscriber.id):
        lists.append(
            {
                "slug": mailing_list.slug,
                "name": mailing_list.name,
                "status": membership.status.value,
                "changed_at": membership.changed_at.isoformat(),
                "consent": None
                if consent is None
                else {
                    "basis": consent.basis.value,
                    "source": consent.source,
                    "recorded_at": consent.recorded_at.isoformat(),
                    "confirmed_at": consent.confirmed_at.isoformat()
                    if consent.confirmed_at
                    else None,
                },
            }
        )
    held: dict[str, Any] = {
        "email": subscriber.email,
        "name": subscriber.name,
        "organisation": subscriber.organisation,
        "status": subscriber.status.value,
        "created": subscriber.created.isoformat(),
        "updated": subscriber.updated.isoformat(),
        "lists": lists,
        # Bounces, complaints and unsubscribe emails, and what each one changed.
        "returned_mail": [
            {
                "received_at": event.received_at.isoformat(),
                "kind": event.kind,
                "send_id": event.send_id,
                "status": event.status,
                "reason": event.reason,
                "source": event.source,
                "action": event.action,
            }
            for event in returned.events_of(session, subscriber.id)
        ],
    }
    sign_ups = signups.of_subscriber(session, subscriber.id)
    if sign_ups:
        held["web_signups"] = [
            {
                "requested_at": s.requested_at.isoformat(),
                "requested_ip": s.requested_ip,
                "confirmed_at": s.confirmed_at.isoformat() if s.confirmed_at else None,
                "confirmed_ip": s.confirmed_ip,
                "wording_shown": s.wording,
                "lists": signups.list_slugs(s),
            }
            for s in sign_ups
        ]
    left = optouts.unsubscriptions(session, subscriber.id)
    if left:
        names = {ml.id: ml.slug for _, ml, _ in store.memberships_of(session, subscriber.id)}
        held["unsubscribes"] = [
            {
                "at": u.at.isoformat(),
                "how": u.method.value,
                "list": names.get(u.list_id, "") if u.list_id else "everything",
            }
            for u in left
        ]
    return held


def rows(
    db: Database,
    *,
    list_slug: str | None = None,
    status: SubscriberStatus | None = None,
    search: str | None = None,
) -> Iterator[store.SubscriberRow]:
    """Subscribers matching the filters, streamed in the order they were added."""
    with db.session() as session:
        list_id = store.get_list(session, list_slug).id if list_slug else None
        yield from store.iter_subscribers(session, list_id=list_id, status=status, search=search)
