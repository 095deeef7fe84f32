"""Returned mail through `mailer bounces process`: each message lands on the right person
with the right outcome, once, whatever shape the remote system gave it."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from bounce_helpers import (
    CASES,
    JUNK,
    add_issue,
    copies,
    events,
    membership,
    render,
    send_issue,
    setup_sent,
    subscriber_status,
)
from conftest import REPO
from db_helpers import engine_for, on_postgres
from send_helpers import addresses, sql

PEOPLE = addresses(20)


@pytest.fixture
def sent(cli: Any, newsletter: Path) -> Path:
    setup_sent(cli, newsletter, PEOPLE)
    return newsletter


def process_file(cli: Any, root: Path, name: str, who: int, *options: str) -> Any:
    path = root / f"in-{name}"
    path.write_bytes(render(name, copies(root)[PEOPLE[who]], root))
    return cli("bounces", "process", str(path), *options)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_message_lands_on_the_right_person(
    cli: Any, sent: Path, case: tuple[Any, ...]
) -> None:
    name, who, kind, code, status, member, named = case
    r = process_file(cli, sent, name, who)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"{kind}:"), r.stdout
    email = PEOPLE[who] if named else None
    [(got_kind, got_email, got_code, action)] = events(sent)
    assert (got_kind, got_email, got_code) == (kind, email, code)
    assert subscriber_status(sent, PEOPLE[who]) == status
    assert membership(sent, PEOPLE[who]) == member
    # Nobody else changed.
    others = sql(
        sent, "SELECT COUNT(*) FROM subscriber WHERE status != 'active' AND email != ?", PEOPLE[who]
    )
    assert others == [(0,)]
    if kind in ("soft", "full"):
        assert action == "counted: 1 of 3 sends in a row failed"
    if kind in ("delayed", "auto-reply", "policy"):
        assert subscriber_status(sent, PEOPLE[who]) == "active"


@pytest.mark.parametrize("name", JUNK)
def test_junk_is_kept_and_counted_never_acted_on(cli: Any, sent: Path, name: str) -> None:
    r = process_file(cli, sent, name, 0)
    assert r.exit_code == 0, r.output
    assert "Not understood: kept in .mailer/bounces/unrecognised/" in r.stdout
    kept = list((sent / ".mailer/bounces/unrecognised").glob("*.eml"))
    assert len(kept) == 1
    assert kept[0].stat().st_mode & 0o077 == 0
    assert events(sent) == [("unrecognised", None, "", "none")] or events(sent)[0][0:2] == (
        "unrecognised",
        None,
    )
    assert sql(sent, "SELECT COUNT(*) FROM subscriber WHERE status != 'active'") == [(0,)]


def test_processing_a_message_twice_counts_it_once(cli: Any, sent: Path) -> None:
    for name, who, *_ in CASES:
        assert process_file(cli, sent, name, who).exit_code == 0
    first = events(sent)
    for name, who, *_ in CASES:
        r = process_file(cli, sent, name, who)
        assert r.exit_code == 0
        assert r.stdout.startswith("Already processed"), r.stdout
    assert events(sent) == first
    # The same bounce delivered again through the pipe with a Delivered-To line added.
    path = sent / "again.eml"
    path.write_bytes(
        b"Delivered-To: x@example.org\r\n"
        + render("postfix-4.4.1-failed.eml", copies(sent)[PEOPLE[5]], sent)
    )
    assert cli("bounces", "process", str(path)).stdout.startswith("Already processed")
    assert events(sent) == first


def test_soft_bounces_count_across_sends_in_a_row_and_a_delivery_resets_them(
    cli: Any, sent: Path
) -> None:
    add_issue(sent, "2025-12", "2025-11-27")
    add_issue(sent, "2026-01", "2026-01-05")
    a, b = PEOPLE[0], PEOPLE[1]

    def soft(slug: str, who: str, name: str = "postfix-4.4.1-failed.eml") -> str:
        path = sent / f"{slug}-{who}-{name}"
        path.write_bytes(render(name, copies(sent, slug)[who], sent))
        r = cli("bounces", "process", str(path))
        assert r.exit_code == 0, r.output
        return r.stdout

    assert "counted: 1 of 3" in soft("2025-11", a)
    # A second report about the same copy is the same failed send, not another one.
    assert "counted: 1 of 3" in soft("2025-11", a, "exim-dsn-5.2.2-mailbox-full.eml")
    assert "counted: 1 of 3" in soft("2025-11", b)
    send_issue(cli, "2025-12")
    assert "counted: 2 of 3" in soft("2025-12", a)
    # b's copy of 2025-12 reached them: nothing came back.
    send_issue(cli, "2026-01")
    assert subscriber_status(sent, a) == "active"
    assert "marked bounced: 3 sends in a row failed" in soft("2026-01", a)
    assert "counted: 1 of 3" in soft("2026-01", b)
    assert subscriber_status(sent, a) == "bounced"
    assert subscriber_status(sent, b) == "active"


def test_the_soft_limit_is_a_setting(cli: Any, newsletter: Path) -> None:
    setup_sent(cli, newsletter, PEOPLE, extra="soft_limit = 1\n")
    r = process_file(cli, newsletter, "postfix-4.4.1-failed.eml", 0)
    assert "marked bounced: 1 sends in a row failed" in r.stdout
    assert subscriber_status(newsletter, PEOPLE[0]) == "bounced"


def test_subscribers_show_says_what_came_back_and_what_it_changed(cli: Any, sent: Path) -> None:
    process_file(cli, sent, "postfix-4.4.1-failed.eml", 0)
    process_file(cli, sent, "exchange-5.1.1.eml", 0)
    r = cli("subscribers", "show", PEOPLE[0])
    assert r.exit_code == 0, r.output
    assert "status:       bounced" in r.stdout
    assert re.search(
        r"(GMT|BST): hard 5\.1\.1 \(send 1, from mailer bounces process\): marked bounced", r.stdout
    )
    assert re.search(
        r"(GMT|BST): soft 4\.4\.1 \(send 1, from mailer bounces process\): counted: 1 of 3",
        r.stdout,
    )
    held = cli("subscribers", "show", PEOPLE[0], "--json").stdout
    assert '"reason": "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found"' in held


def test_erasure_forgets_what_a_server_said_about_the_address(cli: Any, sent: Path) -> None:
    process_file(cli, sent, "exim-text-user-unknown.eml", 4)
    assert PEOPLE[4] in sql(sent, "SELECT reason FROM bounce_event")[0][0]
    assert cli("subscribers", "erase", PEOPLE[4], "--yes").exit_code == 0
    assert sql(sent, "SELECT kind, reason FROM bounce_event") == [("hard", "")]


def test_a_forged_unsubscribe_token_changes_nothing(cli: Any, sent: Path) -> None:
    raw = render("unsubscribe-mailto-subject.eml", copies(sent)[PEOPLE[11]], sent)
    token = re.search(rb"unsubscribe (\S+)", raw)
    assert token is not None
    # Someone edits the subscriber id in the token to unsubscribe the next person.
    assert token.group(1).startswith(b"12-")
    forged = b"13-" + token.group(1)[3:]
    path = sent / "forged.eml"
    path.write_bytes(raw.replace(token.group(1), forged))
    r = cli("bounces", "process", str(path))
    assert r.stdout.startswith("unsubscribe: unverified"), r.stdout
    assert membership(sent, PEOPLE[11]) == "subscribed"
    assert membership(sent, PEOPLE[12]) == "subscribed"


def test_bad_input_is_one_line(cli: Any, sent: Path) -> None:
    r = cli("bounces", "process", str(sent / "missing.eml"))
    assert r.exit_code == 1
    assert (
        r.stderr.strip() == f"Error: {sent / 'missing.eml'}: cannot read: No such file or directory"
    )
    empty = sent / "empty.eml"
    empty.write_bytes(b"")
    r = cli("bounces", "process", str(empty))
    assert r.exit_code == 1 and "is empty" in r.stderr


@contextlib.contextmanager
def _another_writer(root: Path) -> Iterator[None]:
    """Another writer holds the database: SQLite's write lock, or on PostgreSQL a lock on
    the table of people, which a command waits for until its lock timeout."""
    if not on_postgres(root):
        with closing(sqlite3.connect(root / "subscribers.sqlite", isolation_level=None)) as lock:
            lock.execute("BEGIN IMMEDIATE")
            yield
            lock.execute("ROLLBACK")
        return
    engine = engine_for(root)
    try:
        with engine.begin() as lock:
            lock.exec_driver_sql("LOCK TABLE subscriber IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        engine.dispose()


def test_a_busy_database_exits_75_so_postfix_tries_again(sent: Path) -> None:
    path = sent / "dsn.eml"
    path.write_bytes(render("gmail-5.1.1.eml", copies(sent)[PEOPLE[2]], sent))
    with _another_writer(sent):
        done = subprocess.run(
            [sys.executable, "-m", "mailer", "bounces", "process", str(path)],
            cwd=sent,
            capture_output=True,
            timeout=120,
        )
    assert done.returncode == 75, done.stderr
    assert b"Traceback" not in done.stderr
    assert done.stderr.decode().startswith("Error: ")
    assert "the database is busy" in done.stderr.decode()
    assert subscriber_status(sent, PEOPLE[2]) == "active"


# -- the Postfix recipe in docs/bounces.md --------------------------------------------------


def postfix_recipe() -> tuple[str, str]:
    """The ``directory=`` and ``argv=`` of the pipe service that docs/bounces.md shows."""
    text = (REPO / "docs" / "bounces.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    (block,) = [b for b in blocks if " pipe\n" in b and "argv=" in b]
    flat = re.sub(r"\n\s+", " ", block)
    directory = re.search(r"directory=(\S+)", flat)
    argv = re.search(r"argv=(.*)$", flat.strip(), re.MULTILINE)
    assert directory and argv, block
    return directory.group(1), argv.group(1).strip()


def test_the_postfix_pipe_in_the_docs_processes_a_bounce(sent: Path) -> None:
    directory, argv = postfix_recipe()
    assert directory == "/srv/newsletter"
    words = shlex.split(argv)
    assert words[0] == "/srv/newsletter/.venv/bin/mailer"
    copy = copies(sent)[PEOPLE[0]]
    from mailer import config
    from mailer.sending import verp

    address = verp.envelope_sender(config.load(sent), copy.delivery_id)
    # What Postfix's pipe(8) does: expand the macros, run the command in that directory with
    # the message on standard input.
    command = [sys.executable, "-m", "mailer"] + [
        w.replace("${original_recipient}", address) for w in words[1:]
    ]
    raw = render("postfix-4.4.1-failed.eml", copy, sent)
    # Postfix's D flag adds Delivered-To with the address; the recipe passes it too.
    done = subprocess.run(command, cwd=sent, input=raw, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().startswith("soft: subscriber")
    assert events(sent)[0][:3] == ("soft", PEOPLE[0], "4.4.1")


def test_an_unsubscribe_email_marked_auto_replied_still_unsubscribes(cli: Any, sent: Path) -> None:
    # Apple Mail's one-tap unsubscribe sends the mailto: with Auto-Submitted: auto-replied.
    raw = render("unsubscribe-mailto-subject.eml", copies(sent)[PEOPLE[11]], sent)
    path = sent / "apple.eml"
    path.write_bytes(b"Auto-Submitted: auto-replied\r\n" + raw)
    r = cli("bounces", "process", str(path))
    assert r.stdout.startswith("unsubscribe: subscriber"), r.stdout
    assert membership(sent, PEOPLE[11]) == "unsubscribed"


def test_bounces_list_shows_what_came_back_masked(cli: Any, sent: Path) -> None:
    process_file(cli, sent, "gmail-5.1.1.eml", 2)
    r = cli("bounces", "list")
    assert r.exit_code == 0, r.output
    assert "hard 5.1.1  verified" in r.stdout
    assert PEOPLE[2] not in r.stdout
    assert "marked bounced" in r.stdout
    full = cli("bounces", "list", "--people", "--json")
    [row] = json.loads(full.stdout)
    assert (row["address"], row["kind"], row["verified"]) == (PEOPLE[2], "hard", True)
