"""Mailing lists: the operations behind ``mailer lists``."""

from __future__ import annotations

from dataclasses import dataclass

from mailer.config import Settings
from mailer.store import optouts, people
from mailer.store.database import open_db
from mailer.store.models import MailingList, SubscriberStatus


def create(
    settings: Settings, slug: str, name: str, description: str = "", *, public: bool = False
) -> MailingList:
    with open_db(settings) as db, db.session(write=True) as session:
        return people.create_list(session, slug, name, description, public=public)


def summaries(settings: Settings) -> list[people.ListSummary]:
    with open_db(settings) as db, db.session() as session:
        return people.list_summaries(session)


@dataclass(frozen=True)
class ListDetail:
    mailing_list: MailingList
    counts: dict[SubscriberStatus, int]


def show(settings: Settings, slug: str) -> ListDetail:
    with open_db(settings) as db, db.session() as session:
        mailing_list = people.get_list(session, slug)
        assert mailing_list.id is not None
        return ListDetail(mailing_list, people.status_counts(session, mailing_list.id))


def rename(settings: Settings, slug: str, name: str) -> tuple[str, MailingList]:
    """Give a list a new name; returns the old name and the list."""
    with open_db(settings) as db, db.session(write=True) as session:
        old = people.get_list(session, slug).name
        return old, people.rename_list(session, slug, name)


def set_public(settings: Settings, slug: str, public: bool) -> MailingList:
    """Offer a list on the sign-up form and the preferences page, or stop offering it."""
    with open_db(settings) as db, db.session(write=True) as session:
        return optouts.set_public(session, slug, public)
