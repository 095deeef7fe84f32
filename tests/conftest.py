"""Shared fixtures: every test gets its own copy of the example newsletter folder.

The suite runs on either database: with ``MAILER_TEST_DATABASE=postgresql`` every test that
uses the ``newsletter`` fixture (and so ``settings`` and ``cli``) gets a fresh database of
its own on a throwaway PostgreSQL server (tests/pg_server.py), through
``MAILER_DATABASE_URL``, which the commands and workers a test starts inherit. Tests about
the SQLite file itself are marked ``sqlite_file`` and keep their SQLite file in both passes;
tests marked ``empty_database`` start from an empty database (no SQLite file, an empty
PostgreSQL database) instead of a copy of the migrated template.

Helpers for particular areas live in the test modules that use them.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from typer.testing import CliRunner

from mailer import config
from mailer.cli import app
from mailer.config import Settings
from pg_server import PostgresServer

REPO = Path(__file__).resolve().parent.parent
# The tests' own copy of the example newsletter folder: the repository's issues/ belongs to
# whoever uses this checkout, and may hold their own issues.
EXAMPLE = REPO / "tests" / "data" / "newsletter"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# The width of a phone's screen, at which every page must fit.
PHONE = 375
# Which database this pass of the suite runs on: "sqlite" (the default) or "postgresql".
TEST_DATABASE = os.environ.get("MAILER_TEST_DATABASE", "sqlite")
if TEST_DATABASE not in ("sqlite", "postgresql"):
    raise pytest.UsageError(
        f"MAILER_TEST_DATABASE={TEST_DATABASE!r}: use sqlite (the default) or postgresql"
    )
ON_POSTGRES = TEST_DATABASE == "postgresql"


# The modules that take longest, longest first (make test prints each pass's slowest
# tests): they are collected first, and with --no-loadscope-reorder pytest-xdist hands
# modules out in that order, so each worker ends its run on short ones instead of one
# worker finishing a long module alone. The rest follow in their usual order.
STARTED_FIRST = (
    "test_fleet.py",
    "test_send_resume.py",
    "test_check.py",
    "test_deploy.py",
    "test_bounces_poison.py",
    "test_webhooks.py",
    "test_edit.py",
    "test_month.py",
    "test_web_load.py",
    "test_scheduler_workers.py",
    "test_bounces_imap.py",
    "test_engine.py",
    "test_schedule.py",
    "test_web_bounds.py",
    "test_ledger.py",
    "test_report.py",
    "test_architecture.py",
    "test_import.py",
    "test_send.py",
    "test_approvers.py",
    "test_web_queue.py",
    "test_journal.py",
    "test_security.py",
    "test_alerts.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    gone = [name for name in STARTED_FIRST if not (REPO / "tests" / name).exists()]
    if gone:
        raise pytest.UsageError(f"tests/conftest.py STARTED_FIRST names no module: {gone}")
    rank = {name: i for i, name in enumerate(STARTED_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_report_header() -> str:
    return f"mailer test database: {TEST_DATABASE}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the tests' own, for the whole session."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """This test's database URL for MAILER_DATABASE_URL: a fresh PostgreSQL database in the
    PostgreSQL pass, None (the newsletter's own SQLite file) otherwise."""
    if not ON_POSTGRES or request.node.get_closest_marker("sqlite_file") is not None:
        yield None
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    empty = request.node.get_closest_marker("empty_database") is not None
    with server.fresh_database(migrated=not empty) as url:
        yield url


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings from the developer's shell must not leak into tests."""
    for key in list(os.environ):
        if key.startswith("MAILER_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MAILER_SECRET_KEY", "test-secret-key-not-for-production")


@pytest.fixture(autouse=True)
def _close_databases(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close every database a test opened and left open, as the end of a process would.

    A command run in-process, or a helper, may leave its database open when the test ends.
    On SQLite that goes unnoticed; psycopg warns about each connection collected while
    open, and a PostgreSQL server counts them, so they are closed here.
    """
    from mailer.store.database import Database

    opened: list[Database] = []
    original = Database.__init__

    def init(self: Database, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(Database, "__init__", init)
    yield
    for database in opened:
        database.close()


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Commands run in-process may attach log files to the "mailer" logger: detach them."""
    yield
    logger = logging.getLogger("mailer")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = True


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright, started once for a module; each test opens
    its own pages (and contexts) and closes them. Not once per session: while Playwright's
    sync API runs, its event loop is the main thread's running loop, so no later test could
    use asyncio.run (as `mailer send` does in-process)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page of the shared browser as wide as a phone, closed after the test."""
    opened = browser.new_page(viewport={"width": PHONE, "height": 800})
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def example_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example issues built once, as `mailer build` leaves them: approve and send refuse
    an issue that is not built as it is now."""
    from mailer.site import build

    root = tmp_path_factory.mktemp("example-build") / "newsletter"
    shutil.copytree(EXAMPLE, root)
    settings = config.load(root, env={})
    build.build(settings, ["2021-12", "2025-11"])
    return root


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example newsletter's SQLite file migrated to the head revision once, as the first
    command leaves it (before the key is remembered): each test's file is a copy, as each
    PostgreSQL test's database is a copy of a migrated template."""
    from mailer.store import migrate

    root = tmp_path_factory.mktemp("sqlite-template")
    shutil.copy(EXAMPLE / "mailer.toml", root / "mailer.toml")
    migrate.ensure_current(config.load(root, env={}))
    return sqlite_file(root)


def sqlite_file(root: Path) -> Path:
    """The SQLite file of the newsletter folder ``root`` (no MAILER_DATABASE_URL)."""
    from sqlalchemy.engine import make_url

    database = make_url(config.load(root, env={}).database_url).database
    assert database is not None
    return Path(database)


@pytest.fixture
def newsletter(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    example_build: Path,
    sqlite_template: Path,
    database_url: str | None,
) -> Path:
    """A fresh copy of the tests' example newsletter folder (mailer.toml, issues, and what
    `mailer build` leaves of them); cwd. Its database is this pass's (see database_url):
    on SQLite a copy of the migrated template, or no file at all for a test marked
    ``empty_database`` or ``sqlite_file`` (about the file the commands make)."""
    root = tmp_path / "newsletter"
    root.mkdir()
    shutil.copytree(EXAMPLE, root, dirs_exist_ok=True)
    # Both are drafts: build/ has the logo, .mailer/preview/ their pages.
    shutil.copytree(example_build / "build", root / "build")
    shutil.copytree(example_build / ".mailer" / "preview", root / ".mailer" / "preview")
    monkeypatch.chdir(root)
    if database_url is not None:
        monkeypatch.setenv("MAILER_DATABASE_URL", database_url)
    elif not any(request.node.get_closest_marker(m) for m in ("empty_database", "sqlite_file")):
        shutil.copy2(sqlite_template, sqlite_file(root))
    return root


def draft_dir(root: Path, slug: str) -> Path:
    """Where `mailer build` writes issue ``slug`` of the folder ``root`` while it is a draft
    (the preview root, outside build/)."""
    from mailer.site.build import output_dir

    return output_dir(config.load(root, env={}), slug, published=False)


@pytest.fixture
def settings(newsletter: Path) -> Settings:
    return config.load(newsletter)


class Result:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def cli(newsletter: Path) -> Iterator[object]:
    """Run a mailer command in-process: ``cli("build", "2025-11")`` -> Result."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        r = runner.invoke(app, list(args), input=input, catch_exceptions=False)
        return Result(r.exit_code, r.stdout, r.stderr)

    yield run
