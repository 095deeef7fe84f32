"""Who may receive a copy of a send, and why not: the one rule, written once.

A person may be mailed a copy of a send when every condition of this table holds
(:func:`conditions` builds it), checked in this order:

==========================  ==================================================
condition                   why not, when it fails (a skipped row's reason)
==========================  ==================================================
status is ``active``        the status itself (``unsubscribed``, ``bounced``...)
an address is held          ``erased``
subscribed to a list of     :data:`OFF_THE_LISTS`
the send
the address is not          never written to the ledger (read where
suppressed                  addresses enter it: see below)
==========================  ==================================================

A person whose row is gone altogether is ``erased`` too.

The same conditions serve three paths, so they never drift apart:

- creating a send writes the ledger from :func:`recipients` (:func:`query` for the
  people, then the suppression list);
- both claim paths of :mod:`mailer.store.ledger_writer` check each ledger row's person *now*
  with :func:`of_row` and record :func:`why_not` for those skipped: the same expressions
  compiled once per writer into the statements it runs on the DB-API connection
  (:func:`sqlite_text` on SQLite; the PostgreSQL writer's own compilation for psycopg).

The suppression list holds keyed hashes of addresses, which SQL cannot compute, so it is
read in Python where addresses enter the ledger; at claim time a ledger row's address is
fixed, and the only way onto the suppression list (erasure, :func:`mailer.store.people.erase`)
also makes the person ``erased`` with no address, which the claim's conditions see.
``tests/test_eligibility.py`` runs one table of cases through all three paths.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlmodel import Session

from mailer.store.models import Membership, Subscriber, table_of
from mailer.store.status import MembershipStatus, SubscriberStatus
from mailer.store.suppression import address_hash, all_hashes, hash_key

SUBSCRIBER = table_of(Subscriber)
MEMBERSHIP = table_of(Membership)
YIELD_PER = 1000

# Why a claimed row was skipped, when the person is still active: no longer on any list.
OFF_THE_LISTS = "unsubscribed from the lists of this send"
# Why, when the person is gone or has no address left.
ERASED = SubscriberStatus.ERASED.value


class Condition(NamedTuple):
    """One condition of the rule: what must hold, the reason recorded when it does not, and
    whether it reads the person's own row (else their memberships)."""

    holds: sa.ColumnElement[bool]
    why_not: sa.ColumnElement[str]
    of_subscriber: bool = True


class EligiblePerson(NamedTuple):
    subscriber_id: int
    email: str
    name: str


def conditions(
    list_ids: Iterable[int], person: sa.ColumnElement[int] | None = None
) -> list[Condition]:
    """The rule for a send to ``list_ids``, in the order checked: over the subscriber
    table, whose person is ``person`` (their id; the subscriber row's own by default)."""
    s, m = SUBSCRIBER.c, MEMBERSHIP.c
    # The lists are named, not joined through send_list: with a join, PostgreSQL may walk
    # a whole list's memberships for each row claimed when its statistics are stale (seen:
    # 1.7 ms a row on a fresh 40,000-person database); by name, the membership's primary
    # key (subscriber, list) answers at once.
    on_a_list = (
        sa.select(m.subscriber_id)
        .where(
            m.subscriber_id == (s.id if person is None else person),
            m.list_id.in_(sorted(set(list_ids))),
            m.status == MembershipStatus.SUBSCRIBED,
        )
        .correlate_except(MEMBERSHIP)
        .exists()
    )
    return [
        Condition(s.status == SubscriberStatus.ACTIVE, sa.cast(s.status, sa.String)),
        Condition(s.email.is_not(None), sa.literal(ERASED)),
        Condition(on_a_list, sa.literal(OFF_THE_LISTS), of_subscriber=False),
    ]


def on_the_list(subscriber: sa.FromClause, membership: sa.FromClause) -> sa.ColumnElement[bool]:
    """For a person joined to one of their memberships: whether a send to that list would
    mail them, before their address and the suppression list (the lists' counts)."""
    return sa.and_(
        membership.c.status == MembershipStatus.SUBSCRIBED,
        subscriber.c.status == SubscriberStatus.ACTIVE,
    )


def eligible(list_ids: Iterable[int]) -> sa.ColumnElement[bool]:
    """Whether a subscriber row may be mailed a copy of a send to ``list_ids`` (the
    conditions SQL can check: the suppression list is :func:`recipients`')."""
    return sa.and_(*(c.holds for c in conditions(list_ids)))


def query(list_ids: Iterable[int]) -> sa.Select[tuple[int, str, str]]:
    """(id, email, name) of the people a send to ``list_ids`` may go to, by id, before the
    suppression list: a query to refine (e.g. leave out people who already had it)."""
    s = SUBSCRIBER.c
    found = sa.select(s.id, s.email, s.name).where(eligible(list_ids)).order_by(s.id)
    return cast("sa.Select[tuple[int, str, str]]", found)


def recipients(session: Session, list_ids: Iterable[int]) -> Iterator[EligiblePerson]:
    """Who a send to ``list_ids`` goes to, streamed in subscriber id order: :func:`query`
    without the suppressed addresses."""
    # Erasure removes the address, so this is a second line of defence: an erased address
    # that comes back behind mailer's back (typed into the database, or restored from an
    # export) is still never mailed.
    erased = all_hashes(session)
    key = hash_key(session) if erased else b""
    rows = session.connection().execute(query(list_ids).execution_options(yield_per=YIELD_PER))
    for row in rows:
        if erased and address_hash(key, row.email) in erased:
            continue
        yield EligiblePerson(row.id, row.email, row.name)


def count(session: Session, list_ids: Iterable[int]) -> int:
    """How many people a send to ``list_ids`` would go to (see :func:`recipients`)."""
    return sum(1 for _ in recipients(session, list_ids))


def of_row(person: sa.Column[int], list_ids: Sequence[int]) -> sa.ColumnElement[bool]:
    """Whether the person a row names (``person``, e.g. a ledger row's subscriber id) may
    be mailed now, for a send to ``list_ids``.

    The person's row and their memberships are two lookups by primary key side by side,
    not one inside the other: the claim reads no more rows than it must."""
    s = SUBSCRIBER.c
    rule = conditions(list_ids, person)
    own = [c.holds for c in rule if c.of_subscriber]
    person_ok = sa.select(s.id).where(s.id == person, *own).correlate(person.table).exists()
    return sa.and_(person_ok, *(c.holds for c in rule if not c.of_subscriber))


def why_not(person: sa.Column[int], list_ids: Sequence[int]) -> sa.ColumnElement[str]:
    """Why the person a row names may not be mailed: the first condition that fails (see
    the module's table); ``erased`` when their row is gone."""
    s = SUBSCRIBER.c
    first = sa.case(*((sa.not_(c.holds), c.why_not) for c in conditions(list_ids, person)))
    reason = sa.select(first).where(s.id == person).correlate(person.table).scalar_subquery()
    return sa.func.coalesce(reason, sa.literal(ERASED))


def sqlite_text(statement: sa.ClauseElement) -> str:
    """A Core statement as SQLite SQL text with its values written in, for the ledger
    writer that runs plain statements on the DB-API connection: built once per writer."""
    compiled = statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
    return str(compiled)
