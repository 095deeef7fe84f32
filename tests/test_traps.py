"""No traps between building and sending: the confirmation says everything that matters, a
send through the outbox is a rehearsal, an issue everyone has is not sent again, and an
issue that is not built, built before its last change, or still the template is refused."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import draft_dir
from mailer.render import compile as render
from send_helpers import addresses, make_list, smtp_env, sql
from smtp_server import SMTPServer

ISSUE = "issues/2025-11/issue.yaml"


@pytest.fixture
def approved(cli: Any, newsletter: Path) -> Path:
    make_list(cli, newsletter, "practitioners", addresses(3))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    return newsletter


def test_the_confirmation_names_list_people_transport_sender_and_subject(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = cli("send", "2025-11", "--list", "practitioners", input="n\n")
    assert r.exit_code == 1
    assert r.stdout.startswith(
        "2025-11, approved by Sam Patel:\n"
        "  Subject:    CSCP Newsletter – November 2025\n"
        "  From:       Cumberland Safeguarding Children Partnership <newsletter@example.org>\n"
        "  To:         practitioners: 3 people\n"
        "  Transport:  the outbox, a rehearsal: nobody will be emailed; messages are written "
        "to outbox/2025-11/"
    )
    assert "Send to 3 people now (a rehearsal through the outbox)? [y/N]" in r.stdout
    monkeypatch.setenv("MAILER_TRANSPORT", "smtp")
    monkeypatch.setenv("MAILER_SMTP_HOST", "mail.example.org")
    r = cli("send", "2025-11", "--list", "practitioners", "--dry-run")
    assert "  Transport:  SMTP through mail.example.org:25 (none)\n" in r.stdout
    assert sql(approved, "SELECT COUNT(*) FROM send") == [(0,)]


def test_an_outbox_send_is_a_rehearsal_that_a_real_send_does_not_count(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = cli("send", "2025-11", "--list", "practitioners", "--yes")
    assert r.exit_code == 0, r.output
    assert "This was a rehearsal: nobody was emailed" in r.stdout
    with SMTPServer() as server:
        smtp_env(monkeypatch, server.port)
        r = cli("send", "2025-11", "--list", "practitioners", "--yes")
        assert r.exit_code == 0, r.output
        assert Counter(server.handler.recipients()) == Counter(addresses(3))
        status = cli("status", "2025-11").stdout
        # The newest send first; only the rehearsal says so.
        real, rehearsal = status.split("\n\n")[:2]  # then the web side's mail
        assert "rehearsal" not in real and "3 of" not in real
        assert "  rehearsal   through the outbox: nobody was emailed" in rehearsal

        # Now everyone has it: a third send is refused before it exists.
        r = cli("send", "2025-11", "--list", "practitioners", "--yes")
        assert r.exit_code == 1
        assert r.stderr == (
            "Error: everyone on practitioners who can be mailed already has 2025-11: nothing "
            "to send (see mailer status 2025-11)\n"
        )
        assert sql(approved, "SELECT COUNT(*) FROM send") == [(2,)]
        assert len(server.received) == 3


def test_a_rehearsal_cannot_go_on_as_a_real_send(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("send", "2025-11", "--list", "practitioners", "--yes").exit_code == 0
    # As if the rehearsal had been paused half way.
    sql(approved, "UPDATE send SET status = 'paused', pause_reason = 'operator'")
    monkeypatch.setenv("MAILER_TRANSPORT", "smtp")
    r = cli("send", "2025-11", "--resume")
    assert r.exit_code == 1
    assert "was started through the outbox transport and cannot go on through smtp" in r.stderr


def test_nobody_to_mail_is_said_before_a_send_exists(cli: Any, approved: Path) -> None:
    assert cli("lists", "create", "empty", "--name", "Empty").exit_code == 0
    r = cli("send", "2025-11", "--list", "empty", "--yes")
    assert r.exit_code == 1
    assert "nobody on empty can be mailed" in r.stderr
    assert sql(approved, "SELECT COUNT(*) FROM send") == [(0,)]


def test_an_issue_that_is_not_built_is_refused_by_approve_and_send(
    cli: Any, newsletter: Path
) -> None:
    make_list(cli, newsletter, "practitioners", addresses(2))
    shutil.rmtree(draft_dir(newsletter, "2025-11"))
    r = cli("approve", "2025-11", "--by", "Sam Patel")
    assert r.exit_code == 1
    assert r.stderr == (
        "Error: 2025-11 has not been built, so its web version and images are not "
        "published: run mailer build 2025-11\n"
    )
    assert cli("build", "2025-11").exit_code == 0
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    shutil.rmtree(draft_dir(newsletter, "2025-11"))
    r = cli("send", "2025-11", "--list", "practitioners", "--yes")
    assert r.exit_code == 1 and "has not been built" in r.stderr
    assert sql(newsletter, "SELECT COUNT(*) FROM send") == [(0,)]


def test_a_build_older_than_its_content_is_refused(cli: Any, approved: Path) -> None:
    # A template change alters the email without touching issue.yaml.
    template = approved / "templates/sections/news.mjml.j2"
    template.parent.mkdir(parents=True)
    shipped = Path(render.__file__).parent / "templates/sections/news.mjml.j2"
    text = shipped.read_text(encoding="utf-8")
    template.write_text(text.replace("{% endcall %}", "<p>New footer</p>{% endcall %}"))
    r = cli("approve", "2025-11", "--by", "Sam Patel")
    assert r.exit_code == 1
    assert (
        ".mailer/preview/2025-11 is older than the issue (it changed since mailer build): "
        "run mailer build 2025-11"
    ) in r.stderr

    # An image replaced after the build is noticed too.
    assert cli("build", "2021-12").exit_code == 0
    image = approved / "issues/2021-12/images/ofsted.png"
    image.write_bytes(image.read_bytes() + b"\0")
    r = cli("approve", "2021-12", "--by", "Sam Patel")
    assert r.exit_code == 1
    assert "the image ofsted.png changed since mailer build" in r.stderr


def test_the_untouched_template_is_refused_whatever_the_checks_say(
    cli: Any, newsletter: Path
) -> None:
    assert cli("new", "2026-01", "--date", "2026-01-06").exit_code == 0
    assert cli("build", "2026-01").exit_code == 0
    # tests/data's mailer.toml turns the checks off; --skip-checks cannot skip this either.
    r = cli("approve", "2026-01", "--by", "Sam Patel", "--skip-checks", "in a hurry")
    assert r.exit_code == 1
    assert r.stderr == (
        "Error: issues/2026-01/issue.yaml still has the mailer new template's sample text "
        "(preheader, the first section's title, the first section's body): write the "
        "issue, then run: mailer build 2026-01\n"
    )
    # Nothing was recorded.
    assert sql(newsletter, "SELECT count(*) FROM approval") == [(0,)]
