"""Schema migrations with Alembic, and the cheap check that none is needed.

Alembic is imported only when the database's revision is not the one this mailer writes
(:data:`HEAD`), so ordinary commands start without it. ``tests/test_db.py`` checks that
:data:`HEAD` is Alembic's head.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from mailer.config import Settings
from mailer.errors import SchemaTooNew, StoreError
from mailer.store.connections import (
    SCHEMA_LOCK,
    WRITE_OPTION,
    describe,
    make_engine,
    one_at_a_time,
    parse_url,
    store_error,
)

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

SCRIPT_LOCATION = "mailer.store:migrations"
# The newest revision under migrations/versions/.
HEAD = "0021"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code: mailer ships no alembic.ini."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def _scripts() -> ScriptDirectory:
    # Reading the migration files once per process keeps every command's start quick.
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest schema revision this mailer knows."""
    head = _scripts().get_current_head()
    assert head is not None, "mailer ships at least one migration"
    return head


def known_revisions() -> set[str]:
    return {r.revision for r in _scripts().walk_revisions()}


def _database_exists(url: str) -> bool:
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return True
    return Path(parsed.database).is_file()


def _revision_of(connection: Connection, where: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    heads = MigrationContext.configure(connection).get_current_heads()
    if len(heads) > 1:
        raise SchemaTooNew(
            f"{where}: has several schema revisions ({', '.join(heads)}); "
            "it was written by a newer version of mailer"
        )
    if not heads:
        tables = set(sa.inspect(connection).get_table_names())
        if tables:
            raise StoreError(
                f"{where}: has tables ({', '.join(sorted(tables)[:3])}...) but no mailer schema "
                "revision: it is not a mailer database"
            )
        return None
    if heads[0] not in known_revisions():
        raise SchemaTooNew(
            f"{where}: was written by a newer version of mailer (schema revision {heads[0]}, "
            f"this mailer knows up to {head_revision()}): upgrade mailer to use it"
        )
    return heads[0]


def current_revision(settings: Settings) -> str | None:
    """The database's schema revision, or None if it has no schema yet. Changes nothing."""
    where = describe(settings.database_url)
    if not _database_exists(settings.database_url):
        return None
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            return _revision_of(connection, where)
    except SQLAlchemyError as exc:
        raise store_error(where, exc) from exc
    finally:
        engine.dispose()


def upgrade(settings: Settings, to: str = "head") -> tuple[str | None, str | None]:
    """Bring the schema to revision ``to``; returns the revisions before and after.

    The whole upgrade is one transaction with foreign keys off, as SQLite requires for
    table rebuilds, and foreign keys are checked before it commits.
    """
    where = describe(settings.database_url)
    engine = make_engine(settings.database_url, foreign_keys=False)
    try:
        with engine.connect() as probe:
            before = _revision_of(probe, where)
        target = head_revision() if to == "head" else to
        if before == target:
            return before, before
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        writer = engine.execution_options(**{WRITE_OPTION: True})
        with writer.begin() as connection:
            # Workers starting together on an empty database would each create the tables.
            one_at_a_time(connection, SCHEMA_LOCK)
            command.upgrade(alembic_config(connection), to)
            if engine.dialect.name == "sqlite":
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise StoreError(f"{where}: the upgrade broke foreign keys in {broken[0][0]}")
            after = MigrationContext.configure(connection).get_current_revision()
        return before, after
    except SQLAlchemyError as exc:
        raise store_error(where, exc) from exc
    finally:
        engine.dispose()


def _stamped(url: str) -> str | None:
    """The revision in the database's alembic_version table, read without Alembic."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table("alembic_version"):
                return None
            rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
            return rows[0][0] if len(rows) == 1 else None
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()


def ensure_current(settings: Settings) -> None:
    """Upgrade the schema unless the database is already at :data:`HEAD`."""
    if _database_exists(settings.database_url) and _stamped(settings.database_url) == HEAD:
        return
    upgrade(settings)
