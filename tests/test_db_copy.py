"""``mailer db copy --to URL``: a folder's SQLite data moved into a real PostgreSQL server.

The target is made with the statements of docs/scaling.md's recipe: a role of its own (not
a superuser) owning a new, empty database, its password in a ~/.pgpass-style file or in
the URL. The source is the folder's SQLite file in both passes of the suite (the tests are
marked ``sqlite_file``).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from conftest import REPO
from mailer.store import copy as copying
from pg_server import SCHEME, PostgresServer
from send_helpers import addresses, make_list
from subscriber_helpers import fails, ok, query

pytestmark = pytest.mark.sqlite_file

PASSWORD = "s3cret pa:ss/word@1"  # every character a URL must escape
_roles = itertools.count(1)


def recipe() -> str:
    return (REPO / "docs" / "scaling.md").read_text(encoding="utf-8")


class Target:
    """An empty database owned by a role of its own, as docs/scaling.md makes one."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.role = f"newsletter_{os.getpid()}_{next(_roles)}"
        self.database = f"{self.role}_db"
        # The statements docs/scaling.md gives, with this test's names and password.
        role, database = re.findall(r'^sudo -u postgres psql -c "(.*)"$', recipe(), re.M)
        role = re.sub(r"^CREATE ROLE \w+", f"CREATE ROLE {self.role}", role)
        role = re.sub(r"PASSWORD '[^']*'$", f"PASSWORD '{PASSWORD}'", role)
        database = re.sub(
            r"^CREATE DATABASE \w+ OWNER \w+$",
            f"CREATE DATABASE {self.database} OWNER {self.role}",
            database,
        )
        assert self.role in role and PASSWORD in role and self.database in database
        server.execute(role, database)

    def pgpass(self, path: Path) -> Path:
        """docs/scaling.md's ~/.pgpass line for this database, as a file of its own."""
        (line,) = re.findall(r"^db\.example\.org:5432:\w+:\w+:.*$", recipe(), re.M)
        secret = PASSWORD.replace("\\", "\\\\").replace(":", "\\:")
        fields = [self.server.host, str(self.server.port), self.database, self.role, secret]
        assert line.count(":") == 4
        path.write_text(":".join(fields) + "\n", encoding="utf-8")
        path.chmod(0o600)
        return path

    def url(self, password: str | None = PASSWORD) -> str:
        secret = "" if password is None else ":" + quote(password, safe="")
        return (
            f"{SCHEME}://{self.role}{secret}@{self.server.host}:{self.server.port}/{self.database}"
        )

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        engine = sa.create_engine(self.url(), poolclass=NullPool)
        try:
            with engine.connect() as connection:
                return [tuple(r) for r in connection.execute(sa.text(sql))]
        finally:
            engine.dispose()

    def drop(self) -> None:
        self.server.drop_database(self.database)
        self.server.execute(f"DROP ROLE {self.role}")


@pytest.fixture
def target(postgres: PostgresServer) -> Iterator[Target]:
    made = Target(postgres)
    try:
        yield made
    finally:
        made.drop()


def _with_data(cli: Any, root: Path) -> None:
    """Lists, people, consent, an erased person, an approval and a finished send."""
    make_list(cli, root, "practitioners", addresses(30))
    ok(cli("subscribers", "erase", "person0003@example.org", "--yes"))
    ok(cli("approve", "2025-11", "--by", "Sam Patel"))
    ok(cli("send", "2025-11", "--list", "practitioners", "--yes"))


def _counts(output: str) -> dict[str, int]:
    return {
        m[1]: int(m[2].replace(",", ""))
        for m in re.finditer(r"^  (\w+)\s+([\d,]+) rows$", output, re.M)
    }


def test_copy_moves_everything_and_mailer_then_runs_on_postgresql(
    cli: Any, newsletter: Path, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_data(cli, newsletter)
    before = ok(cli("status", "2025-11")).stdout

    result = ok(cli("db", "copy", "--to", target.url()))
    assert PASSWORD not in result.output and "s3cret" not in result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"Copying {newsletter / 'subscribers.sqlite'} into "
        f"{SCHEME}://{target.role}:***@127.0.0.1:{target.server.port}/{target.database}"
    )
    counts = _counts(result.stdout)
    assert set(counts) == {t.name for t in copying.tables()}
    for table, rows in counts.items():
        assert query(newsletter, f"SELECT count(*) FROM {table}") == [(rows,)]
        assert target.rows(f"SELECT count(*) FROM {table}") == [(rows,)]
    assert counts["subscriber"] == 30 and counts["delivery"] == 29
    assert f"Copied {sum(counts.values()):,} rows in {len(counts)} tables" in result.stdout
    assert lines[-2:] == [
        f"  export MAILER_DATABASE_URL='{target.url(None).replace('@', ':***@')}'",
        "(with the password where *** is, or kept in ~/.pgpass instead)",
    ]
    # The same rows, column by column (timestamps, flags and statuses included).
    assert target.rows("SELECT id, email, name, status, created FROM subscriber ORDER BY id") == [
        tuple(r)
        for r in _as_postgres(
            query(newsletter, "SELECT id, email, name, status, created FROM subscriber ORDER BY id")
        )
    ]

    # From now on mailer uses PostgreSQL, with the same key.
    monkeypatch.setenv("MAILER_DATABASE_URL", target.url())
    assert ok(cli("status", "2025-11")).stdout == before
    ok(cli("subscribers", "add", "new.person@example.org", "--list", "practitioners"))
    assert target.rows("SELECT max(id) FROM subscriber") == [(31,)]  # ids go on from the copy
    # The erased address stays suppressed: the suppression key came along with the key.
    fails(
        cli("subscribers", "add", "person0003@example.org", "--list", "practitioners"),
        "was erased on request",
    )
    ok(cli("approve", "2021-12", "--by", "Sam Patel"))
    sent = ok(cli("send", "2021-12", "--list", "practitioners", "--yes"))
    assert "2021-12: sent. 30 of 30 sent" in sent.stdout
    assert target.rows("SELECT count(*) FROM delivery WHERE status = 'sent'") == [(59,)]
    # The SQLite file was only read.
    monkeypatch.delenv("MAILER_DATABASE_URL")
    assert query(newsletter, "SELECT count(*) FROM subscriber") == [(30,)]


def _as_postgres(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """SQLite's text timestamps as the datetimes PostgreSQL hands back."""
    import datetime as dt

    return [
        tuple(
            dt.datetime.fromisoformat(v) if isinstance(v, str) and re.match(r"\d{4}-", v) else v
            for v in row
        )
        for row in rows
    ]


def test_the_copy_is_refused_with_another_signing_key(
    cli: Any, newsletter: Path, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_data(cli, newsletter)
    ok(cli("db", "copy", "--to", target.url()))
    monkeypatch.setenv("MAILER_DATABASE_URL", target.url())
    monkeypatch.setenv("MAILER_SECRET_KEY", "some-other-key-entirely-not-this-one")
    fails(cli("status", "2025-11"), "the signing key (MAILER_SECRET_KEY) is not the one this")


def test_a_target_that_holds_data_is_refused_and_left_alone(
    cli: Any, newsletter: Path, target: Target
) -> None:
    _with_data(cli, newsletter)
    ok(cli("db", "copy", "--to", target.url()))
    ok(cli("subscribers", "add", "late@example.org", "--list", "practitioners"))
    error = fails(
        cli("db", "copy", "--to", target.url()),
        "already holds data (",
        "29 in delivery",
        "copy into a new, empty database",
    )
    assert "s3cret" not in error
    assert target.rows("SELECT count(*) FROM subscriber") == [(30,)]


def test_the_password_can_live_in_a_pgpass_file(
    cli: Any, newsletter: Path, target: Target, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    make_list(cli, newsletter, "practitioners", addresses(3))
    monkeypatch.setenv("PGPASSFILE", str(target.pgpass(tmp_path / "pgpass")))
    result = ok(cli("db", "copy", "--to", target.url(password=None)))
    assert result.stdout.splitlines()[-1] == (f"  export MAILER_DATABASE_URL={target.url(None)}")
    # The scheme PostgreSQL's own tools write means the same.
    plain = target.url(password=None).replace(f"{SCHEME}://", "postgresql://")
    monkeypatch.setenv("MAILER_DATABASE_URL", plain)
    assert "practitioners" in ok(cli("lists", "list")).stdout
    assert ok(cli("db", "current")).stdout.startswith(f"{target.url(None)}: schema revision")


def test_bad_targets_get_one_line_and_never_the_password(
    cli: Any, newsletter: Path, target: Target, postgres: PostgresServer
) -> None:
    make_list(cli, newsletter, "practitioners", addresses(3))
    wrong = target.url().replace("s3cret", "wrong")
    error = fails(cli("db", "copy", "--to", wrong), "password authentication failed")
    assert "wrong" not in error and "***" in error
    for url, fragment in [
        (f"sqlite:///{newsletter / 'other.sqlite'}", "copy into a PostgreSQL database"),
        ("not a url at all", "is not a database URL"),
        (target.url().replace(f":{postgres.port}/", ":1/"), "Connection refused"),
        (target.url().replace(f"/{target.database}", "/no_such_db"), "does not exist"),
    ]:
        error = fails(cli("db", "copy", "--to", url), fragment)
        assert "s3cret" not in error, error
    assert not (newsletter / "other.sqlite").exists()
    assert target.rows(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
    ) == [(0,)]


def test_copy_has_an_example(cli: Any) -> None:
    out = ok(cli("db", "copy", "--help")).stdout
    assert "Example:\n    mailer db copy --to postgresql+psycopg://" in out
