"""The migrations give the same schema on SQLite and on PostgreSQL, and it is the models'.

Both databases are migrated from empty to head by mailer itself (``mailer db upgrade``),
then read back with SQLAlchemy's inspector and compared table by table: columns (names,
order, nullability, types normalised to what they mean), primary keys, foreign keys,
unique constraints and indexes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import mailer.store.models  # noqa: F401  (registers every table on SQLModel.metadata)
from pg_server import PostgresServer
from subscriber_helpers import Cli, ok

pytestmark = pytest.mark.sqlite_file


def _type(kind: sa.types.TypeEngine[Any]) -> str:
    """A column type as what it holds, the same whichever database reports it."""
    if isinstance(kind, sa.Boolean):
        return "boolean"
    if isinstance(kind, sa.DateTime):
        return "datetime"
    if isinstance(kind, sa.Date):
        return "date"
    if isinstance(kind, sa.BigInteger):
        return "bigint"
    if isinstance(kind, sa.Integer):
        return "integer"
    if isinstance(kind, sa.Float | sa.Numeric):
        return "number"
    if isinstance(kind, sa.LargeBinary):
        return "bytes"
    if isinstance(kind, sa.Text) or (isinstance(kind, sa.String) and kind.length is None):
        return "text"
    if isinstance(kind, sa.String):
        return f"varchar({kind.length})"
    raise AssertionError(f"a column type the comparison does not know: {kind!r}")


def schema(url: str) -> dict[str, dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        tables: dict[str, dict[str, Any]] = {}
        for table in sorted(inspector.get_table_names()):
            if table == "alembic_version":
                continue
            pk = inspector.get_pk_constraint(table)
            tables[table] = {
                "columns": [
                    (c["name"], _type(c["type"]), c["nullable"])
                    for c in inspector.get_columns(table)
                ],
                "primary key": pk["constrained_columns"],
                "foreign keys": sorted(
                    (
                        fk["name"] or "",
                        tuple(fk["constrained_columns"]),
                        fk["referred_table"],
                        tuple(fk["referred_columns"]),
                        (fk["options"] or {}).get("ondelete"),
                    )
                    for fk in inspector.get_foreign_keys(table)
                ),
                "unique": sorted(
                    (u["name"] or "", tuple(u["column_names"]))
                    for u in inspector.get_unique_constraints(table)
                ),
                "indexes": sorted(
                    (i["name"] or "", tuple(i["column_names"]), bool(i["unique"]))
                    for i in inspector.get_indexes(table)
                    # PostgreSQL reports the index behind each unique constraint as well.
                    if not i.get("duplicates_constraint")
                ),
            }
        return tables
    finally:
        engine.dispose()


def test_sqlite_and_postgresql_get_the_same_schema(
    cli: Cli, newsletter: Path, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(cli("db", "upgrade"))
    sqlite = schema(f"sqlite:///{newsletter / 'subscribers.sqlite'}")
    with postgres.fresh_database(migrated=False) as url:
        monkeypatch.setenv("MAILER_DATABASE_URL", url)
        assert ok(cli("db", "upgrade")).stdout.startswith("Created postgresql+psycopg://")
        on_postgres = schema(url)
        assert sorted(on_postgres) == sorted(sqlite)
        for table in sqlite:
            for part in sqlite[table]:
                assert on_postgres[table][part] == sqlite[table][part], (table, part)
        assert sqlite["subscriber"]["columns"][1] == ("email", "varchar(320)", True)
        # Alembic's own comparison with the models, on PostgreSQL: nothing to add or alter.
        engine = sa.create_engine(url)
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(
                    connection, opts={"compare_type": True, "compare_server_default": False}
                )
                assert compare_metadata(context, SQLModel.metadata) == []
        finally:
            engine.dispose()
