"""`mailer bounces fetch` against a real IMAP server (Dovecot), with the recipe of the docs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bounce_helpers import (
    CASES,
    FORGED,
    JUNK,
    copies,
    events,
    render,
    setup_sent,
    subscriber_status,
)
from conftest import REPO
from dovecot_server import PASSWORD, USER, Dovecot
from mailer import config
from mailer.bounces import imap
from mailer.scheduling.worker import Worker
from mailer.store.database import open_db
from send_helpers import Lines, addresses, mailer_process, sql

PEOPLE = addresses(20)


@pytest.fixture
def server() -> Iterator[Dovecot]:
    with Dovecot() as running:
        yield running


def imap_recipe(server: Dovecot) -> str:
    """The IMAP block of docs/bounces.md, pointed at the test server, without [bounces]."""
    text = (REPO / "docs" / "bounces.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```toml\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    (block,) = [b for b in blocks if "imap_host" in b]
    block = block.replace("[bounces]\n", "").replace('domain = "bounces.example.org"\n', "")
    block = re.sub(r'imap_host = ".*"', 'imap_host = "127.0.0.1"', block)
    block = re.sub(r"imap_port = \d+", f"imap_port = {server.port}", block)
    block = re.sub(r'imap_username = ".*"', f'imap_username = "{USER}"', block)
    return block + f'imap_ca_file = "{server.ca_file}"\n'


@pytest.fixture
def sent(cli: Any, newsletter: Path, server: Dovecot, monkeypatch: pytest.MonkeyPatch) -> Path:
    setup_sent(cli, newsletter, PEOPLE, extra=imap_recipe(server))
    monkeypatch.setenv("MAILER_BOUNCES_IMAP_PASSWORD", PASSWORD)
    return newsletter


def deliver_corpus(server: Dovecot, root: Path) -> None:
    by_email = copies(root)
    for name, who, *_ in CASES:
        server.append(render(name, by_email[PEOPLE[who]], root))
    for name in JUNK + FORGED:
        server.append(render(name, by_email[PEOPLE[19]], root))


def test_fetch_acts_on_every_message_and_files_it(cli: Any, sent: Path, server: Dovecot) -> None:
    deliver_corpus(server, sent)
    r = cli("bounces", "fetch")
    assert r.exit_code == 0, r.output
    total = len(CASES) + len(JUNK) + len(FORGED)
    assert f"Read {total} messages: {total} new, 0 processed before." in r.stdout
    assert "2 message(s) could not be understood: see the unrecognised folder." in r.stdout
    assert "2 report(s) named no copy mailer signed and changed nobody" in r.stdout
    recorded = events(sent)
    assert len(recorded) == total
    for name, who, kind, code, status, _member, named in CASES:
        assert subscriber_status(sent, PEOPLE[who]) == status, name
        if named:
            assert (kind, PEOPLE[who], code) in [e[:3] for e in recorded], name
    # Five genuine ones, and the forged VERP one, which changed nobody.
    assert [e[0] for e in recorded].count("hard") == 6
    assert sql(sent, "SELECT COUNT(*) FROM bounce_event WHERE kind = 'hard' AND verified") == [(5,)]
    assert [e[0] for e in recorded].count("auto-reply") == 3
    assert [e[0] for e in recorded].count("unrecognised") == len(JUNK)
    assert server.messages("INBOX") == []
    assert len(server.messages("processed")) == len(CASES) + len(FORGED)
    assert len(server.messages("unrecognised")) == len(JUNK)
    # Source names the mailbox, not a person.
    assert sql(sent, "SELECT DISTINCT source FROM bounce_event") == [("imap 127.0.0.1 INBOX",)]
    again = cli("bounces", "fetch")
    assert again.stdout == "No messages in INBOX.\n"


def test_a_message_seen_before_is_only_moved(cli: Any, sent: Path, server: Dovecot) -> None:
    raw = render("gmail-5.1.1.eml", copies(sent)[PEOPLE[2]], sent)
    server.append(raw)
    assert cli("bounces", "fetch").exit_code == 0
    server.append(raw)  # the same message again, e.g. copied back by someone
    r = cli("bounces", "fetch")
    assert "Read 1 message: 0 new, 1 processed before." in r.stdout
    assert len(events(sent)) == 1
    assert len(server.messages("processed")) == 2


def test_stopping_between_the_commit_and_the_move_loses_and_repeats_nothing(
    sent: Path, server: Dovecot
) -> None:
    by_email = copies(sent)
    for who in range(6):
        server.append(render("exchange-5.1.1.eml", by_email[PEOPLE[who]], sent))
    settings = config.load(sent)
    seen: list[str] = []

    def die_after_third(result: Any) -> None:
        seen.append(result.key)
        if len(seen) == 3:
            raise KeyboardInterrupt  # as if killed right after the third commit

    with open_db(settings) as db, pytest.raises(KeyboardInterrupt):
        imap.fetch(settings, db, on_committed=die_after_third)
    assert len(events(sent)) == 3
    assert len(server.messages("INBOX")) == 4  # the third was saved but not moved
    assert len(server.messages("processed")) == 2
    with open_db(settings) as db:
        summary = imap.fetch(settings, db)
    assert (summary.read, summary.new) == (4, 3)
    assert len(events(sent)) == 6
    assert server.messages("INBOX") == []
    assert len(server.messages("processed")) == 6
    assert all(subscriber_status(sent, PEOPLE[who]) == "bounced" for who in range(6))


def test_killing_fetch_mid_run_loses_nothing_and_counts_nothing_twice(
    cli: Any, newsletter: Path, server: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    many = addresses(60, "kill")
    setup_sent(cli, newsletter, many, extra=imap_recipe(server))
    monkeypatch.setenv("MAILER_BOUNCES_IMAP_PASSWORD", PASSWORD)
    by_email = copies(newsletter)
    for email in many:
        server.append(render("postfix-4.4.1-failed.eml", by_email[email], newsletter))
    process = mailer_process(newsletter, "bounces", "fetch")
    assert process.stdout is not None and process.stderr is not None
    out = Lines(process.stdout)
    try:
        # The first message's result is saved: kill it while it files that one.
        out.wait_for("soft: subscriber")
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=120)
        out.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    saved = sql(newsletter, "SELECT COUNT(*) FROM bounce_event")[0][0]
    assert 1 <= saved < len(many)
    # Every message is still in the folder or filed, and every saved one was saved once.
    assert message_ids(server, "INBOX") | message_ids(server, "processed") == all_ids(newsletter)
    assert saved == len({k for (k,) in sql(newsletter, "SELECT key FROM bounce_event")})
    r = cli("bounces", "fetch")
    assert r.exit_code == 0, r.output
    assert sql(newsletter, "SELECT COUNT(*), COUNT(DISTINCT subscriber_id) FROM bounce_event") == [
        (len(many), len(many))
    ]
    actions = {a for (a,) in sql(newsletter, "SELECT action FROM bounce_event")}
    assert actions == {"counted: 1 of 3 sends in a row failed"}
    assert server.messages("INBOX") == []
    # The message being filed when the process died may be filed twice; none is missing.
    assert message_ids(server, "processed") == all_ids(newsletter)
    assert len(many) <= len(server.messages("processed")) <= len(many) + 1


def message_ids(server: Dovecot, folder: str) -> set[str]:
    return {
        m.group(1).decode()
        for raw in server.messages(folder)
        if (m := re.search(rb"(?m)^Message-I[dD]: (<[^>]+>)", raw))
    }


def all_ids(root: Path) -> set[str]:
    """The Message-IDs of the 60 DSNs the test delivered (see bounce_helpers.render)."""
    return {
        f"<c{c.delivery_id}.20251105092001.4Nq2bX1yZ3z9sRr@relay.example.org>"
        for c in copies(root).values()
    }


def test_the_worker_reads_the_mailbox(cli: Any, sent: Path, server: Dovecot) -> None:
    server.append(render("ses-5.1.1.eml", copies(sent)[PEOPLE[3]], sent))
    worker = Worker(config.load(sent))
    try:
        summary = worker.fetch_bounces()
    finally:
        worker.database.close()
    assert summary is not None and summary.new == 1
    assert subscriber_status(sent, PEOPLE[3]) == "bounced"
    server.append(render("ses-5.1.1.eml", copies(sent)[PEOPLE[4]], sent))
    r = cli("worker", "--once")
    assert r.exit_code == 0, r.output
    assert subscriber_status(sent, PEOPLE[4]) == "bounced"
    assert server.messages("INBOX") == []


def test_a_wrong_password_is_one_line_without_the_password(
    cli: Any, sent: Path, server: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILER_BOUNCES_IMAP_PASSWORD", "not-the-password")
    r = cli("bounces", "fetch")
    assert r.exit_code == 1
    assert r.stderr == (
        f"Error: the bounce mailbox at 127.0.0.1:{server.port} refused the login of {USER}: "
        "check imap_username and MAILER_BOUNCES_IMAP_PASSWORD\n"
    )
    assert "not-the-password" not in r.output


def test_an_untrusted_certificate_is_refused(cli: Any, sent: Path, server: Dovecot) -> None:
    toml = sent / "mailer.toml"
    toml.write_text(re.sub(r"imap_ca_file = .*\n", "", toml.read_text(encoding="utf-8")))
    r = cli("bounces", "fetch")
    assert r.exit_code == 1
    assert "its certificate is not trusted" in r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_no_mailbox_and_no_password_are_explained(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch, server: Dovecot
) -> None:
    r = cli("bounces", "fetch")
    assert r.exit_code == 1
    assert "no bounce mailbox is configured" in r.stderr
    setup_sent(cli, newsletter, PEOPLE[:2], extra=imap_recipe(server))
    r = cli("bounces", "fetch")
    assert r.stderr == (
        "Error: MAILER_BOUNCES_IMAP_PASSWORD is not set: export the mailbox password\n"
    )


def test_one_worker_reads_the_mailbox_and_a_standby_takes_over_when_it_is_killed(
    cli: Any, newsletter: Path, server: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every worker looks at the mailbox every 1.2 seconds; only the lease holder reads it.
    setup_sent(cli, newsletter, PEOPLE, extra=imap_recipe(server) + "fetch_every = 0.02\n")
    monkeypatch.setenv("MAILER_BOUNCES_IMAP_PASSWORD", PASSWORD)
    monkeypatch.setenv("MAILER_WORKER_LEASE", "3")
    by_email = copies(newsletter)
    workers: list[tuple[subprocess.Popen[bytes], Lines]] = []

    def start() -> tuple[subprocess.Popen[bytes], Lines]:
        process = mailer_process(newsletter, "worker", "--poll", "0.5", stdout=subprocess.DEVNULL)
        assert process.stderr is not None
        workers.append((process, Lines(process.stderr)))
        return workers[-1]

    try:
        first, first_lines = start()
        first_lines.wait_for("is now the reader of the bounce mailbox")
        second, second_lines = start()
        second_lines.wait_for("worker started")
        server.append(render("ses-5.1.1.eml", by_email[PEOPLE[1]], newsletter))
        first_lines.wait_for("bounce mailbox: 1 read, 1 new")
        # While a worker reads the mailbox, so does nobody else, by hand or not.
        r = cli("bounces", "fetch")
        assert r.exit_code == 1
        assert r.stderr == (
            f"Error: {first_lines.wait_for('is now the reader').split()[2]} is the reader of "
            "the bounce mailbox right now: a running worker reads it every 0.02 minutes\n"
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=120)
        server.append(render("ses-5.1.1.eml", by_email[PEOPLE[2]], newsletter))
        second_lines.wait_for("is now the reader of the bounce mailbox")
        second_lines.wait_for("bounce mailbox: 1 read, 1 new")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=120) == 0
    finally:
        for process, lines in workers:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=120)
            lines.close()
    assert "bounce mailbox" not in second_lines.text().split("is now the reader")[0]
    assert [subscriber_status(newsletter, PEOPLE[who]) for who in (1, 2)] == ["bounced"] * 2
    assert len(events(newsletter)) == 2
    assert server.messages("INBOX") == []
    # The survivor let go when it stopped: a person may read the mailbox by hand again.
    assert cli("bounces", "fetch").exit_code == 0
