"""Aggregate link clicks (``track_clicks``): a count per link of an issue, never who clicked.

No subscriber id, address, IP address or time is stored with a click, so the counts are
not personal data (see docs/web.md on the ICO's guidance on storage and access technologies).
"""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailer.store.models import LinkClick, table_of

_link_click = table_of(LinkClick)


class LinkCount(NamedTuple):
    url: str
    clicks: int


def record_click(session: Session, slug: str, url: str) -> None:
    """Add one to the count of ``url`` in issue ``slug`` (an upsert, safe under concurrency)."""
    conn = session.connection()
    changed = conn.execute(
        sa.update(_link_click)
        .where(_link_click.c.slug == slug, _link_click.c.url == url)
        .values(clicks=_link_click.c.clicks + 1)
    )
    if changed.rowcount == 0:
        conn.execute(sa.insert(_link_click).values(slug=slug, url=url, clicks=1))


def clicks_per_link(session: Session, slug: str) -> list[LinkCount]:
    """How many times each link of ``slug`` was followed, most clicked first."""
    query = (
        select(LinkClick.url, LinkClick.clicks)
        .where(LinkClick.slug == slug)
        .order_by(col(LinkClick.clicks).desc(), col(LinkClick.url))
    )
    return [LinkCount(url, clicks) for url, clicks in session.exec(query)]


def clicks_per_issue(session: Session) -> dict[str, int]:
    """Total clicks of every issue with any."""
    query = select(LinkClick.slug, sa.func.sum(LinkClick.clicks)).group_by(LinkClick.slug)
    return {slug: int(total) for slug, total in session.exec(query)}
