"""The tests' own view of a newsletter's database, on either database.

Rows are read with SQLAlchemy Core and plain SQL, not through mailer's store, so the tests
check what was really stored. The database is the one the newsletter's commands use:
``MAILER_DATABASE_URL`` in the PostgreSQL pass (see conftest.py), the folder's SQLite file
otherwise. Queries are written with ``?`` placeholders, as they were for sqlite3, and
timestamps come back as the text SQLite holds ("2025-07-01 11:00:00.000000", naive UTC),
whichever database holds them, so an assertion reads the same on both.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

_PLACEHOLDER = re.compile(r"\?")


def url_of(root: Path) -> str:
    """The database URL the newsletter at ``root`` uses in this test."""
    return os.environ.get("MAILER_DATABASE_URL") or f"sqlite:///{root / 'subscribers.sqlite'}"


def on_postgres(root: Path) -> bool:
    return url_of(root).startswith("postgresql")


def _bound(sql: str, params: tuple[Any, ...]) -> tuple[sa.TextClause, dict[str, Any]]:
    names = iter(range(len(params)))
    text = _PLACEHOLDER.sub(lambda _m: f":p{next(names)}", sql)
    return sa.text(text), {f"p{i}": value for i, value in enumerate(params)}


def _as_sqlite(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def engine_for(root: Path) -> sa.Engine:
    # No pool: a test's database is dropped at its end, and no connection may linger.
    return sa.create_engine(url_of(root), poolclass=NullPool)


def query(root: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run ``sql`` (``?`` placeholders) in a transaction of its own in the newsletter's
    database, and return its rows (none for a statement that changes rows)."""
    statement, bound = _bound(sql, params)
    engine = engine_for(root)
    try:
        with engine.begin() as connection:
            result = connection.execute(statement, bound)
            if not result.returns_rows:
                return []
            return [tuple(_as_sqlite(value) for value in row) for row in result]
    finally:
        engine.dispose()
