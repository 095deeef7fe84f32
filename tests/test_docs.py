"""The documentation is part of the product: every command must be documented.

A command counts as documented when README.md or a page in docs/ mentions it as
``mailer <command path>`` (for example ``mailer build`` or ``mailer lists add``).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer.main

from conftest import REPO, Result, draft_dir
from mailer.cli import app
from mailer.content import load as content


def command_paths() -> list[str]:
    """Every command and sub-command of ``mailer``, as the words a user types."""
    found: list[str] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            if getattr(sub, "hidden", False):
                continue
            found.append(" ".join((*path, name)))
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def documentation() -> str:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return "\n".join(p.read_text(encoding="utf-8") for p in pages if p.is_file())


def test_the_commands_are_found() -> None:
    assert {"build", "new"} <= set(command_paths())


@pytest.mark.parametrize("path", command_paths())
def test_command_is_documented(path: str) -> None:
    words = r"\s+".join(re.escape(word) for word in path.split())
    # The command must be followed by a space, an argument, punctuation or the end of a
    # line, so "mailer send" does not count as documenting "mailer sender".
    documented = re.search(rf"\bmailer\s+{words}(?![\w-])", documentation()) is not None
    assert documented, f"`mailer {path}` is not mentioned in README.md or docs/*.md"


def test_the_complete_example_in_docs_content_builds(
    newsletter: Path, cli: Callable[..., Result]
) -> None:
    text = (REPO / "docs" / "content.md").read_text(encoding="utf-8")
    (example,) = [
        block
        for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
        if block.startswith("# issues/2025-11/issue.yaml")
    ]
    folder = newsletter / "issues" / "doc-example"
    (folder / "images").mkdir(parents=True)
    shutil.copy(newsletter / "issues/2021-12/images/ofsted.png", folder / "images/family-help.png")
    (folder / "issue.yaml").write_text(example, encoding="utf-8")
    result = cli("build", "doc-example")
    assert result.exit_code == 0, result.output
    html = (draft_dir(newsletter, "doc-example") / "email.html").read_text(encoding="utf-8")
    assert "Email to express interest" in html
    assert "Join the session online" in html


def test_every_key_of_the_content_format_is_documented() -> None:
    text = (REPO / "docs" / "content.md").read_text(encoding="utf-8")
    keys = set().union(
        content._ISSUE_KEYS,
        content._COMMON_KEYS,
        *content._EXTRA_KEYS.values(),
        content._SESSION_KEYS,
        content._IMAGE_KEYS,
        content._LINK_KEYS,
    )
    for key in sorted(keys):
        assert re.search(rf"^\| `{key}` \|", text, re.MULTILINE), f"{key} is not in a key table"
    for kind in content.SECTION_TYPES:
        assert f"`{kind}`" in text


def test_every_setting_is_documented() -> None:
    text = (REPO / "docs" / "rendering.md").read_text(encoding="utf-8")
    source = (REPO / "src" / "mailer" / "config.py").read_text(encoding="utf-8")
    # Every key config.py reads from mailer.toml, and every MAILER_ variable it reads.
    keys = set(re.findall(r'\b[a-z]+\.(?:get|text|number)\("(\w+)"', source))
    assert {"name", "base_url", "postal_address", "logo", "connections"} <= keys
    for key in sorted(keys):
        assert f"`{key}`" in text, key
    for variable in sorted(set(re.findall(r'"(MAILER_[A-Z_]+)"', source))):
        assert variable in text, variable
