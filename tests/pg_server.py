"""A real PostgreSQL server for the tests: Debian's PostgreSQL in a throwaway cluster.

:class:`PostgresServer` runs ``initdb`` into a fresh folder under the system's temporary
directory (pytest's own tmp is private to root, and PostgreSQL runs as ``postgres``), then
``pg_ctl -w start``, which returns once the server accepts connections: nothing sleeps.
The server listens on 127.0.0.1 only, on a free port, with its Unix socket in the same
folder, so it never meets a system cluster.

PostgreSQL refuses to run as root. When the tests run as root, every server program runs
as the ``postgres`` account (``runuser``), and the folder is that account's.

Nothing outlives the tests, even when pytest is killed: a small guard process, in a
session of its own, holds the read end of a pipe whose write end only pytest holds. When
pytest ends, however it ends, the kernel closes the pipe; the guard then stops the server
(``pg_ctl stop -m immediate``) and removes the folder. A normal end closes the pipe too,
so there is one way down.

The superuser ``postgres`` has a password: connections over TCP must give it (the tests of
``mailer db copy`` check that a wrong one is refused and never echoed); the Unix socket
trusts the local account, for the server programs themselves.

:meth:`PostgresServer.fresh_database` makes an empty database per test by copying a
template; :meth:`PostgresServer.migrated_template` makes a template migrated to mailer's
head once per session, so a test's database is ready in one ``CREATE DATABASE``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from smtp_server import free_port

USER, PASSWORD = "postgres", "pg-test-password"
START_TIMEOUT = 120
# A scheme SQLAlchemy reads as "PostgreSQL through psycopg 3", the driver mailer depends on.
SCHEME = "postgresql+psycopg"

# Settings for a throwaway cluster only: the data is worth nothing after the tests, so
# nothing waits for the disk. Never use these for a real database.
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Each test's database is dropped at its end; many workers and web apps may connect.
    "max_connections": "300",
    "shared_buffers": "64MB",
}

GUARD = """\
import shutil, subprocess, sys
folder, data, *as_server = sys.argv[1:]
# Blocks until every holder of the pipe's write end (pytest) is gone.
sys.stdin.buffer.read()
subprocess.run([*as_server, "stop", "-D", data, "-m", "immediate", "-w", "-t", "120"],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
shutil.rmtree(folder, ignore_errors=True)
"""


def bin_dir() -> Path:
    """Debian's PostgreSQL programs, the newest version installed."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.parent.parent.name))

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
            "run `make postgresql` (Debian's postgresql package)"
        )
    return found[-1].parent


class PostgresServer:
    """``with PostgresServer() as server:`` a running, empty PostgreSQL cluster."""

    def __init__(self) -> None:
        self.bin = bin_dir()
        self.port = free_port()
        self.host = "127.0.0.1"
        self.dir = Path(tempfile.mkdtemp(prefix="mailer-postgres-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._guard: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self._template: str | None = None

    # -- the account the server programs run as ---------------------------------------------

    def _as_server(self) -> list[str]:
        return ["runuser", "-u", USER, "--"] if os.getuid() == 0 else []

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self._as_server(), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd="/",
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed:\n{done.stdout}{done.stderr}")

    # -- start and stop -----------------------------------------------------------------------

    def __enter__(self) -> PostgresServer:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        if os.getuid() == 0:
            account = pwd.getpwnam(USER)
            os.chown(self.dir, account.pw_uid, account.pw_gid)
        self.dir.chmod(0o700)
        password_file = self.dir / "password"
        password_file.write_text(PASSWORD + "\n", encoding="utf-8")
        if os.getuid() == 0:
            os.chown(password_file, account.pw_uid, account.pw_gid)
        # The guard comes first, so that even a server that half-started is stopped.
        self._guard = subprocess.Popen(
            [
                sys.executable,
                "-c",
                GUARD,
                str(self.dir),
                str(self.data),
                *self._as_server(),
                str(self.bin / "pg_ctl"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd="/",
        )
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={password_file}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            "--no-instructions",
        )
        password_file.unlink()
        options = [
            f"-c listen_addresses={self.host}",
            f"-p {self.port}",
            f"-k {self.dir}",
            *(f"-c {name}={value}" for name, value in FAST_SETTINGS.items()),
        ]
        self._run(
            str(self.bin / "pg_ctl"),
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            str(START_TIMEOUT),
        )
        self._run(str(self.bin / "pg_isready"), "-h", self.host, "-p", str(self.port), "-t", "60")

    def __exit__(self, *exc: object) -> None:
        if self._guard is not None:
            assert self._guard.stdin is not None
            self._guard.stdin.close()
            self._guard.wait(timeout=300)
            self._guard = None
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- databases ----------------------------------------------------------------------------

    def url(self, database: str = "postgres", *, password: str | None = PASSWORD) -> str:
        """A SQLAlchemy URL for ``database`` on this server, as the superuser."""
        secret = f":{password}" if password is not None else ""
        return f"{SCHEME}://{USER}{secret}@{self.host}:{self.port}/{database}"

    def execute(self, *statements: str, database: str = "postgres") -> None:
        """Run statements outside any transaction (CREATE/DROP DATABASE need that)."""
        execute_at(self.url(database), *statements)

    def create_database(self, template: str = "template0") -> str:
        """A new database copied from ``template``; returns its name."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop_database(self, name: str) -> None:
        # FORCE ends any session a test left open (a worker it killed, an engine not
        # disposed), so the drop never waits on one.
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def migrated_template(self) -> str:
        """A database migrated to mailer's head once, kept as the template for the rest."""
        if self._template is None:
            import sqlalchemy as sa
            from alembic import command

            from mailer.store.migrate import alembic_config

            name = self.create_database()
            engine = sa.create_engine(self.url(name))
            try:
                with engine.begin() as connection:
                    command.upgrade(alembic_config(connection), "head")
            finally:
                engine.dispose()
            self._template = name
        return self._template

    @contextlib.contextmanager
    def fresh_database(self, *, migrated: bool = True) -> Iterator[str]:
        """``with server.fresh_database() as url:`` a database of its own, dropped after.

        ``migrated`` copies the session's migrated template (mailer's schema at head, no
        rows); otherwise the database is empty, as a new one on a real server is.
        """
        name = self.create_database(self.migrated_template() if migrated else "template0")
        try:
            yield self.url(name)
        finally:
            self.drop_database(name)


def execute_at(url: str, *statements: str) -> list[tuple[Any, ...]]:
    """Run statements on the database of the SQLAlchemy ``url`` outside any transaction
    (CREATE/DROP DATABASE need that); the rows of the last one that returns any."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    rows: list[tuple[Any, ...]] = []
    with psycopg.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        autocommit=True,
    ) as connection:
        for statement in statements:
            cursor = connection.execute(statement)  # type: ignore[arg-type]
            if cursor.description is not None:
                rows = cursor.fetchall()
    return rows
