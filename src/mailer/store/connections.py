"""Engines: SQLite's pragmas and transactions, and database errors in one line.

Kept apart from :mod:`.database` so that :mod:`.migrate` can open an engine without
importing the sessions that call it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from mailer.errors import StoreError
from mailer.files import create_private

# How long a writer waits for another writer (an import, a send) before giving up: SQLite's
# busy timeout, and PostgreSQL's lock_timeout (without it a statement waits for a lock for
# ever, and a Postfix pipe or a ledger write would hang instead of trying again).
BUSY_TIMEOUT_MS = 5000
# Mark connections of the write engine so their transactions start with BEGIN IMMEDIATE.
WRITE_OPTION = "mailer_write"
T = TypeVar("T")
log = logging.getLogger("mailer.store")


_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")
_DRIVERS = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary"}


def redact(url: str) -> str:
    """``url`` with any password replaced, for messages and logs."""
    return _PASSWORD.sub(r"\1***@", url)


# A SQLite URL with a file: everything after the third slash is the file's path.
_SQLITE_FILE = re.compile(r"(sqlite(?:\+\w+)?):///", re.IGNORECASE)


def parse_url(url: str) -> sa.URL:
    """``url`` as SQLAlchemy reads it; one clear line, without the password, if it cannot.

    A SQLite URL's path is taken as it stands, never parsed as a URL: in a folder named
    ``mag?x``, ``pct%41dir`` or ``a#b`` the database is that folder's own file, not
    ``mag`` (a query), ``pctAdir`` (an escape) or ``a`` (a fragment).

    ``postgresql://`` and ``postgres://``, as PostgreSQL's own tools write them, mean
    psycopg 3, the driver mailer depends on (SQLAlchemy would otherwise look for psycopg2).
    """
    sqlite = _SQLITE_FILE.match(url)
    if sqlite is not None:
        return sa.URL.create(sqlite.group(1).lower(), database=url[sqlite.end() :] or None)
    try:
        parsed = sa.make_url(url)
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed
    except (SQLAlchemyError, ValueError):
        raise StoreError(
            f"the database URL {redact(url)!r} (MAILER_DATABASE_URL or database_url) is not a "
            "database URL: use sqlite:///path/to/file.sqlite or "
            "postgresql+psycopg://user@host/database"
        ) from None


def make_engine(url: str, *, foreign_keys: bool = True) -> Engine:
    """An engine for ``url``; SQLite connections get WAL, foreign keys and a busy timeout."""
    parsed = parse_url(url)
    options: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql" and "options" not in parsed.query:
        options["connect_args"] = {"options": f"-c lock_timeout={BUSY_TIMEOUT_MS}"}
    try:
        engine = sa.create_engine(parsed, **options)
    except ImportError as exc:
        driver = _DRIVERS.get(exc.name or "", exc.name or "its driver")
        raise StoreError(
            f"the database {redact(url)!r} needs the Python package {driver}: install it "
            "beside mailer"
        ) from None
    except (SQLAlchemyError, ValueError) as exc:
        raise StoreError(f"the database {redact(url)!r} cannot be used: {exc}") from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, foreign_keys=foreign_keys)
    return engine


def _configure_sqlite(engine: Engine, *, foreign_keys: bool) -> None:
    @sa.event.listens_for(engine, "do_connect")
    def _before_connect(_dialect: Any, _record: Any, args: Any, _kwargs: Any) -> None:
        # SQLite would create a new file with the umask's mode (often 0644, readable by
        # every user of the machine); make it 0600 first. Its -wal and -shm files take the
        # database file's mode.
        path = str(args[0]) if args else ""
        if path and path != ":memory:" and not path.startswith("file:"):
            # If the folder is missing or closed, SQLite says so in its own words.
            with contextlib.suppress(OSError):
                create_private(Path(path))

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


# Keys of the transaction-scoped advisory locks of one_at_a_time, one per purpose.
SCHEMA_LOCK = 0x6D61696C6572  # "mailer": upgrading the schema
KEY_LOCK = 0x6D61696C6B79  # "mailky": remembering the signing key on first use


def one_at_a_time(connection: Connection, key: int) -> None:
    """Wait until no other transaction holds ``key``, and hold it until this one ends.

    On SQLite a writer's BEGIN IMMEDIATE already lets one writer in at a time. On
    PostgreSQL writers run side by side, so a read-then-write that must not run twice at
    once (creating the schema, remembering the key) takes an advisory lock first; the next
    one in then finds the work done.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def refresh_statistics(connection: Connection, tables: list[str]) -> None:
    """Let PostgreSQL's planner see the rows this transaction wrote (an import's batches).

    SQLite's planner needs no statistics for mailer's queries. The tables are names from
    the code. SKIP_LOCKED: a table another transaction is analysing or vacuuming is left as
    it is rather than waited for. The table stays locked against VACUUM, CREATE INDEX and
    ALTER TABLE until this transaction ends: an erasure during a long import waits for it
    (as its REINDEX would anyway), and says to run it again if it waited too long.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("ANALYZE (SKIP_LOCKED) " + ", ".join(tables)))


def analyze_committed(engine: Engine, tables: list[str]) -> None:
    """Let PostgreSQL's planner see the committed rows of ``tables`` now, in a transaction
    of its own that holds its locks only while it runs.

    Autovacuum gets there within a minute or so, but a send claims its first rows at once:
    with statistics from before its people and ledger arrived, the planner read every
    membership of a list for each claim (measured: a 40,000-person send at a fifth of its
    speed).
    """
    if engine.dialect.name != "postgresql":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        refresh_statistics(connection, tables)


def refresh_statistics_if_grown(connection: Connection, table: str) -> None:
    """:func:`refresh_statistics` for ``table`` once it has grown by a tenth since
    PostgreSQL's statistics were taken (its size on disk, this transaction's rows included).

    Called by bulk writes (an import in batches, in one transaction that autovacuum cannot
    see into): without it, each batch's lookups by address read the whole table, as the
    planner still takes it for empty (measured: 10,000 people took 1.2 s into an empty
    table, 13.7 s once 30,000 were in it).
    """
    if connection.dialect.name != "postgresql":
        return
    known, now = connection.execute(
        sa.text(
            "SELECT relpages, pg_relation_size(oid) / current_setting('block_size')::int "
            "FROM pg_class WHERE oid = CAST(:t AS regclass)"
        ),
        {"t": table},
    ).one()
    # Below 8 pages (64 kB) reading the whole table costs nothing worth a look.
    if now >= 8 and now * 10 >= known * 11:
        refresh_statistics(connection, [table])


def describe(url: str | sa.URL) -> str:
    """The database as people know it: the SQLite file's path, or the URL without password."""
    parsed = parse_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return str(parsed.database)
    return parsed.render_as_string(hide_password=True)


def store_error(where: str, exc: SQLAlchemyError) -> StoreError:
    """One line saying what the database refused, for the CLI to print."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    text = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    if "database is locked" in text or "lock timeout" in text:
        text = "the database is busy: another mailer command is writing to it; try again shortly"
    elif "unable to open database file" in text:
        text = "cannot open the database file: does its folder exist, and may mailer write to it?"
    elif "file is not a database" in text:
        text = "this file is not a SQLite database"
    return StoreError(f"{where}: {text}")


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` says another writer holds the database (worth trying again)."""
    text = str(exc)
    return (
        "locked" in text
        or "busy" in text
        or "lock timeout" in text
        # PostgreSQL ended this transaction to break a deadlock: trying again is the cure.
        or "deadlock detected" in text
    )


# How long a writer that finds the database busy keeps trying, unless its caller says.
BUSY_RETRY_FOR = 120.0


def retry_while_busy(
    job: Callable[[], T],
    *,
    give_up_after: float = BUSY_RETRY_FOR,
    pause: float = 0.05,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """``job()``, tried again while another writer holds the database (SQLite: a large
    import committing; PostgreSQL: a lock timeout or a deadlock), every ``pause`` seconds
    for up to ``give_up_after`` seconds, calling ``on_retry`` (to log it) before each new
    try. The one busy-retry loop of mailer: every writer that may meet a busy database
    goes through it."""
    deadline = time.monotonic() + give_up_after
    said = False
    while True:
        try:
            return job()
        except Exception as exc:
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
            if on_retry is not None:
                on_retry()
            elif not said:
                log.warning("the database is busy: trying again for up to %.0f s", give_up_after)
                said = True
            time.sleep(pause)
