"""The database: engine, sessions, SQLite pragmas and schema migrations.

Open it once per command or process and use short sessions::

    with open_db(settings) as db:
        with db.session() as session:               # reading
            ...
        with db.session(write=True) as session:     # writing: one transaction
            ...

A session commits when its block ends and rolls back everything if the block raises,
including ``KeyboardInterrupt``. Database errors leave a session as :class:`StoreError`.

The schema is created or upgraded with Alembic the first time a database is opened, and
refused with :class:`SchemaTooNew` if a newer mailer has already upgraded it
(:mod:`mailer.store.migrate`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlmodel import Session

from mailer.config import Settings
from mailer.errors import StoreError

# How long a writer waits for another writer (an import, a send) before giving up.
BUSY_TIMEOUT_MS = 5000
# Mark connections of the write engine so their transactions start with BEGIN IMMEDIATE.
WRITE_OPTION = "mailer_write"


def make_engine(url: str, *, foreign_keys: bool = True) -> Engine:
    """An engine for ``url``; SQLite connections get WAL, foreign keys and a busy timeout."""
    try:
        engine = sa.create_engine(url)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StoreError(f"database_url {url!r} cannot be used: {exc}") from exc
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, foreign_keys=foreign_keys)
    return engine


def _configure_sqlite(engine: Engine, *, foreign_keys: bool) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling does not put SELECTs or DDL inside
        # transactions; turn it off and issue BEGIN ourselves (see _on_begin) so an
        # import, and a migration, are each exactly one transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Overwrite deleted content with zeros, so an erased person's address does not
        # linger in the file's free space.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock up front. A deferred transaction that reads first
        # and writes later fails at once with "database is locked" if another writer
        # committed in between; BEGIN IMMEDIATE waits for the busy timeout instead.
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def describe(url: str | sa.URL) -> str:
    """The database as people know it: the SQLite file's path, or the URL without password."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return str(parsed.database)
    return parsed.render_as_string(hide_password=True)


def exists(settings: Settings) -> bool:
    """Whether the newsletter's database is there yet: a SQLite file is made on first use."""
    parsed = sa.make_url(settings.database_url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).is_file()
    return True


def store_error(where: str, exc: SQLAlchemyError) -> StoreError:
    """One line saying what the database refused, for the CLI to print."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    text = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    if "database is locked" in text:
        text = "the database is busy: another mailer command is writing to it; try again shortly"
    elif "unable to open database file" in text:
        text = "cannot open the database file: does its folder exist, and may mailer write to it?"
    elif "file is not a database" in text:
        text = "this file is not a SQLite database"
    return StoreError(f"{where}: {text}")


class Database:
    """An open database whose schema is at this mailer's revision."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.where = describe(engine.url)
        self._writer = engine.execution_options(**{WRITE_OPTION: True})

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """A session that commits at the end of the block, or rolls back if it raises."""
        session = Session(self._writer if write else self.engine, expire_on_commit=False)
        # Functions that hash addresses find MAILER_SECRET_KEY here (see settings_for).
        session.info["settings"] = self.settings
        try:
            yield session
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise store_error(self.where, exc) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @property
    def writer(self) -> Engine:
        """The engine whose transactions start with BEGIN IMMEDIATE, for long-lived writers."""
        return self._writer

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# Which settings each database was opened with, so store functions that hash addresses
# can find the signing key from nothing but a session.
_SETTINGS: dict[str, Settings] = {}


def open_db(settings: Settings, *, migrate: bool = True) -> Database:
    """Open the newsletter's database, creating or upgrading its schema if needed."""
    if migrate:
        from mailer.store import migrate as migrations

        migrations.ensure_current(settings)
    opened = make_engine(settings.database_url)
    _SETTINGS[str(opened.url)] = settings
    return Database(settings, opened)


def settings_for(session: Session) -> Settings:
    """The settings that the session's database was opened with."""
    found = session.info.get("settings") or _SETTINGS.get(str(session.get_bind().engine.url))
    if found is None:
        raise StoreError("this session's database was not opened with mailer.store.open_db")
    assert isinstance(found, Settings)
    return found
