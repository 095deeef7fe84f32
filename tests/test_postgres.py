"""What differs on PostgreSQL, tested on the real server in both passes of the suite.

The rest of the suite runs on PostgreSQL in its second pass; these tests are about what
only PostgreSQL does: where an erased address may linger and what erasure says of it, and
processes that SQLite would have queued for its write lock running side by side.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mailer.config import Settings
from mailer.store import migrate
from mailer.store import people as store
from mailer.store.database import open_db
from pg_server import PostgresServer
from send_helpers import addresses, make_list
from subscriber_helpers import ok, query


@pytest.fixture
def pg_newsletter(
    newsletter: Path, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The example newsletter on a PostgreSQL database of its own, in either pass."""
    if os.environ.get("MAILER_DATABASE_URL", "").startswith("postgresql"):
        yield newsletter
        return
    with postgres.fresh_database() as url:
        monkeypatch.setenv("MAILER_DATABASE_URL", url)
        yield newsletter


def _files(server: PostgresServer, root: Path, relation: str) -> bytes:
    """Every byte PostgreSQL holds of a table or index in its data files."""
    (path,) = query(root, "SELECT pg_relation_filepath(?)", relation)[0]
    found = b""
    for segment in sorted((server.data / path).parent.glob(Path(path).name + "*")):
        found += segment.read_bytes()
    return found


def test_erasure_on_postgresql_leaves_no_copy_in_tables_or_indexes_and_says_what_remains(
    cli: Any, pg_newsletter: Path, postgres: PostgresServer
) -> None:
    people = addresses(200)
    make_list(cli, pg_newsletter, "practitioners", people)
    ok(cli("approve", "2025-11", "--by", "Sam Patel"))
    ok(cli("send", "2025-11", "--list", "practitioners", "--yes"))
    erased = people[120]
    postgres.execute("CHECKPOINT")
    assert erased.encode() in _files(postgres, pg_newsletter, "subscriber")
    assert erased.encode() in _files(postgres, pg_newsletter, "uq_subscriber_email")

    result = ok(cli("subscribers", "erase", erased, "--yes"))
    assert result.stdout.splitlines()[-1] == store.POSTGRES_REMAINS
    assert "write-ahead log" in result.stdout and "backups" in result.stdout
    # Written out to the data files, the tables and indexes hold no trace of the address.
    postgres.execute("CHECKPOINT")
    for relation in ("subscriber", "delivery", "consent", "uq_subscriber_email", "ix_signup_email"):
        assert erased.encode() not in _files(postgres, pg_newsletter, relation), relation
    assert people[121].encode() in _files(postgres, pg_newsletter, "subscriber")
    assert query(pg_newsletter, "SELECT count(*) FROM subscriber WHERE status = 'erased'") == [(1,)]


def test_processes_opening_a_new_database_at_once_make_its_schema_once(
    settings: Settings, postgres: PostgresServer
) -> None:
    """Workers started together on a new, empty database: each would create the tables
    and remember the key; one at a time, every one of them starts."""
    with postgres.fresh_database(migrated=False) as url:
        on_postgres = dataclasses.replace(settings, database_url=url)
        start = threading.Barrier(6)
        failures: list[BaseException] = []

        def open_it() -> None:
            start.wait(timeout=120)
            try:
                open_db(on_postgres).close()
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert failures == []
        assert migrate.current_revision(on_postgres) == migrate.head_revision()
        with open_db(on_postgres) as database, database.session() as session:
            rows = session.execute(sa.text("SELECT name FROM meta ORDER BY name")).all()
        assert [r[0] for r in rows] == ["key_fingerprint", "suppression_key"]
