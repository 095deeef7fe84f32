"""Copying a newsletter's data into another database: ``mailer db copy --to URL``.

The usual move is from the folder's SQLite file to PostgreSQL (docs/scaling.md). The copy:

1. refuses a target that already holds data (any table with a row), before changing it;
2. migrates the target to this mailer's schema, exactly as a first command would;
3. reads the source in one read transaction (a consistent snapshot, even if a command
   writes meanwhile) and copies every table in foreign-key order, in batches, so memory
   does not grow with the data; every row keeps its id;
4. moves PostgreSQL's id sequences past the copied ids, so the next row gets a new one;
5. counts every table on both sides and commits only if the counts match. The copy is one
   transaction on the target: a failure leaves it as empty as it was.

Rows go through the models' column types, so timestamps, flags and statuses arrive as the
target stores them. The signing key's fingerprint and the wrapped suppression key
(:mod:`.keys`) are rows of ``meta`` and are copied like any other: the same key opens the
copy, and every erased address stays suppressed.

A URL's password never appears in what this module says: :func:`describe` hides it, and
any error text is scrubbed of it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from mailer.config import Settings
from mailer.errors import AlreadyExists, StoreError
from mailer.store import migrate
from mailer.store import models as _models  # noqa: F401  (every table on the metadata)
from mailer.store.connections import describe, make_engine, parse_url, store_error

# Rows per batch: large enough that PostgreSQL gets few round trips, small enough that a
# batch of ledger rows with their messages' text stays a few megabytes.
BATCH = 1000


@dataclass(frozen=True)
class Copied:
    """One table's rows: as counted in the source, and in the target after the copy."""

    table: str
    source: int
    target: int


def tables() -> list[sa.Table]:
    """mailer's tables, each after every table it refers to."""
    return list(SQLModel.metadata.sorted_tables)


def _secrets(url: sa.URL) -> list[str]:
    password = url.password
    if not password:
        return []
    text = str(password)
    return [text, quote(text, safe="")]


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def target_settings(settings: Settings, url: str) -> Settings:
    """The newsletter's settings with ``url`` as its database."""
    return replace(settings, database_url=url)


def check_target(settings: Settings, url: str) -> sa.URL:
    """The target URL, parsed; refused if it is not PostgreSQL or is the source itself."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise StoreError(
            f"--to {describe(parsed)}: copy into a PostgreSQL database, "
            "e.g. postgresql+psycopg://mailer@db.example.org/mailer"
        )
    source = parse_url(settings.database_url)
    if source.set(password=None) == parsed.set(password=None):
        raise StoreError(f"--to {describe(parsed)}: is the database this newsletter uses already")
    return parsed


def _holding(connection: Connection) -> list[tuple[str, int]]:
    """(table, rows) for every table of the database that has rows."""
    inspector = sa.inspect(connection)
    held = []
    for name in sorted(inspector.get_table_names()):
        if name == "alembic_version":
            continue
        table = sa.table(name)
        rows = connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        if rows:
            held.append((name, int(rows)))
    return held


def _reset_sequences(connection: Connection) -> None:
    """Move every id sequence past the largest copied id (PostgreSQL only).

    Rows were inserted with their ids, which does not advance a sequence; without this the
    next subscriber added would be given id 1 and be refused as a duplicate.
    """
    for table in tables():
        key = list(table.primary_key.columns)
        if len(key) != 1 or not isinstance(key[0].type, sa.Integer):
            continue
        column = key[0]
        connection.execute(
            sa.text(
                "SELECT setval(pg_get_serial_sequence(:table, :column), "
                f'coalesce((SELECT max("{column.name}") FROM "{table.name}"), 1), '
                f'(SELECT max("{column.name}") FROM "{table.name}") IS NOT NULL)'
            ),
            {"table": table.name, "column": column.name},
        )


def _count(connection: Connection, table: sa.Table) -> int:
    return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def copy(
    settings: Settings,
    url: str,
    *,
    batch: int = BATCH,
    progress: Callable[[str], None] | None = None,
) -> list[Copied]:
    """Copy the newsletter's database into the empty database at ``url``.

    ``progress`` is told each table's name as its copy starts. Returns the counts per
    table; raises :class:`AlreadyExists` for a target that holds data, :class:`StoreError`
    for anything the databases refuse (nothing is left half-copied).
    """
    parsed = check_target(settings, url)
    secrets = _secrets(parsed)
    where = describe(parsed)
    try:
        return _copy(settings, url, where, batch, progress)
    except StoreError as exc:
        raise type(exc)(_scrub(str(exc), secrets)) from None
    except SQLAlchemyError as exc:
        raise StoreError(_scrub(str(store_error(where, exc)), secrets)) from None


def _copy(
    settings: Settings,
    url: str,
    where: str,
    batch: int,
    progress: Callable[[str], None] | None,
) -> list[Copied]:
    # The source must be at this mailer's schema, as every command makes it.
    migrate.ensure_current(settings)
    target_engine = make_engine(url)
    try:
        with target_engine.connect() as connection:
            held = _holding(connection)
        if held:
            listed = ", ".join(f"{rows} in {name}" for name, rows in held[:3])
            raise AlreadyExists(
                f"{where}: already holds data ({listed}{', ...' if len(held) > 3 else ''}): "
                "copy into a new, empty database"
            )
        migrate.upgrade(target_settings(settings, url))
        source_engine = make_engine(settings.database_url)
        try:
            with source_engine.connect() as source, target_engine.begin() as target:
                # One read transaction: every table is read from the same moment.
                with source.begin():
                    copied = [
                        _copy_table(source, target, table, batch, progress) for table in tables()
                    ]
                _reset_sequences(target)
                wrong = [c for c in copied if c.source != c.target]
                if wrong:
                    first = wrong[0]
                    raise StoreError(
                        f"{where}: the copy of {first.table} has {first.target} rows where the "
                        f"source has {first.source}; nothing was kept"
                    )
            return copied
        finally:
            source_engine.dispose()
    finally:
        target_engine.dispose()


def _copy_table(
    source: Connection,
    target: Connection,
    table: sa.Table,
    batch: int,
    progress: Callable[[str], None] | None,
) -> Copied:
    if progress is not None:
        progress(table.name)
    rows = source.execution_options(yield_per=batch).execute(
        sa.select(table).order_by(*table.primary_key.columns)
    )
    for part in rows.partitions():
        target.execute(table.insert(), [row._asdict() for row in part])
    return Copied(table.name, _count(source, table), _count(target, table))
