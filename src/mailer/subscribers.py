"""Subscribers as people see them: addresses, adding, looking up, exporting, erasing.

Addresses are validated with email-validator without DNS (so it works offline) and
normalised: trimmed, a ``mailto:`` or ``Name <...>`` wrapper removed, the domain in its
IDNA-decoded form, and the whole address lower-cased. Mail systems treat the part before
the @ without regard to case, and two spellings of one address would send one person two
copies, so mailer stores one spelling.

CSV import lives in :mod:`mailer.importer`; the queries in :mod:`mailer.store`.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import email_validator

from mailer import store
from mailer.config import Settings
from mailer.db import Database, open_db
from mailer.errors import InvalidInput, NotFound, Suppressed
from mailer.models import LawfulBasis, SubscriberStatus
from mailer.store import Candidate, Outcome
from mailer.suppression import suppression_of

# --- Addresses -------------------------------------------------------------------------------

# Spaces that spreadsheets and copy-paste leave around addresses, including no-break and
# zero-width ones that str.strip() alone does not remove.
_JUNK = ' \t\r\n\u00a0\u200b\u200c\u200d\u2060\ufeff"'

# The everyday shape of an address, for which email-validator's verdict is known in advance
# (valid, normalised by lower-casing). email-validator takes about 0.1 ms per address, so
# checking this shape first saves some ten seconds on a 100,000-row import; anything else
# goes to email-validator. tests/test_subscribers_addresses.py checks on thousands of
# damaged addresses that mailer decides exactly as email-validator does.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_EVERYDAY = re.compile(
    rf"[a-z0-9_'+-]{{1,64}}(?:\.[a-z0-9_'+-]{{1,64}})*@(?:{_LABEL}\.)+[a-z]{{2,63}}",
    re.IGNORECASE,
)
_SPECIAL = tuple("." + d for d in email_validator.SPECIAL_USE_DOMAIN_NAMES)


def _everyday(address: str) -> bool:
    if len(address) > 254 or not _EVERYDAY.fullmatch(address):
        return False
    local, _, domain = address.rpartition("@")
    return len(local) <= 64 and "--" not in domain and not ("." + domain.lower()).endswith(_SPECIAL)


def parse_address(raw: str) -> tuple[str, str]:
    """The normalised address in ``raw`` and any display name given with it.

    Raises :class:`InvalidInput` saying what is wrong, in email-validator's words.
    """
    text = raw.strip(_JUNK)
    if text.lower().startswith("mailto:"):
        text = text[7:].strip(_JUNK)
    if not text:
        raise InvalidInput("no email address")
    if _everyday(text):
        return text.lower(), ""
    try:
        valid = email_validator.validate_email(
            text, check_deliverability=False, allow_display_name=True
        )
    except email_validator.EmailNotValidError as exc:
        raise InvalidInput(f"{raw.strip()!r} is not a valid email address ({exc})") from None
    return valid.normalized.lower(), (valid.display_name or "").strip()


def normalise(raw: str) -> str:
    """The normalised form of one email address, or :class:`InvalidInput`."""
    return parse_address(raw)[0]


def clean_text(value: str, limit: int = 200) -> str:
    """A name or organisation with stray spaces removed, cut to the column's length."""
    return " ".join(value.split())[:limit]


def when(moment: dt.datetime | None) -> str:
    """A timestamp as shown to people: UTC, to the minute."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


# --- One person ------------------------------------------------------------------------------


def add(
    db: Database,
    raw_email: str,
    list_slug: str,
    *,
    name: str = "",
    organisation: str = "",
    basis: LawfulBasis = LawfulBasis.PUBLIC_TASK,
    source: str = "mailer subscribers add",
) -> Outcome:
    """Put one person on a list, under exactly the rules an import follows."""
    email, display_name = parse_address(raw_email)
    candidate = Candidate(email, clean_text(name or display_name), clean_text(organisation))
    with db.session(write=True) as session:
        mailing_list = store.get_list(session, list_slug)
        [decision] = store.subscribe_many(
            session, mailing_list, [candidate], basis=basis, source=source
        )
    if decision.outcome is Outcome.SUPPRESSED:
        raise Suppressed(f"{email} {decision.reason}: mailer never subscribes them again")
    return decision.outcome


def unsubscribe(db: Database, raw_email: str, list_slug: str | None = None) -> bool:
    """Unsubscribe a person from one list or from everything; False if they already were."""
    email = normalise(raw_email)
    with db.session(write=True) as session:
        subscriber = store.get_subscriber(session, email)
        mailing_list = store.get_list(session, list_slug) if list_slug else None
        return store.unsubscribe(session, subscriber, mailing_list)


def erase(db: Database, raw_email: str) -> store.Erasure:
    """Erase everything held about a person, keeping only a keyed hash of the address."""
    email = normalise(raw_email)
    with db.session(write=True) as session:
        return store.erase(session, email)


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
        return {
            "email": email,
            "name": subscriber.name,
            "organisation": subscriber.organisation,
            "status": subscriber.status.value,
            "created": subscriber.created.isoformat(),
            "updated": subscriber.updated.isoformat(),
            "lists": lists,
        }


# --- Many people -----------------------------------------------------------------------------


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


EXPORT_COLUMNS = ("email", "name", "organisation", "status", "lists", "created")
# Spreadsheets run a cell starting with one of these as a formula; a leading apostrophe
# makes Excel show it as text (OWASP "CSV injection"). Names and organisations get it;
# addresses do not, because an apostrophe is a valid address character and would change
# the address, and a validated address cannot hold a formula's spaces or brackets.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def export_csv(
    db: Database,
    out: TextIO,
    *,
    list_slug: str | None = None,
    status: SubscriberStatus | None = None,
) -> int:
    """Write subscribers as CSV to ``out`` row by row; returns how many were written."""
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for row in rows(db, list_slug=list_slug, status=status):
        writer.writerow(
            [
                row.email,
                _cell(row.name),
                _cell(row.organisation),
                row.status.value,
                row.lists,
                row.created.isoformat(),
            ]
        )
        count += 1
    return count


# --- Demo data -------------------------------------------------------------------------------

DEMO_LIST = ("demo", "Demo practitioners", "Made-up people for trying mailer out.")
DEMO_PEOPLE = (
    ("amira.hussain@example.org", "Amira Hussain", "Carlisle Primary School"),
    ("ben.ellis@example.org", "Ben Ellis", "Children's Social Care"),
    ("chloe.nixon@example.org", "Chloe Nixon", "North Cumbria Health Visiting"),
    ("dev.patel@example.org", "Dev Patel", "Cumbria Constabulary"),
    ("erin.walsh@example.org", "Erin Walsh", "Workington Academy"),
    ("finn.robson@example.org", "Finn Robson", "Carlisle Youth Zone"),
)
DEMO_UNSUBSCRIBED = "finn.robson@example.org"


@dataclass(frozen=True)
class DemoSummary:
    list_slug: str
    subscribed: int
    unsubscribed: int


def seed_demo(settings: Settings) -> DemoSummary:
    """Create the ``demo`` list with six made-up people, one unsubscribed; safe to rerun."""
    slug, name, description = DEMO_LIST
    with open_db(settings) as db, db.session(write=True) as session:
        mailing_list = store.find_list(session, slug) or store.create_list(
            session, slug, name, description
        )
        store.subscribe_many(
            session,
            mailing_list,
            [Candidate(e, n, o) for e, n, o in DEMO_PEOPLE],
            basis=LawfulBasis.PUBLIC_TASK,
            source="demo data",
        )
        leaver = store.get_subscriber(session, DEMO_UNSUBSCRIBED)
        store.unsubscribe(session, leaver)
        assert mailing_list.id is not None
        counts = store.status_counts(session, mailing_list.id)
    return DemoSummary(
        slug,
        subscribed=counts[SubscriberStatus.ACTIVE],
        unsubscribed=sum(counts.values()) - counts[SubscriberStatus.ACTIVE],
    )
