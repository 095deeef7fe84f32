"""Made-up people for ``make demo``: a demo list with six subscribers, one unsubscribed."""

from __future__ import annotations

from dataclasses import dataclass

from mailer.config import Settings
from mailer.store import joining, people
from mailer.store.database import open_db
from mailer.store.joining import Candidate
from mailer.store.models import LawfulBasis, SubscriberStatus

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
        mailing_list = people.find_list(session, slug) or people.create_list(
            session, slug, name, description, public=True
        )
        joining.subscribe_many(
            session,
            mailing_list,
            [Candidate(e, n, o) for e, n, o in DEMO_PEOPLE],
            basis=LawfulBasis.PUBLIC_TASK,
            source="demo data",
        )
        leaver = people.get_subscriber(session, DEMO_UNSUBSCRIBED)
        people.unsubscribe(session, leaver)
        assert mailing_list.id is not None
        counts = people.status_counts(session, mailing_list.id)
    return DemoSummary(
        slug,
        subscribed=counts[SubscriberStatus.ACTIVE],
        unsubscribed=sum(counts.values()) - counts[SubscriberStatus.ACTIVE],
    )
