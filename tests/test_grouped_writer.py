"""Writes committed together (mailer.store.grouped): a burst of one-click unsubscribes is
one transaction, each caller is answered only once it is committed, and one write that
fails never fails the others. On a real database of each pass."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlmodel import Session

from mailer.config import Settings
from mailer.errors import AlreadyExists, StoreError
from mailer.store import people
from mailer.store.database import Database, open_db
from mailer.store.grouped import GroupedWriter
from mailer.store.models import MailingList


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    with open_db(settings) as database:
        yield database


def _slugs(db: Database) -> set[str]:
    with db.session() as session:
        return {row.slug for row in people.list_summaries(session)}


def _create(slug: str) -> Callable[[Session], MailingList]:
    def job(session: Session) -> MailingList:
        return people.create_list(session, slug, f"List {slug}")

    return job


@contextmanager
def _held_open(writer: GroupedWriter) -> Iterator[None]:
    """While the block runs, the writer's transaction is held open by a write that waits
    for the block to end: whatever the block hands over waits for the next group."""
    inside, release = threading.Event(), threading.Event()

    def hold(session: Session) -> None:
        inside.set()
        assert release.wait(timeout=60)

    held = writer.submit(hold)
    try:
        assert inside.wait(timeout=60), "the writer never started the holding write"
        yield
    finally:
        release.set()
    held.result(timeout=60)


def test_writes_waiting_together_are_committed_in_one_transaction(db: Database) -> None:
    writer = GroupedWriter(db, patience=15.0)
    inside, release = threading.Event(), threading.Event()

    def first(session: Session) -> MailingList:
        made = people.create_list(session, "first", "First")
        inside.set()
        assert release.wait(timeout=60), "the test never let the first write finish"
        return made

    try:
        head = writer.submit(first)
        assert inside.wait(timeout=60), "the writer never started the first write"
        # While the first transaction is open, thirty more arrive.
        rest = [writer.submit(_create(f"burst-{i:02d}")) for i in range(30)]
        assert not any(f.done() for f in rest)
        release.set()
        assert head.result(timeout=60).slug == "first"
        assert [f.result(timeout=60).slug for f in rest] == [f"burst-{i:02d}" for i in range(30)]
    finally:
        release.set()
        writer.close()
    assert {"first"} | {f"burst-{i:02d}" for i in range(30)} <= _slugs(db)
    # The first alone, then the thirty that waited meanwhile: two commits, not 31.
    assert (writer.commits, writer.writes) == (2, 31)


def test_one_failing_write_leaves_the_others_committed(db: Database) -> None:
    with db.session(write=True) as session:
        people.create_list(session, "taken", "Taken")
    writer = GroupedWriter(db, patience=15.0)
    try:
        with _held_open(writer):
            good = [writer.submit(_create(f"good-{i}")) for i in range(5)]
            bad = writer.submit(_create("taken"))
            more = writer.submit(_create("good-5"))
        with pytest.raises(AlreadyExists, match="list 'taken' exists already"):
            bad.result(timeout=60)
        assert [f.result(timeout=60).slug for f in [*good, more]] == [f"good-{i}" for i in range(6)]
    finally:
        writer.close()
    assert {f"good-{i}" for i in range(6)} <= _slugs(db)


def test_a_closed_writer_finishes_what_it_was_given(db: Database) -> None:
    writer = GroupedWriter(db, patience=15.0)
    answers = [writer.submit(_create(f"late-{i}")) for i in range(3)]
    writer.close()
    assert [f.result(timeout=0).slug for f in answers] == ["late-0", "late-1", "late-2"]
    with pytest.raises(RuntimeError, match="stopped"):
        writer.submit(_create("after"))


def test_a_write_the_database_refuses_fails_alone(db: Database) -> None:
    with db.session(write=True) as session:
        people.create_list(session, "taken", "Taken")
    writer = GroupedWriter(db, patience=15.0)

    def clash(session: Session) -> None:
        # Past the store's own check: the database's unique index refuses it.
        session.add(MailingList(slug="taken", name="Again"))
        session.flush()

    try:
        with _held_open(writer):
            before = writer.submit(_create("before"))
            refused = writer.submit(clash)
            after = writer.submit(_create("after"))
        with pytest.raises(StoreError):
            refused.result(timeout=60)
        assert (before.result(timeout=60).slug, after.result(timeout=60).slug) == (
            "before",
            "after",
        )
    finally:
        writer.close()
    assert {"before", "after"} <= _slugs(db)
