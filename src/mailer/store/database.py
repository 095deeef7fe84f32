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

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from mailer.config import Settings
from mailer.errors import StoreError
from mailer.store import keys
from mailer.store import migrate as migrations
from mailer.store.connections import WRITE_OPTION, describe, make_engine, parse_url, store_error

__all__ = [
    "Database",
    "describe",
    "exists",
    "make_engine",
    "open_db",
    "settings_for",
    "store_error",
]


def exists(settings: Settings) -> bool:
    """Whether the newsletter's database is there yet: a SQLite file is made on first use."""
    parsed = parse_url(settings.database_url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).is_file()
    return True


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


def open_db(settings: Settings, *, migrate: bool = True, check_key: bool = True) -> Database:
    """Open the newsletter's database, creating or upgrading its schema if needed."""
    if migrate:
        migrations.ensure_current(settings)
    opened = make_engine(settings.database_url)
    _SETTINGS[str(opened.url)] = settings
    database = Database(settings, opened)
    if not check_key:
        return database
    try:
        with database.session() as session:
            first_use = keys.check(session, settings)
        if first_use:
            with database.session(write=True) as session:
                keys.remember(session, settings)
    except BaseException:
        database.close()
        raise
    return database


def settings_for(session: Session) -> Settings:
    """The settings that the session's database was opened with."""
    found = session.info.get("settings") or _SETTINGS.get(str(session.get_bind().engine.url))
    if found is None:
        raise StoreError("this session's database was not opened with mailer.store.open_db")
    assert isinstance(found, Settings)
    return found
