"""What sending relies on: who is eligible, and how statuses may change."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from mailer.config import Settings
from mailer.errors import StateError
from mailer.store import joining, status
from mailer.store import people as store
from mailer.store.database import Database, open_db
from mailer.store.models import Subscriber, SubscriberStatus
from mailer.subscribers.roster import add, erase, unsubscribe


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    with open_db(settings) as opened:
        with opened.session(write=True) as session:
            store.create_list(session, "all", "All practitioners")
            store.create_list(session, "health", "Health")
            store.create_list(session, "schools", "Schools")
        yield opened


def _ids(database: Database, *slugs: str) -> list[int]:
    with database.session() as session:
        return [store.get_list(session, s).id or 0 for s in slugs]


def _recipients(database: Database, *slugs: str) -> list[str]:
    ids = _ids(database, *slugs)
    with database.session() as session:
        return [r.email for r in store.eligible_recipients(session, ids)]


def _subscriber(database: Database, email: str) -> Subscriber:
    with database.session() as session:
        return store.get_subscriber(session, email)


def test_eligible_recipients_are_active_subscribed_distinct_and_in_id_order(
    database: Database,
) -> None:
    for email, slugs in [
        ("zed@example.org", ["all", "health"]),
        ("amy@example.org", ["health"]),
        ("left-one@example.org", ["all", "health"]),
        ("left-all@example.org", ["all"]),
        ("bounced@example.org", ["all"]),
        ("complained@example.org", ["health"]),
        ("erased@example.org", ["all"]),
        ("schools-only@example.org", ["schools"]),
    ]:
        for slug in slugs:
            add(database, email, slug)
    unsubscribe(database, "left-one@example.org", "all")
    unsubscribe(database, "left-all@example.org")
    erase(database, "erased@example.org")
    with database.session(write=True) as session:
        store.mark_bounced(session, [store.get_subscriber(session, "bounced@example.org").id or 0])
        store.mark_complained(
            session, [store.get_subscriber(session, "complained@example.org").id or 0]
        )

    assert _recipients(database, "all", "health") == [
        "zed@example.org",
        "amy@example.org",
        "left-one@example.org",
    ]
    assert _recipients(database, "all") == ["zed@example.org"]
    zed = _subscriber(database, "zed@example.org").id or 0
    with database.session() as session:
        assert store.count_eligible(session, _ids(database, "all", "health", "schools")) == 4
        rows = list(store.eligible_recipients(session, _ids(database, "health")))
    assert rows[0] == store.EligiblePerson(zed, "zed@example.org", "")


def test_an_erased_address_that_comes_back_behind_mailers_back_is_not_mailed(
    database: Database,
) -> None:
    add(database, "ann@example.org", "all", name="Ann")
    erase(database, "ann@example.org")
    # Someone types the person back in by hand; the suppression list still stops them.
    with database.session(write=True) as session:
        session.add(Subscriber(email="ann@example.org", name="Ann"))
        session.flush()
        restored = store.get_subscriber(session, "ann@example.org")
        session.connection().execute(
            sa.text("INSERT INTO membership VALUES (:id, 1, 'subscribed', '2025-01-01 00:00:00')"),
            {"id": restored.id},
        )
    assert _recipients(database, "all") == []
    with database.session() as session:
        assert joining.is_suppressed(session, "ann@example.org")
        assert not joining.is_suppressed(session, "someone@example.org")


def test_marking_bounced_is_set_based_and_keeps_stronger_statuses(database: Database) -> None:
    for email in ("a@example.org", "b@example.org", "c@example.org"):
        add(database, email, "all")
    unsubscribe(database, "b@example.org")
    ids = [_subscriber(database, e).id or 0 for e in ("a@example.org", "b@example.org")]
    with database.session(write=True) as session:
        assert store.mark_bounced(session, ids) == 1
        assert store.mark_bounced(session, ids) == 0
        assert store.mark_bounced(session, []) == 0
    assert _subscriber(database, "a@example.org").status == SubscriberStatus.BOUNCED
    assert _subscriber(database, "b@example.org").status == SubscriberStatus.UNSUBSCRIBED
    with database.session(write=True) as session:
        assert store.mark_complained(session, ids) == 2
    assert _subscriber(database, "b@example.org").status == SubscriberStatus.COMPLAINED


@pytest.mark.parametrize(
    "before, after, allowed",
    [
        (SubscriberStatus.ACTIVE, SubscriberStatus.BOUNCED, True),
        (SubscriberStatus.BOUNCED, SubscriberStatus.UNSUBSCRIBED, True),
        (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.COMPLAINED, True),
        (SubscriberStatus.COMPLAINED, SubscriberStatus.ERASED, True),
        (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.ACTIVE, False),
        (SubscriberStatus.BOUNCED, SubscriberStatus.ACTIVE, False),
        (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, False),
        (SubscriberStatus.COMPLAINED, SubscriberStatus.UNSUBSCRIBED, False),
        (SubscriberStatus.ERASED, SubscriberStatus.ACTIVE, False),
    ],
)
def test_status_transitions(
    database: Database, before: SubscriberStatus, after: SubscriberStatus, allowed: bool
) -> None:
    add(database, "x@example.org", "all")
    with database.session(write=True) as session:
        subscriber = store.get_subscriber(session, "x@example.org")
        subscriber.status = before
        if allowed:
            assert store.set_status(session, subscriber, after)
        else:
            with pytest.raises(StateError, match=f"who is {before} cannot become {after}"):
                store.set_status(session, subscriber, after)
            assert not store.set_status(session, subscriber, after, strict=False)
        assert not store.set_status(session, subscriber, subscriber.status)


A, U, B, C, E = (
    SubscriberStatus.ACTIVE,
    SubscriberStatus.UNSUBSCRIBED,
    SubscriberStatus.BOUNCED,
    SubscriberStatus.COMPLAINED,
    SubscriberStatus.ERASED,
)


@pytest.mark.parametrize(
    ("old", "because", "may"),
    [
        (U, status.CONFIRMED_SIGN_UP, True),
        (B, status.CONFIRMED_SIGN_UP, True),
        (C, status.CONFIRMED_SIGN_UP, False),  # a web form never undoes a complaint
        (E, status.CONFIRMED_SIGN_UP, False),
        (B, status.OPERATOR_REACTIVATION, True),
        (C, status.OPERATOR_REACTIVATION, True),
        (U, status.OPERATOR_REACTIVATION, False),  # their own choice, not an operator's
        (E, status.OPERATOR_REACTIVATION, False),
        (U, None, False),  # without a reason nothing leads back to active
        (B, "because", False),
    ],
)
def test_a_return_to_active_is_a_rule_with_its_reason(
    old: SubscriberStatus, because: str | None, may: bool, database: Database
) -> None:
    with database.session(write=True) as session:
        who = Subscriber(email="jo@example.org", status=old)
        session.add(who)
        session.flush()
        if may:
            assert status.set_subscriber_status(session, who, A, because=because)
        else:
            with pytest.raises(StateError, match=f"who is {old} cannot become active"):
                status.set_subscriber_status(session, who, A, because=because)
            assert not status.set_subscriber_status(session, who, A, because=because, strict=False)
        assert who.status == (A if may else old)
