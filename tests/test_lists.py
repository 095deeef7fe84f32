"""``mailer lists``: create, list, show, rename, and the mistakes people make with them."""

from __future__ import annotations

from pathlib import Path

from subscriber_helpers import Cli, add, fails, make_list, ok, query


def test_create_then_list_shows_counts(cli: Cli, newsletter: Path) -> None:
    result = ok(
        cli(
            "lists",
            "create",
            "all",
            "--name",
            "All practitioners",
            "--description",
            "Everyone who works with children",
        )
    )
    assert result.stdout == "Created list all: All practitioners\n"
    make_list(cli, "health", "Health")
    for email in ("a@example.org", "b@example.org", "c@example.org"):
        ok(add(cli, email))
    ok(add(cli, "a@example.org", "health"))
    ok(cli("subscribers", "unsubscribe", "c@example.org", "--list", "all"))

    lines = ok(cli("lists", "list")).stdout.splitlines()
    assert lines[0].split() == ["list", "subscribed", "unsubscribed", "name"]
    assert lines[1].split() == ["all", "2", "1", "All", "practitioners"]
    assert lines[2].split() == ["health", "1", "0", "Health"]


def test_list_with_no_lists_says_how_to_create_one(cli: Cli) -> None:
    assert "mailer lists create" in ok(cli("lists", "list")).stdout


def test_show_counts_each_status(cli: Cli, newsletter: Path) -> None:
    ok(cli("lists", "create", "all", "--name", "All practitioners", "--description", "Everyone"))
    for email in ("a@example.org", "b@example.org", "c@example.org", "d@example.org"):
        ok(add(cli, email))
    ok(cli("subscribers", "unsubscribe", "b@example.org"))
    ok(cli("subscribers", "unsubscribe", "c@example.org", "--list", "all"))
    query(newsletter, "SELECT 1")  # the database exists and is readable by others meanwhile

    out = ok(cli("lists", "show", "all")).stdout
    fields = {
        k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())
    }
    assert fields["list"] == "all"
    assert fields["name"] == "All practitioners"
    assert fields["description"] == "Everyone"
    assert fields["subscribed"] == "2"
    assert fields["unsubscribed"] == "2"
    assert fields["bounced"] == "0"
    assert fields["complained"] == "0"
    assert fields["created"].endswith((" GMT", " BST"))  # the newsletter's time zone


def test_rename_keeps_the_slug_and_the_people(cli: Cli, newsletter: Path) -> None:
    make_list(cli, "health", "Health")
    ok(add(cli, "a@example.org", "health"))
    result = ok(cli("lists", "rename", "health", "--name", "Health practitioners"))
    assert result.stdout == "Renamed list health: 'Health' is now 'Health practitioners'\n"
    assert query(newsletter, "SELECT slug, name FROM mailing_list") == [
        ("health", "Health practitioners")
    ]
    assert "1" in ok(cli("lists", "list")).stdout.splitlines()[1].split()


def test_a_slug_is_taken_once(cli: Cli, newsletter: Path) -> None:
    make_list(cli, "all")
    fails(cli("lists", "create", "all", "--name", "Again"), "list 'all' exists already")
    assert query(newsletter, "SELECT count(*) FROM mailing_list") == [(1,)]


def test_bad_slugs_and_names_are_refused(cli: Cli) -> None:
    fails(cli("lists", "create", "All Practitioners", "--name", "X"), "not a valid list slug")
    fails(cli("lists", "create", "school_dsls", "--name", "X"), "not a valid list slug")
    fails(cli("lists", "create", "all", "--name", "  "), "needs a name")
    make_list(cli, "all")
    fails(cli("lists", "rename", "all", "--name", ""), "the new name is empty")


def test_a_list_that_does_not_exist(cli: Cli) -> None:
    make_list(cli, "all")
    for command in (("lists", "show", "nope"), ("lists", "rename", "nope", "--name", "X")):
        fails(cli(*command), "no list 'nope'", "mailer lists create nope")


def test_every_lists_command_has_an_example(cli: Cli) -> None:
    for command in ("create", "list", "show", "rename"):
        out = ok(cli("lists", command, "--help")).stdout
        assert "Example:\n    mailer lists " + command in out
