"""The database: migrations, SQLite settings, and refusing what this mailer cannot use."""

from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import mailer.store.models  # noqa: F401  (registers every table on SQLModel.metadata)
from mailer.config import Settings
from mailer.errors import StoreError
from mailer.store import database as db
from mailer.store import migrate
from mailer.store import people as store
from mailer.store.connections import retry_while_busy
from subscriber_helpers import Cli, add, fails, make_list, ok, query

# --- Migrations --------------------------------------------------------------------------------


def _schema(url: str) -> dict[str, Any]:
    """Everything SQLite says about every table: columns, keys, indexes, constraints."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        schema: dict[str, Any] = {}
        for table in inspector.get_table_names():
            if table == "alembic_version":
                continue
            schema[table] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)
                ],
                "pk": inspector.get_pk_constraint(table),
                "fks": sorted(
                    (
                        fk["name"],
                        fk["constrained_columns"],
                        fk["referred_table"],
                        fk["referred_columns"],
                        fk["options"],
                    )
                    for fk in inspector.get_foreign_keys(table)
                ),
                "indexes": sorted(
                    (i["name"], i["column_names"], i["unique"])
                    for i in inspector.get_indexes(table)
                ),
                "unique": sorted(
                    (u["name"], u["column_names"]) for u in inspector.get_unique_constraints(table)
                ),
            }
        return schema
    finally:
        engine.dispose()


@pytest.mark.sqlite_file
def test_upgrading_an_empty_database_gives_exactly_the_models_schema(
    cli: Cli, settings: Settings, tmp_path: Path
) -> None:
    assert ok(cli("db", "upgrade")).stdout == (
        f"Created {settings.root / 'subscribers.sqlite'} "
        f"at schema revision {migrate.head_revision()}.\n"
    )
    # Alembic's own comparison: nothing to add, drop or alter.
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
    engine.dispose()
    # And field by field against a database made straight from the models.
    direct = f"sqlite:///{tmp_path / 'direct.sqlite'}"
    engine = sa.create_engine(direct)
    SQLModel.metadata.create_all(engine)
    engine.dispose()
    assert _schema(settings.database_url) == _schema(direct)


@pytest.mark.sqlite_file
def test_the_schema_comparison_notices_a_difference(settings: Settings, tmp_path: Path) -> None:
    migrate.upgrade(settings)
    with closing(sqlite3.connect(settings.root / "subscribers.sqlite")) as conn:
        conn.execute("DROP INDEX ix_membership_list_id_status")
    direct = f"sqlite:///{tmp_path / 'direct.sqlite'}"
    engine = sa.create_engine(direct)
    SQLModel.metadata.create_all(engine)
    engine.dispose()
    assert _schema(settings.database_url) != _schema(direct)


def _fill_revision_0001(root: Path) -> None:
    """Data written with revision 0001's own SQL, as an old mailer left it."""
    now = "2025-06-01 09:30:00.000000"
    for statement, *params in [
        ("INSERT INTO mailing_list VALUES (1, 'all', 'All practitioners', '', ?)", now),
        (
            "INSERT INTO subscriber VALUES (1, 'ann@example.org', 'Ann', 'NHS', 'active', ?, ?)",
            now,
            now,
        ),
        (
            "INSERT INTO subscriber VALUES (2, 'bob@example.org', '', '', 'unsubscribed', ?, ?)",
            now,
            now,
        ),
        ("INSERT INTO membership VALUES (1, 1, 'subscribed', ?)", now),
        ("INSERT INTO membership VALUES (2, 1, 'unsubscribed', ?)", now),
        ("INSERT INTO consent VALUES (1, 1, 'public-task', 'old.csv', ?, NULL)", now),
        ("INSERT INTO consent VALUES (2, 1, 'consent', 'web form', ?, ?)", now, now),
    ]:
        query(root, statement, *params)


@pytest.mark.empty_database
def test_a_database_made_by_revision_0001_upgrades_with_its_data(
    cli: Cli, settings: Settings
) -> None:
    assert migrate.upgrade(settings, to="0001") == (None, "0001")
    _fill_revision_0001(settings.root)

    result = ok(cli("db", "upgrade"))
    if migrate.head_revision() == "0001":
        assert "is up to date (schema revision 0001)" in result.stdout
    else:
        assert f"from schema revision 0001 to {migrate.head_revision()}" in result.stdout
    assert ok(cli("db", "current")).stdout.endswith(
        f"schema revision {migrate.head_revision()} (latest)\n"
    )

    shown = ok(cli("subscribers", "show", "ann@example.org")).stdout
    assert "  organisation: NHS" in shown
    assert "  created:      Sun 01 Jun 2025 10:30 BST" in shown
    assert "lawful basis public-task, source 'old.csv', recorded Sun 01 Jun 2025 10:30 BST" in shown
    assert (
        "lawful basis consent, source 'web form'"
        in ok(cli("subscribers", "show", "bob@example.org")).stdout
    )
    assert ok(cli("lists", "list")).stdout.splitlines()[1].split()[:3] == ["all", "1", "1"]
    fails(add(cli, "bob@example.org"), "unsubscribed from everything on 1 Jun 2025")


@pytest.mark.empty_database
def test_the_database_is_created_on_first_use(cli: Cli, settings: Settings) -> None:
    assert ok(cli("db", "current")).stdout == (
        f"{db.describe(settings.database_url)}: no schema yet "
        "(it is created on first use, or by: mailer db upgrade)\n"
    )
    assert not (settings.root / "subscribers.sqlite").exists()
    ok(cli("lists", "list"))
    assert migrate.current_revision(settings) == migrate.head_revision()
    assert ok(cli("db", "upgrade")).stdout.endswith(
        f"is up to date (schema revision {migrate.head_revision()}).\n"
    )


def test_a_database_from_a_newer_mailer_is_refused(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    query(newsletter, "UPDATE alembic_version SET version_num = '0099_from_the_future'")
    for command in (
        ("lists", "list"),
        ("db", "upgrade"),
        ("db", "current"),
        ("subscribers", "add", "a@example.org", "--list", "all"),
    ):
        fails(
            cli(*command),
            "was written by a newer version of mailer",
            "schema revision 0099_from_the_future",
            "upgrade mailer",
        )
    assert query(newsletter, "SELECT version_num FROM alembic_version") == [
        ("0099_from_the_future",)
    ]
    assert query(newsletter, "SELECT count(*) FROM subscriber") == [(0,)]


# --- What the database must be -----------------------------------------------------------------


@pytest.mark.sqlite_file
def test_sqlite_runs_with_wal_and_foreign_keys(settings: Settings) -> None:
    with db.open_db(settings) as database, database.session() as session:
        pragma = session.connection().exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
        assert pragma("PRAGMA foreign_keys").scalar() == 1
        assert pragma("PRAGMA busy_timeout").scalar() == 5000
        assert pragma("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert pragma("PRAGMA secure_delete").scalar() == 1


def test_foreign_keys_are_enforced(settings: Settings) -> None:
    with db.open_db(settings) as database, pytest.raises(StoreError, match=r"(?i)foreign key"):  # noqa: SIM117
        with database.session(write=True) as session:
            session.connection().exec_driver_sql(
                "INSERT INTO membership VALUES (42, 42, 'subscribed', '2025-01-01 00:00:00')"
            )


def test_timestamps_are_stored_in_utc_and_read_back_aware(settings: Settings) -> None:
    from zoneinfo import ZoneInfo

    summer = dt.datetime(2025, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/London"))
    with db.open_db(settings) as database:
        with database.session(write=True) as session:
            mailing_list = store.create_list(session, "all", "All")
            mailing_list.created = summer
            session.add(mailing_list)
        assert query(settings.root, "SELECT created FROM mailing_list") == [
            ("2025-07-01 11:00:00.000000",)
        ]
        with database.session() as session:
            created = store.get_list(session, "all").created
        assert created == summer and created.tzinfo == dt.UTC
        with pytest.raises(StoreError, match="timezone-aware"), database.session(write=True) as s:
            found = store.get_list(s, "all")
            found.created = dt.datetime(2025, 1, 1)  # naive: refused, never guessed
            s.add(found)


@pytest.mark.sqlite_file
def test_a_file_that_is_not_a_database(cli: Cli, newsletter: Path) -> None:
    (newsletter / "subscribers.sqlite").write_text("name,email\n", encoding="utf-8")
    fails(cli("lists", "list"), "subscribers.sqlite: this file is not a SQLite database")


@pytest.mark.sqlite_file
def test_a_sqlite_database_that_is_not_mailers(cli: Cli, newsletter: Path) -> None:
    with closing(sqlite3.connect(newsletter / "subscribers.sqlite")) as conn:
        conn.execute("CREATE TABLE contacts (email TEXT)")
    fails(cli("lists", "list"), "has tables (contacts...) but no mailer schema revision")


@pytest.mark.sqlite_file
def test_database_url_from_the_environment(
    cli: Cli, newsletter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere.sqlite"
    monkeypatch.setenv("MAILER_DATABASE_URL", f"sqlite:///{elsewhere}")
    make_list(cli)
    assert elsewhere.is_file() and not (newsletter / "subscribers.sqlite").exists()
    assert ok(cli("db", "current")).stdout.startswith(f"{elsewhere}: schema revision")


def test_a_database_in_a_folder_that_does_not_exist(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILER_DATABASE_URL", f"sqlite:///{tmp_path / 'no' / 'such.sqlite'}")
    fails(cli("lists", "list"), "cannot open the database file")


def test_an_unusable_database_url(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_DATABASE_URL", "nosuchdb://somewhere/x")
    fails(cli("lists", "list"), "the database 'nosuchdb://somewhere/x' cannot be used")


def test_a_session_rolls_back_everything_when_its_block_fails(settings: Settings) -> None:
    with db.open_db(settings) as database:
        with pytest.raises(KeyboardInterrupt), database.session(write=True) as session:
            store.create_list(session, "all", "All")
            raise KeyboardInterrupt
        with database.session() as session:
            assert store.list_summaries(session) == []


def test_every_db_command_has_an_example(cli: Cli) -> None:
    for command in ("upgrade", "current"):
        assert f"Example:\n    mailer db {command}" in ok(cli("db", command, "--help")).stdout


def test_a_busy_database_is_tried_again_and_any_other_error_is_not() -> None:
    """The one busy-retry loop (store.engine.retry_while_busy), used by every writer."""
    failures = [RuntimeError("database is locked"), RuntimeError("deadlock detected")]
    retried: list[int] = []

    def job() -> str:
        if failures:
            raise failures.pop(0)
        return "written"

    assert retry_while_busy(job, pause=0, on_retry=lambda: retried.append(1)) == "written"
    assert retried == [1, 1]

    def broken() -> str:
        raise RuntimeError("no such table: delivery")

    with pytest.raises(RuntimeError, match="no such table"):
        retry_while_busy(broken, pause=0, on_retry=lambda: retried.append(1))
    assert retried == [1, 1]
    # Still busy after the time allowed: the error is the caller's.
    with pytest.raises(RuntimeError, match="locked"):
        retry_while_busy(lambda: (_ for _ in ()).throw(RuntimeError("locked")), give_up_after=0)
