"""``mailer subscribers add|list|show|export|unsubscribe|erase`` against real SQLite files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from mailer.config import Settings
from mailer.store.database import open_db
from mailer.subscribers import demo as subscribers
from subscriber_helpers import (
    Cli,
    add,
    count,
    fails,
    make_list,
    ok,
    on_list,
    query,
    status_of,
)

# --- add -------------------------------------------------------------------------------------


def test_add_normalises_and_records_consent(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    result = ok(
        add(
            cli,
            "  Jo.Bloggs@EXAMPLE.org ",
            "all",
            "--name",
            "Jo  Bloggs",
            "--organisation",
            "Carlisle Primary",
            "--basis",
            "consent",
        )
    )
    assert result.stdout == "Added jo.bloggs@example.org to all (lawful basis: consent).\n"
    assert query(newsletter, "SELECT email, name, organisation, status FROM subscriber") == [
        ("jo.bloggs@example.org", "Jo Bloggs", "Carlisle Primary", "active")
    ]
    assert query(newsletter, "SELECT basis, source, confirmed_at FROM consent") == [
        ("consent", "mailer subscribers add", None)
    ]


def test_add_defaults_to_public_task_and_handles_international_domains(
    cli: Cli, newsletter: Path
) -> None:
    make_list(cli)
    ok(add(cli, "Anna@Bücher.Example"))
    ok(add(cli, "anna@xn--bcher-kva.example"))  # the same address, spelt in IDNA
    assert on_list(newsletter, "all") == ["anna@bücher.example"]
    assert query(newsletter, "SELECT basis FROM consent") == [("public-task",)]


def test_add_twice_changes_nothing_or_updates_the_name(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    ok(add(cli, "jo@example.org"))
    assert ok(add(cli, "JO@example.org")).stdout == (
        "jo@example.org is already on all; nothing changed.\n"
    )
    assert "updated their name" in ok(add(cli, "jo@example.org", "all", "--name", "Jo")).stdout
    assert query(newsletter, "SELECT name FROM subscriber") == [("Jo",)]
    assert count(newsletter, "membership") == 1


@pytest.mark.parametrize(
    "address, reason",
    [
        ("bob@@example.org", "invalid characters"),
        ("bob", "must have an @-sign"),
        ("bob@localhost", "should have a period"),
        ("bob@example.test", "special-use or reserved"),
        ("", "no email address"),
    ],
)
def test_add_refuses_an_invalid_address(
    cli: Cli, newsletter: Path, address: str, reason: str
) -> None:
    make_list(cli)
    fails(add(cli, address), reason)
    assert count(newsletter, "subscriber") == 0


def test_add_to_a_list_that_does_not_exist(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    fails(add(cli, "jo@example.org", "nope"), "no list 'nope'")
    assert count(newsletter, "subscriber") == 0


def test_add_never_resubscribes_someone_who_left(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    make_list(cli, "health", "Health")
    for email in ("gone@example.org", "left@example.org"):
        ok(add(cli, email))
    ok(cli("subscribers", "unsubscribe", "gone@example.org"))
    ok(cli("subscribers", "unsubscribe", "left@example.org", "--list", "all"))

    fails(
        add(cli, "gone@example.org"),
        "gone@example.org unsubscribed from everything on",
        "never subscribes them again",
    )
    fails(add(cli, "gone@example.org", "health"), "unsubscribed from everything")
    fails(add(cli, "left@example.org"), "unsubscribed from this list on")
    # Leaving one list is not leaving the others.
    ok(add(cli, "left@example.org", "health"))
    assert on_list(newsletter, "all") == []
    assert on_list(newsletter, "health") == ["left@example.org"]


@pytest.mark.parametrize(
    "status, reason", [("bounced", "bounced on"), ("complained", "reported a newsletter as spam")]
)
def test_add_never_resubscribes_bounced_or_complained(
    cli: Cli, settings: Settings, status: str, reason: str
) -> None:
    from mailer.store import people as store

    make_list(cli)
    ok(add(cli, "x@example.org"))
    with open_db(settings) as db, db.session(write=True) as session:
        subscriber = store.get_subscriber(session, "x@example.org")
        assert subscriber.id is not None
        mark = store.mark_bounced if status == "bounced" else store.mark_complained
        assert mark(session, [subscriber.id]) == 1
    fails(add(cli, "x@example.org"), reason)
    assert status_of(settings.root, "x@example.org") == status


# --- unsubscribe -----------------------------------------------------------------------------


def test_unsubscribe_from_everything_leaves_every_list(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    make_list(cli, "health", "Health")
    ok(add(cli, "jo@example.org"))
    ok(add(cli, "jo@example.org", "health"))
    result = ok(cli("subscribers", "unsubscribe", "Jo@Example.org"))
    assert result.stdout == "Unsubscribed jo@example.org from everything.\n"
    assert status_of(newsletter, "jo@example.org") == "unsubscribed"
    assert query(newsletter, "SELECT DISTINCT status FROM membership") == [("unsubscribed",)]
    again = ok(cli("subscribers", "unsubscribe", "jo@example.org"))
    assert (
        again.stdout
        == "jo@example.org was already unsubscribed from everything; nothing changed.\n"
    )


def test_unsubscribe_from_one_list(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    make_list(cli, "health", "Health")
    ok(add(cli, "jo@example.org"))
    ok(add(cli, "jo@example.org", "health"))
    assert ok(cli("subscribers", "unsubscribe", "jo@example.org", "--list", "health")).stdout == (
        "Unsubscribed jo@example.org from health.\n"
    )
    assert on_list(newsletter, "all") == ["jo@example.org"]
    assert on_list(newsletter, "health") == []
    assert (
        "already" in ok(cli("subscribers", "unsubscribe", "jo@example.org", "-l", "health")).stdout
    )


def test_unsubscribe_mistakes(cli: Cli) -> None:
    make_list(cli)
    make_list(cli, "health", "Health")
    ok(add(cli, "jo@example.org"))
    fails(
        cli("subscribers", "unsubscribe", "nobody@example.org"), "no subscriber nobody@example.org"
    )
    fails(
        cli("subscribers", "unsubscribe", "jo@example.org", "--list", "health"),
        "jo@example.org is not on list health",
    )
    fails(cli("subscribers", "unsubscribe", "jo@example.org", "--list", "nope"), "no list 'nope'")
    fails(cli("subscribers", "unsubscribe", "jo@@example.org"), "not a valid email address")


# --- list and show ---------------------------------------------------------------------------


def _people(cli: Cli) -> None:
    make_list(cli)
    make_list(cli, "health", "Health")
    ok(add(cli, "amira@example.org", "all", "--name", "Amira Hussain", "--organisation", "NHS"))
    ok(add(cli, "ben@example.org", "all", "--name", "Ben Ellis", "--organisation", "Police"))
    ok(add(cli, "ben@example.org", "health"))
    ok(add(cli, "chloe@example.org", "health", "--name", "Chloe 100%_Nixon"))
    ok(cli("subscribers", "unsubscribe", "amira@example.org", "--list", "all"))


def _emails(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[:-1]]


def test_list_filters(cli: Cli) -> None:
    _people(cli)
    everyone = ok(cli("subscribers", "list")).stdout
    assert _emails(everyone) == ["amira@example.org", "ben@example.org", "chloe@example.org"]
    assert everyone.splitlines()[-1] == "3 subscribers"
    assert "Ben Ellis, Police" in everyone and "all health" in everyone

    on_all = ok(cli("subscribers", "list", "--list", "all")).stdout
    assert _emails(on_all) == ["amira@example.org", "ben@example.org"]
    assert on_all.splitlines()[0].split()[1] == "unsubscribed"  # Amira's status on this list
    active = ok(cli("subscribers", "list", "--list", "all", "--status", "active")).stdout
    assert _emails(active) == ["ben@example.org"]
    assert _emails(ok(cli("subscribers", "list", "--search", "NHS")).stdout) == [
        "amira@example.org"
    ]
    # % and _ are searched for literally, not as wildcards.
    assert _emails(ok(cli("subscribers", "list", "--search", "100%_")).stdout) == [
        "chloe@example.org"
    ]
    assert ok(cli("subscribers", "list", "--search", "%")).stdout.splitlines()[-1] == "1 subscriber"
    nobody = ok(cli("subscribers", "list", "--status", "bounced")).stdout
    assert nobody == "0 subscribers\n"
    fails(cli("subscribers", "list", "--list", "nope"), "no list 'nope'")
    assert cli("subscribers", "list", "--status", "sleeping").exit_code == 1


def test_show_everything_held_for_a_subject_access_request(cli: Cli) -> None:
    _people(cli)
    out = ok(cli("subscribers", "show", "BEN@example.org")).stdout
    assert out.splitlines()[0] == "ben@example.org"
    assert "  name:         Ben Ellis" in out
    assert "  organisation: Police" in out
    assert "  status:       active" in out
    assert "list all (All practitioners): subscribed since" in out
    assert "lawful basis public-task, source 'mailer subscribers add', recorded" in out

    held = json.loads(ok(cli("subscribers", "show", "amira@example.org", "--json")).stdout)
    assert held["email"] == "amira@example.org"
    assert held["name"] == "Amira Hussain"
    assert held["status"] == "active"
    [membership] = held["lists"]
    assert membership["slug"] == "all"
    assert membership["status"] == "unsubscribed"
    assert membership["consent"]["basis"] == "public-task"
    assert membership["consent"]["recorded_at"].endswith("+00:00")
    fails(cli("subscribers", "show", "nobody@example.org"), "mailer holds nothing about nobody@")


# --- export ----------------------------------------------------------------------------------


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_export_to_stdout_with_filters(cli: Cli) -> None:
    _people(cli)
    rows = _csv(ok(cli("subscribers", "export")).stdout)
    assert list(rows[0]) == ["email", "name", "organisation", "status", "lists", "created"]
    assert [r["email"] for r in rows] == [
        "amira@example.org",
        "ben@example.org",
        "chloe@example.org",
    ]
    assert rows[1]["lists"] == "all health" and rows[1]["name"] == "Ben Ellis"
    on_all = _csv(ok(cli("subscribers", "export", "--list", "all", "--status", "active")).stdout)
    assert [r["email"] for r in on_all] == ["ben@example.org"]
    left = _csv(
        ok(cli("subscribers", "export", "--list", "all", "--status", "unsubscribed")).stdout
    )
    assert [r["email"] for r in left] == ["amira@example.org"]


def test_export_to_a_file_that_excel_reads_and_import_takes_back(
    cli: Cli, newsletter: Path
) -> None:
    _people(cli)
    ok(add(cli, "eve@example.org", "all", "--name", '=HYPERLINK("http://evil")'))
    result = ok(cli("subscribers", "export", "-o", "out.csv"))
    assert result.stderr == "Wrote 4 subscribers to out.csv\n"
    assert result.stdout == ""
    data = (newsletter / "out.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbfemail,")  # a BOM, so Excel reads UTF-8
    rows = _csv(data.decode("utf-8-sig"))
    # A cell that Excel would run as a formula is written as text.
    assert rows[3]["name"] == '\'=HYPERLINK("http://evil")'
    assert not list(newsletter.glob("*.part"))

    make_list(cli, "copy", "Copy")
    assert (
        "added:                         4"
        in ok(cli("subscribers", "import", "out.csv", "--list", "copy")).stdout
    )


def test_export_of_a_list_that_does_not_exist_writes_no_file(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    fails(cli("subscribers", "export", "--list", "nope", "-o", "out.csv"), "no list 'nope'")
    assert list(newsletter.glob("out.csv*")) == []


# --- erase -----------------------------------------------------------------------------------


@pytest.mark.sqlite_file
def test_erase_removes_personal_data_and_keeps_only_a_hash(cli: Cli, newsletter: Path) -> None:
    _people(cli)
    result = ok(cli("subscribers", "erase", "Ben@Example.org", "--yes"))
    assert result.stdout.splitlines() == [
        "Erased ben@example.org: removed the address, name, organisation, 2 list memberships "
        "with consent records (all, health).",
        "Kept only a keyed hash of the address, so it can never be imported again.",
    ]
    database = (newsletter / "subscribers.sqlite").read_bytes()
    wal = newsletter / "subscribers.sqlite-wal"
    stored = database + (wal.read_bytes() if wal.exists() else b"")
    assert b"ben@example.org" not in stored.lower()
    assert query(
        newsletter,
        "SELECT email, name, organisation, status FROM subscriber WHERE status = 'erased'",
    ) == [(None, "", "", "erased")]
    [(digest, reason)] = query(newsletter, "SELECT email_hash, reason FROM suppression")
    assert len(digest) == 64 and reason == "erased"
    assert count(newsletter, "membership") == 2 and count(newsletter, "consent") == 2

    fails(add(cli, "ben@example.org", "health"), "was erased on request")
    assert "ben@example.org" not in ok(cli("subscribers", "export")).stdout
    shown = ok(cli("subscribers", "show", "ben@example.org")).stdout
    assert "erased on" in shown and "only a keyed hash" in shown
    again = ok(cli("subscribers", "erase", "ben@example.org", "--yes"))
    assert again.stdout == "ben@example.org was already erased; nothing else was held.\n"


def test_erase_asks_first_and_does_nothing_if_refused(cli: Cli, newsletter: Path) -> None:
    _people(cli)
    result = cli("subscribers", "erase", "ben@example.org", input="n\n")
    assert result.exit_code == 1
    assert "This cannot be undone" in result.stderr and "Traceback" not in result.output
    assert status_of(newsletter, "ben@example.org") == "active"
    assert (
        "Erased ben@example.org"
        in ok(cli("subscribers", "erase", "ben@example.org", input="y\n")).stdout
    )


def test_erase_of_an_unknown_address_still_suppresses_it(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    result = ok(cli("subscribers", "erase", "never@example.org", "-y"))
    assert "Nothing was held about never@example.org" in result.stdout
    fails(add(cli, "never@example.org"), "was erased on request")
    assert count(newsletter, "subscriber") == 0


def test_erase_needs_the_secret_key(
    cli: Cli, newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_list(cli)
    ok(add(cli, "jo@example.org"))
    monkeypatch.delenv("MAILER_SECRET_KEY")
    fails(cli("subscribers", "erase", "jo@example.org", "--yes"), "MAILER_SECRET_KEY is not set")
    assert status_of(newsletter, "jo@example.org") == "active"


def test_every_subscribers_command_has_an_example(cli: Cli) -> None:
    for command in ("add", "import", "export", "list", "show", "unsubscribe", "erase"):
        out = ok(cli("subscribers", command, "--help")).stdout
        assert "Example:\n    mailer subscribers " + command in out


# --- demo data -------------------------------------------------------------------------------


def test_seed_demo_is_idempotent(settings: Settings, cli: Cli) -> None:
    first = subscribers.seed_demo(settings)
    second = subscribers.seed_demo(settings)
    assert first == second
    assert (first.subscribed, first.unsubscribed) == (5, 1)
    assert len(on_list(settings.root, "demo")) == 5
    assert count(settings.root, "subscriber") == 6
    assert all(e.endswith("@example.org") for e in on_list(settings.root, "demo"))
    assert status_of(settings.root, subscribers.DEMO_UNSUBSCRIBED) == "unsubscribed"
    assert "Demo practitioners" in ok(cli("lists", "list")).stdout
