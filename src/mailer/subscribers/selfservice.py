"""What a person can do for themselves from a link or a form: unsubscribe, choose lists and
details, download what is held about them, sign up with double opt-in, ask for a link.

``mailer serve`` and ``mailer subscribers unsubscribe --token`` call these; each takes an
open :class:`~mailer.store.database.Database` and returns plain results for a page.

Rules that hold throughout:

- a link's token is checked first; a forged, altered or wrong-purpose token is a
  :class:`~mailer.errors.BadToken` and changes nothing;
- the sign-up and "manage" forms answer the same whether or not the address is known, and
  never change or unsubscribe an address that is already confirmed;
- the forms queue their email (:mod:`~mailer.subscribers.outgoing`), limited per network,
  per mailbox and for the whole site; a limit decides whether mail goes, never what the
  page says, and at most one email goes to a mailbox per cooling-off period.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailer import tokens, urls
from mailer.addresses import clean_text, mask, normalise
from mailer.config import Settings
from mailer.errors import BadToken, ExpiredToken, InvalidInput
from mailer.store import optouts, signups
from mailer.store import people as store
from mailer.store.database import Database
from mailer.store.models import (
    MailingList,
    Signup,
    Subscriber,
    SubscriberStatus,
    UnsubscribeMethod,
    utcnow,
)
from mailer.store.suppression import erased_among
from mailer.subscribers import notices, outgoing
from mailer.subscribers.roster import held_about

if TYPE_CHECKING:
    from sqlmodel import Session

GONE = (SubscriberStatus.ERASED,)


# --- unsubscribe links -----------------------------------------------------------------------


@dataclass(frozen=True)
class UnsubscribePage:
    """What the unsubscribe page shows (GET) or did (POST)."""

    masked: str  # the address, partly hidden; "" if nothing is held any more
    lists: list[str]  # names of the lists this email came from that the person is still on
    active: bool  # whether they are still mailed anything at all
    changed: bool = False


def _unsubscribe_ids(settings: Settings, token: str) -> tuple[int, int]:
    ids = tokens.read(tokens.keys_of(settings), tokens.UNSUBSCRIBE, token)
    if len(ids) != 2:
        raise BadToken("this link is not valid")
    subscriber_id, send_id = ids
    if subscriber_id == 0:
        raise BadToken("this link came in a proof copy, which was not sent to a subscriber")
    return subscriber_id, send_id


def _page(session: Session, who: Subscriber | None, lists: list[MailingList]) -> UnsubscribePage:
    if who is None or who.status in GONE or who.id is None:
        return UnsubscribePage("", [], False)
    on = optouts.subscribed_list_ids(session, who.id)
    return UnsubscribePage(
        mask(who.email or ""),
        [ml.name for ml in lists if ml.id in on],
        who.status == SubscriberStatus.ACTIVE and bool(on),
    )


def unsubscribe_page(db: Database, token: str) -> UnsubscribePage:
    """What GET /unsubscribe/TOKEN shows; changes nothing."""
    subscriber_id, send_id = _unsubscribe_ids(db.settings, token)
    with db.session() as session:
        who = optouts.subscriber(session, subscriber_id)
        return _page(session, who, optouts.lists_of_send(session, send_id))


def unsubscribe(
    db: Database, token: str, *, everything: bool, method: UnsubscribeMethod
) -> UnsubscribePage:
    """Unsubscribe the person a token names from the lists of the email it came in, or from
    everything; idempotent."""
    change = unsubscribe_change(db.settings, token, everything=everything, method=method)
    with db.session(write=True) as session:
        return change(session)


def unsubscribe_change(
    settings: Settings, token: str, *, everything: bool, method: UnsubscribeMethod
) -> Callable[[Session], UnsubscribePage]:
    """The change :func:`unsubscribe` makes, to run in a transaction the caller commits
    (``mailer serve`` commits a burst of one-click unsubscribes together). The token is
    checked here, before anything is written: a bad one raises :class:`BadToken` now."""
    subscriber_id, send_id = _unsubscribe_ids(settings, token)

    def change(session: Session) -> UnsubscribePage:
        who = optouts.subscriber(session, subscriber_id)
        if who is None or who.status in GONE:
            return UnsubscribePage("", [], False)
        lists = optouts.lists_of_send(session, send_id)
        scope = None if everything or not lists else lists
        send = send_id if lists else None
        changed = optouts.unsubscribe(session, who, scope, method, send)
        page = _page(session, who, lists)
        return UnsubscribePage(page.masked, page.lists, page.active, changed)

    return change


# --- preferences -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    slug: str
    name: str
    description: str
    subscribed: bool


@dataclass(frozen=True)
class Preferences:
    masked: str
    name: str
    organisation: str
    status: SubscriberStatus
    choices: list[Choice] = field(default_factory=list)
    # Opened with a fresh link from "manage by email", which may show the full record.
    fresh: bool = False


# How long the link "manage by email" sends may show everything held about a person.
FRESH_LINK_HOURS = 4


def fresh_link_token(settings: Settings, subscriber_id: int, *, now: float) -> str:
    """The token of the link "manage by email" sends: it expires after FRESH_LINK_HOURS."""
    key = settings.require_secret_key()
    return tokens.make_expiring(key, tokens.PREFERENCES_FRESH, now, subscriber_id)


def _preferences_id(settings: Settings, token: str, now: float) -> tuple[int, bool]:
    """(subscriber id, whether the link is a fresh one) of a preferences link.

    The link in every issue never expires and may have been forwarded: it lets its holder
    choose lists and unsubscribe, and shows the address masked. A fresh link from "manage
    by email" also opens the full record, for FRESH_LINK_HOURS.
    """
    keys = tokens.keys_of(settings)
    try:
        ids, fresh = tokens.read(keys, tokens.PREFERENCES, token), False
    except BadToken:
        try:
            ids = tokens.read_expiring(
                keys,
                tokens.PREFERENCES_FRESH,
                token,
                now=now,
                max_age_seconds=FRESH_LINK_HOURS * 3600,
            )
        except ExpiredToken:
            raise ExpiredToken(
                f"links sent by email work for {FRESH_LINK_HOURS} hours: ask for a new one "
                "on the Manage your subscription page"
            ) from None
        fresh = True
    if len(ids) != 1 or ids[0] == 0:
        raise BadToken("this link is not valid")
    return ids[0], fresh


def _person(session: Session, subscriber_id: int) -> Subscriber:
    who = optouts.subscriber(session, subscriber_id)
    if who is None or who.status in GONE:
        raise BadToken("nothing is held about you any more, so there is nothing to manage")
    return who


def _offered(session: Session, who: Subscriber) -> tuple[list[MailingList], set[int]]:
    """The public lists, and any other list the person is on (so they can leave it)."""
    assert who.id is not None
    on = optouts.subscribed_list_ids(session, who.id)
    public = optouts.public_lists(session)
    theirs = [ml for _, ml, _ in store.memberships_of(session, who.id) if ml.id in on]
    offered = {ml.id: ml for ml in [*public, *theirs]}
    return sorted(offered.values(), key=lambda ml: ml.name), on


def _preferences(session: Session, who: Subscriber, fresh: bool) -> Preferences:
    offered, on = _offered(session, who)
    return Preferences(
        mask(who.email or ""),
        who.name,
        who.organisation,
        who.status,
        [Choice(ml.slug, ml.name, ml.description, ml.id in on) for ml in offered],
        fresh,
    )


def preferences(db: Database, token: str, *, now: float) -> Preferences:
    subscriber_id, fresh = _preferences_id(db.settings, token, now)
    with db.session() as session:
        return _preferences(session, _person(session, subscriber_id), fresh)


def save_preferences(
    db: Database,
    token: str,
    *,
    name: str,
    organisation: str,
    chosen: Collection[str],
    now: float,
) -> Preferences:
    """Apply the preferences form: details, and which of the offered lists to be on."""
    subscriber_id, fresh = _preferences_id(db.settings, token, now)
    with db.session(write=True) as session:
        who = _person(session, subscriber_id)
        optouts.update_details(session, who, clean_text(name), clean_text(organisation))
        if who.status == SubscriberStatus.ACTIVE:
            offered, on = _offered(session, who)
            leave = [ml for ml in offered if ml.id in on and ml.slug not in chosen]
            join = [ml for ml in offered if ml.id not in on and ml.slug in chosen and ml.public]
            if leave:
                optouts.unsubscribe(session, who, leave, UnsubscribeMethod.PREFERENCES)
            if join:
                optouts.join(session, who, join, source="preferences page")
        return _preferences(session, who, fresh)


def unsubscribe_everything(db: Database, token: str, *, now: float) -> Preferences:
    subscriber_id, fresh = _preferences_id(db.settings, token, now)
    with db.session(write=True) as session:
        who = _person(session, subscriber_id)
        optouts.unsubscribe(session, who, None, UnsubscribeMethod.PREFERENCES)
        return _preferences(session, who, fresh)


def held_data(db: Database, token: str, *, now: float) -> dict[str, Any]:
    """Everything held about the person, as ``mailer subscribers show --json`` prints it.

    Only through a fresh link from "manage by email": the address in full, the IP
    addresses of sign-ups and the history are not for whoever a newsletter was forwarded to.
    """
    subscriber_id, fresh = _preferences_id(db.settings, token, now)
    if not fresh:
        raise BadToken(
            "the link in a newsletter cannot show everything we hold about you: ask for a "
            "link by email on the Manage your subscription page"
        )
    with db.session() as session:
        return held_about(session, _person(session, subscriber_id))


# --- sign-up with double opt-in --------------------------------------------------------------


@dataclass(frozen=True)
class SignupRequest:
    email: str
    name: str
    organisation: str
    lists: list[str]
    consent: bool
    honeypot: str  # a field people never see; bots fill it in
    ip: str


@functools.cache
def _blocklist(path: Path, mtime: float) -> frozenset[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return frozenset(
        line.strip().lower() for line in lines if line.strip() and not line.startswith("#")
    )


def _blocked(settings: Settings, email: str) -> bool:
    if not settings.web.blocklist:
        return False
    path = settings.root / settings.web.blocklist
    domain = email.rpartition("@")[2]
    return domain in _blocklist(path, path.stat().st_mtime)


def _when(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC)


def signup_lists(db: Database) -> list[MailingList]:
    with db.session() as session:
        return optouts.public_lists(session)


def request_signup(db: Database, form: SignupRequest, *, now: float) -> None:
    """Check the form and queue a confirmation email if one is due.

    Raises :class:`InvalidInput` for a mistake in the form (said on the form). Otherwise
    returns the same way, after the same work, whether or not the address is known, was
    mailed, or was left alone (:mod:`~mailer.subscribers.outgoing`).
    """
    change = signup_change(db.settings, form, now=now)
    with db.session(write=True) as session:
        change(session)


def signup_change(
    settings: Settings, form: SignupRequest, *, now: float
) -> Callable[[Session], None]:
    """The writes :func:`request_signup` makes, to run in a transaction the caller commits
    (``mailer serve`` commits a burst of them together). The form is checked here first:
    a mistake raises :class:`InvalidInput` before anything is written."""
    if form.honeypot:
        return _nothing
    email = normalise(form.email)
    if not form.lists:
        raise InvalidInput("choose at least one list")
    if not form.consent:
        raise InvalidInput("tick the box to agree to receive the newsletter")
    if _blocked(settings, email):
        raise InvalidInput("addresses at this domain are not accepted: use your work address")
    when = _when(now)

    def change(session: Session) -> None:
        public = {ml.slug: ml for ml in optouts.public_lists(session)}
        chosen = [slug for slug in dict.fromkeys(form.lists) if slug in public]
        if not chosen:
            raise InvalidInput("choose at least one list")
        verdict = outgoing.decide(session, settings, outgoing.CONFIRM, email, form.ip, when)
        expiry = dt.timedelta(days=settings.web.confirm_days)
        signups.forget_unconfirmed(session, when - expiry)
        known = store.find_subscriber(session, email)
        on = optouts.subscribed_list_ids(session, known.id if known and known.id else 0)
        wanted = not (
            known is not None
            and (
                known.status in (SubscriberStatus.COMPLAINED, SubscriberStatus.ERASED)
                or (
                    known.status == SubscriberStatus.ACTIVE
                    and all(public[s].id in on for s in chosen)
                )
            )
        )
        erased = bool(erased_among(session, [email]))
        due = wanted and not erased
        signup_id = 0
        if due and verdict.allowed:
            signup = signups.create(
                session,
                email,
                clean_text(form.name),
                clean_text(form.organisation),
                chosen,
                settings.web.consent,
                form.ip,
            )
            assert signup.id is not None
            signup_id = signup.id
        else:
            signups.create_placeholder(session, chosen, settings.web.consent)
        token = tokens.make_expiring(settings.require_secret_key(), tokens.CONFIRM, now, signup_id)
        text = notices.confirmation_text(
            settings,
            urls.confirm_url(settings, token),
            [public[s].name for s in chosen],
            settings.web.confirm_days,
        )
        outgoing.queue(
            session,
            settings,
            verdict,
            kind=outgoing.CONFIRM,
            to=email,
            subject=f"Confirm your subscription to {settings.name}",
            text=text,
            due=due,
            now=when,
        )

    return change


def _nothing(session: Session) -> None:
    """What a form a robot filled in (the hidden field) writes: nothing."""


@dataclass(frozen=True)
class Confirmation:
    lists: list[str]  # names of the lists
    done: bool  # confirmed already (GET) or now (POST)
    preferences_token: str = ""


def _signup(session: Session, settings: Settings, token: str, now: float) -> Signup:
    days = settings.web.confirm_days
    try:
        ids = tokens.read_expiring(
            tokens.keys_of(settings), tokens.CONFIRM, token, now=now, max_age_seconds=days * 86400
        )
    except ExpiredToken:
        raise ExpiredToken(
            f"confirmation links work for {days} days: please sign up again"
        ) from None
    signup = signups.get(session, ids[0]) if len(ids) == 1 else None
    if signup is None:
        raise BadToken("this sign-up is no longer waiting to be confirmed: please sign up again")
    return signup


def _names(session: Session, slugs: list[str]) -> list[MailingList]:
    found = [store.find_list(session, slug) for slug in slugs]
    return [ml for ml in found if ml is not None]


def confirmation(db: Database, token: str, *, now: float) -> Confirmation:
    """What GET /confirm/TOKEN shows; changes nothing."""
    with db.session() as session:
        signup = _signup(session, db.settings, token, now)
        lists = _names(session, signups.list_slugs(signup))
        return Confirmation([ml.name for ml in lists], signup.confirmed_at is not None)


def confirm(db: Database, token: str, *, ip: str, now: float) -> Confirmation:
    """Confirm a sign-up: the person joins the lists with a record of their consent."""
    settings = db.settings
    with db.session(write=True) as session:
        signup = _signup(session, settings, token, now)
        lists = _names(session, signups.list_slugs(signup))
        if signup.confirmed_at is not None:
            return Confirmation([ml.name for ml in lists], True)
        when = utcnow()
        email = signup.email or ""
        who = store.find_subscriber(session, email)
        if who is None:
            who = Subscriber(email=email, name=signup.name, organisation=signup.organisation)
            session.add(who)
            session.flush()
        if who.status in (SubscriberStatus.COMPLAINED, SubscriberStatus.ERASED):
            raise BadToken("this sign-up can no longer be confirmed: please contact us")
        assert who.id is not None and signup.id is not None
        optouts.join(session, who, lists, source=f"web sign-up {signup.id}", now=when)
        signups.confirmed(session, signup, who, ip, when)
        key = settings.require_secret_key()
        preferences_token = tokens.make(key, tokens.PREFERENCES, who.id)
        for ml in lists:
            outgoing.queue_welcome(
                session,
                settings,
                to=email,
                list_slug=ml.slug,
                list_name=ml.name,
                preferences_link=urls.preferences_url(settings, preferences_token),
                now=_when(now),
            )
        return Confirmation([ml.name for ml in lists], True, preferences_token)


# --- manage by email -------------------------------------------------------------------------


def request_manage_link(
    db: Database, email_typed: str, *, honeypot: str, ip: str, now: float
) -> None:
    """Queue a fresh link to the preferences page (it expires after FRESH_LINK_HOURS) if
    the address is known; the same answer, after the same work, if not."""
    change = manage_link_change(db.settings, email_typed, honeypot=honeypot, ip=ip, now=now)
    with db.session(write=True) as session:
        change(session)


def manage_link_change(
    settings: Settings, email_typed: str, *, honeypot: str, ip: str, now: float
) -> Callable[[Session], None]:
    """The writes :func:`request_manage_link` makes, to run in a transaction the caller
    commits; a mistake in the address raises :class:`InvalidInput` first."""
    if honeypot:
        return _nothing
    email = normalise(email_typed)
    when = _when(now)

    def change(session: Session) -> None:
        verdict = outgoing.decide(session, settings, outgoing.MANAGE, email, ip, when)
        who = store.find_subscriber(session, email)
        due = who is not None and who.status not in GONE and who.id is not None
        who_id = who.id if due and who is not None and who.id is not None else 0
        token = fresh_link_token(settings, who_id, now=now)
        text = notices.preferences_text(
            settings, urls.preferences_url(settings, token), FRESH_LINK_HOURS
        )
        outgoing.queue(
            session,
            settings,
            verdict,
            kind=outgoing.MANAGE,
            to=email,
            subject=f"Your {settings.name} subscription",
            text=text,
            due=due,
            now=when,
        )

    return change
