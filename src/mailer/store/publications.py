"""Queries on published issues: an issue is in the archive and the feed once it has a row.

An issue is published when its first send to a list starts
(:func:`mailer.operations.service.create`) or when ``mailer publish`` says so; every other
issue is a draft and never shown publicly.
"""

from __future__ import annotations

import datetime as dt

from sqlmodel import Session, col, select

from mailer.store.models import Publication, PublishedBy, utcnow


def publish(session: Session, slug: str, by: PublishedBy) -> tuple[Publication, bool]:
    """Publish ``slug`` unless it is already; the publication and whether it is new."""
    found = session.get(Publication, slug)
    if found is not None:
        return found, False
    publication = Publication(slug=slug, published_at=utcnow(), published_by=by)
    session.add(publication)
    session.flush()
    return publication, True


def published(session: Session) -> dict[str, dt.datetime]:
    """Every published slug and when it was published."""
    rows = session.exec(select(Publication.slug, Publication.published_at))
    return dict(rows.all())


def is_published(session: Session, slug: str) -> bool:
    query = select(Publication.slug).where(col(Publication.slug) == slug)
    return session.exec(query).first() is not None
