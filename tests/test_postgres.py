"""What differs on PostgreSQL, tested on the real server in both passes of the suite.

The rest of the suite runs on PostgreSQL in its second pass; these tests are about what
only PostgreSQL does: where an erased address may linger, and what erasure says of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer.store import people as store
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
