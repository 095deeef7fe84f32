"""Helpers for the subscriber tests: files as people make them, and the database as it is.

The database is read with plain SQL, not through mailer, so the tests check what was
really stored (db_helpers: the SQLite file or this pass's PostgreSQL database).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import Result
from db_helpers import query

Cli = Callable[..., Result]


def count(root: Path, table: str) -> int:
    return int(query(root, f"SELECT count(*) FROM {table}")[0][0])


def on_list(root: Path, slug: str) -> list[str]:
    """Addresses of the active people subscribed to a list, sorted."""
    rows = query(
        root,
        "SELECT s.email FROM subscriber s JOIN membership m ON m.subscriber_id = s.id "
        "JOIN mailing_list l ON l.id = m.list_id WHERE l.slug = ? AND m.status = 'subscribed' "
        "AND s.status = 'active' ORDER BY s.email",
        slug,
    )
    return [r[0] for r in rows]


def status_of(root: Path, email: str) -> str | None:
    rows = query(root, "SELECT status FROM subscriber WHERE email = ?", email)
    return rows[0][0] if rows else None


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def ok(result: Result) -> Result:
    """The result, after checking the command succeeded (with its output on failure)."""
    assert result.exit_code == 0, result.output
    return result


def fails(result: Result, *fragments: str) -> str:
    """The one-line error of a command that must fail, checked for the fragments."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def make_list(cli: Cli, slug: str = "all", name: str = "All practitioners") -> None:
    ok(cli("lists", "create", slug, "--name", name))


def add(cli: Cli, email: str, slug: str = "all", *options: str) -> Result:
    return cli("subscribers", "add", email, "--list", slug, *options)


def big_csv(path: Path, rows: int) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,name,organisation\n")
        for i in range(rows):
            out.write(f"person{i}@org{i % 50}.example.org,Person {i},Organisation {i % 50}\n")
    return path
