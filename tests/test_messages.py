"""Errors a comms officer can act on: each mistake gets one line with its place and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import draft_dir
from send_helpers import addresses, make_list

ISSUE = "issues/2025-11/issue.yaml"


def edit(root: Path, old: str, new: str) -> int:
    """Replace ``old`` once in the 2025-11 issue; the line number of the change."""
    path = root / ISSUE
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return text[: text.index(old)].count("\n") + 1


def one_line(r: Any) -> str:
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    (line,) = r.stderr.splitlines()
    return str(line)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "  - type: news\n",
            "\t- type: news\n",
            "malformed YAML: a tab character: use spaces, not tabs, to indent",
        ),
        (
            '    title: "Extra Help and Early Help (Family Help)"\n',
            "    title: Update: Family Help\n",
            'put text containing a colon in quotes, like title: "Update: Family Help"',
        ),
        (
            '    title: "Extra Help and Early Help (Family Help)"\n',
            "    title: “Update: Family Help”\n",
            'use straight quotes (") around text, not curly ones (“ ”)',
        ),
        (
            "venue: Wigton}",
            "venue: Civic Centre, Wigton}",
            "sessions[0].Wigton: a comma inside {...} starts a new key: put text containing a "
            'comma in quotes, like venue: "Civic Centre, Wigton"',
        ),
    ],
)
def test_yaml_mistakes_keep_file_and_line_and_add_the_fix(
    cli: Any, newsletter: Path, old: str, new: str, message: str
) -> None:
    line = edit(newsletter, old, new)
    problem = one_line(cli("build", "2025-11"))
    assert problem.startswith(f"{ISSUE}:{line}: "), problem
    assert message in problem


def test_a_time_in_curly_quotes_is_read_as_typed(cli: Any, newsletter: Path) -> None:
    """A word processor turns "09:30" into “09:30”: a time is read through its quotes."""
    edit(newsletter, 'start: "09:30"', "start: “09:30”")
    r = cli("build", "2025-11")
    assert r.exit_code == 0, r.output
    assert "9:30am" in (draft_dir(newsletter, "2025-11") / "email.txt").read_text(encoding="utf-8")


def test_a_windows_1252_file_names_the_line_of_the_first_bad_byte(
    cli: Any, newsletter: Path
) -> None:
    path = newsletter / ISSUE
    lines = path.read_text(encoding="utf-8").replace("–", "-").splitlines(keepends=True)
    lines[9] = "intro: Don’t miss it\n"
    path.write_bytes("".join(lines).encode("cp1252"))
    assert one_line(cli("build", "2025-11")) == (
        f"{ISSUE}:10: not UTF-8 text (byte 0x92, probably ’ typed in a Windows program): "
        "save the file as UTF-8"
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["sedn", "2025-11"], "Error: No such command 'sedn': did you mean 'send', 'sends'?"),
        (["send", "2025-11", "--lsit", "x"], "Error: No such option: --lsit"),
        (["--verison"], "Error: No such option: --verison"),
        (["lists", "craete", "x"], "Error: No such command 'craete': did you mean 'create'?"),
    ],
)
def test_misspelt_commands_and_options_exit_1_with_one_line(
    cli: Any, args: list[str], line: str
) -> None:
    shown = one_line(cli(*args))
    assert shown.startswith(line), shown
    assert shown.endswith("--help)")


def test_a_wrong_list_name_suggests_the_closest_list(cli: Any, newsletter: Path) -> None:
    make_list(cli, newsletter, "practitioners", addresses(1))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    assert one_line(cli("send", "2025-11", "--list", "practitioner", "--yes")) == (
        "Error: no list 'practitioner': did you mean 'practitioners'? (see the lists with: "
        "mailer lists list)"
    )
    assert "the lists are practitioners" in one_line(cli("lists", "show", "schools"))


def test_a_wrong_issue_name_suggests_the_closest_issue(cli: Any) -> None:
    assert one_line(cli("build", "2025-1")) == (
        "issues/2025-1/issue.yaml: no issue '2025-1': did you mean '2025-11'?"
    )


def test_a_change_after_approval_names_the_approval_time_in_local_time(
    cli: Any, newsletter: Path
) -> None:
    make_list(cli, newsletter, "practitioners", addresses(1))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    edit(newsletter, "Impact Chronology", "Impact")
    line = one_line(cli("send", "2025-11", "--list", "practitioners", "--yes"))
    assert " GMT (" in line or " BST (" in line, line
    assert "UTC" not in line
