"""What many tests start from, made once with the real commands and copied after.

Many tests start from a newsletter that has sent an issue: lists made, people added, the
issue built, approved, sent through the outbox. :func:`made_once` runs those commands once
per process for each starting point, in a folder and database of their own, and gives each
test a copy of both, as each test's database is already a copy of one migrated once
(tests/conftest.py). Nothing about the result differs from running the commands in the
test: the copy is of what they left, files and rows.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from mailer import config
from mailer.store.database import Database
from pg_server import execute_at

# Each starting point's folder after the commands, and its PostgreSQL database (the
# template of the copies), made once per process.
_MADE: dict[str, tuple[Path, str | None]] = {}


def made_once(root: Path, what: str, make: Callable[[Path], None]) -> None:
    """Leave the newsletter folder ``root`` and its database as ``make(folder)`` leaves them,
    ``make`` running commands in the current directory, its folder.

    Call it before anything is put in ``root``'s database. ``what`` names what ``make``
    does, with its arguments; with the folder's files and the MAILER_ settings it is the
    starting point: the same one is made once per process and copied after."""
    url = os.environ.get("MAILER_DATABASE_URL")
    sqlite = _sqlite_file(root)
    _nothing_in_the_database(url, sqlite)
    key = _starting_point(root, what, sqlite)
    made = _MADE.get(key)
    if made is None:
        made = _MADE[key] = _made_for_real(root, make, url)
    folder, database = made
    for child in list(root.iterdir()):
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    shutil.copytree(folder, root, dirs_exist_ok=True)
    if url is not None:
        assert database is not None
        name = make_url(url).database
        execute_at(
            _on(url, "postgres"),
            f'DROP DATABASE "{name}" WITH (FORCE)',
            f'CREATE DATABASE "{name}" TEMPLATE "{database}"',
        )


def _on(url: str, database: str) -> str:
    """``url`` with another database of the same server."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _sqlite_file(root: Path) -> Path | None:
    """The folder's SQLite file, as its settings (and this environment) say; None on
    PostgreSQL."""
    url = make_url(config.load(root).database_url)
    return Path(url.database) if url.get_backend_name() == "sqlite" and url.database else None


def _nothing_in_the_database(url: str | None, sqlite: Path | None) -> None:
    query = "SELECT (SELECT count(*) FROM mailing_list) + (SELECT count(*) FROM subscriber)"
    if url is not None:
        ((count,),) = execute_at(url, query)
    else:
        assert sqlite is not None
        with closing(sqlite3.connect(sqlite)) as connection:
            (count,) = connection.execute(query).fetchone()
    assert count == 0, "made_once: call it before anything is put in the database"


def _starting_point(root: Path, what: str, sqlite: Path | None) -> str:
    digest = hashlib.sha256(what.encode() + b"\0")
    skip = {sqlite.with_name(sqlite.name + e) for e in ("", "-wal", "-shm")} if sqlite else set()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p not in skip):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    settings = sorted(
        (k, v)
        for k, v in os.environ.items()
        if k.startswith("MAILER_") and k != "MAILER_DATABASE_URL"
    )
    digest.update(json.dumps(settings).encode())
    return digest.hexdigest()


def _made_for_real(
    root: Path, make: Callable[[Path], None], url: str | None
) -> tuple[Path, str | None]:
    """``make`` run in a copy of ``root`` (and, on PostgreSQL, a copy of its database),
    every database it opened closed after, so the copies are whole."""
    made_in = tempfile.mkdtemp(prefix="mailer-made-")
    atexit.register(shutil.rmtree, made_in, ignore_errors=True)
    folder = Path(made_in) / "newsletter"
    shutil.copytree(root, folder)
    database = None
    if url is not None:
        database = f"made_{os.getpid()}_{len(_MADE)}"
        template = make_url(url).database
        execute_at(_on(url, "postgres"), f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
    opened: list[Database] = []
    original = Database.__init__

    def init(self: Database, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        opened.append(self)

    logger = logging.getLogger("mailer")
    handlers = list(logger.handlers)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Database, "__init__", init)
        patch.chdir(folder)
        if url is not None and database is not None:
            patch.setenv("MAILER_DATABASE_URL", _on(url, database))
        try:
            make(folder)
        finally:
            for opened_database in opened:
                opened_database.close()
            for handler in set(logger.handlers) - set(handlers):
                logger.removeHandler(handler)
                handler.close()
    return folder, database
