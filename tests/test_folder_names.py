"""A newsletter folder's database is its own, whatever characters the folder's name holds.

The SQLite location is built from the folder's path and never parsed as a URL: a ``?``
would start a query (``mag?x`` and ``mag?y`` would share a file named ``mag``), ``%41``
would be read as ``A`` and ``#`` would start a fragment.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import EXAMPLE
from mailer.cli import app

pytestmark = pytest.mark.sqlite_file


def _folder(parent: Path, name: str) -> Path:
    root = parent / name
    shutil.copytree(EXAMPLE, root)
    return root


def _run(monkeypatch: pytest.MonkeyPatch, root: Path, *args: str) -> str:
    monkeypatch.chdir(root)
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_folders_named_mag_x_and_mag_y_each_keep_their_own_subscribers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = {"mag?x": "xavier@example.org", "mag?y": "yasmin@example.org"}
    for name, person in people.items():
        root = _folder(tmp_path, name)
        _run(monkeypatch, root, "lists", "create", "all", "--name", "All practitioners")
        _run(monkeypatch, root, "subscribers", "add", person, "--list", "all")
    for name, person in people.items():
        listed = _run(monkeypatch, tmp_path / name, "subscribers", "list")
        others = set(people.values()) - {person}
        assert person in listed and not any(other in listed for other in others)
        assert (tmp_path / name / "subscribers.sqlite").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mag?x", "mag?y"]


@pytest.mark.parametrize("name", ["pct%41dir", "a#b c", "Ŝafeguarding news"])
def test_a_folder_name_is_never_read_as_part_of_a_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    root = _folder(tmp_path, name)
    _run(monkeypatch, root, "lists", "create", "all", "--name", "All practitioners")
    _run(monkeypatch, root, "subscribers", "add", "amira@example.org", "--list", "all")
    assert "amira@example.org" in _run(monkeypatch, root, "subscribers", "list")
    assert (root / "subscribers.sqlite").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert str(root / "subscribers.sqlite") in _run(monkeypatch, root, "db", "current")
