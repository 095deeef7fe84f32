"""Shared fixtures: every test gets its own copy of the example newsletter folder.

Helpers for particular areas live in the test modules that use them.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailer import config
from mailer.cli import app
from mailer.config import Settings

REPO = Path(__file__).resolve().parent.parent
# The tests' own copy of the example newsletter folder: the repository's issues/ belongs to
# whoever uses this checkout, and may hold their own issues.
EXAMPLE = REPO / "tests" / "data" / "newsletter"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings from the developer's shell must not leak into tests."""
    for key in list(os.environ):
        if key.startswith("MAILER_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MAILER_SECRET_KEY", "test-secret-key-not-for-production")


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Commands run in-process may attach log files to the "mailer" logger: detach them."""
    yield
    logger = logging.getLogger("mailer")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = True


@pytest.fixture(scope="session")
def example_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example issues built once, as `mailer build` leaves them: approve and send refuse
    an issue that is not built as it is now."""
    from mailer.site import build

    root = tmp_path_factory.mktemp("example-build") / "newsletter"
    shutil.copytree(EXAMPLE, root)
    settings = config.load(root, env={})
    build.build(settings, ["2021-12", "2025-11"])
    return root / "build"


@pytest.fixture
def newsletter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, example_build: Path) -> Path:
    """A fresh copy of the tests' example newsletter folder (mailer.toml, issues, and their
    build/, as after `mailer build`); cwd."""
    root = tmp_path / "newsletter"
    root.mkdir()
    shutil.copytree(EXAMPLE, root, dirs_exist_ok=True)
    shutil.copytree(example_build, root / "build")
    monkeypatch.chdir(root)
    return root


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
