"""Files that may name a person are 0600 in 0700 folders whatever the umask, and erasure
leaves the address in none of them.

Every test here runs under umask 000, the most open a service could be started with: a
helper that relied on the umask would leave files anyone on the machine could read.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session

from mailer import config, files
from mailer.scheduling.worker import setup_logging
from mailer.store.database import open_db
from mailer.store.models import Subscriber
from subscriber_helpers import Cli, ok
from web_helpers import ISSUE, PEOPLE, delivering_client, newsletter_with_a_send, unsubscribe_link


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    before = os.umask(0)
    try:
        yield
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_helpers_make_0600_files_in_0700_folders_under_any_umask(tmp_path: Path) -> None:
    folder = files.private_folder(tmp_path / "a" / "b")
    assert [mode(tmp_path / "a"), mode(folder)] == [0o700, 0o700]
    assert files.create_private(folder / "empty")
    assert not files.create_private(folder / "empty")  # there already: left alone
    written = files.write_private(folder / "c" / "report.html", "<p>x</p>")
    assert [mode(folder / "empty"), mode(written), mode(written.parent)] == [0o600] * 2 + [0o700]
    assert written.read_text(encoding="utf-8") == "<p>x</p>"
    assert sorted(p.name for p in written.parent.iterdir()) == ["report.html"]
    # A folder that exists already with an open mode is closed when asked for.
    open_folder = tmp_path / "state"
    open_folder.mkdir(mode=0o777)
    files.private_folder(open_folder / "bounces" / "quarantine", within=open_folder)
    assert mode(open_folder) == mode(open_folder / "bounces") == 0o700


UNRECOGNISED = (
    "From: someone@elsewhere.example\r\nTo: newsletter@example.org\r\n"
    "Subject: a question\r\nMessage-ID: <q1@elsewhere.example>\r\n\r\n"
    "Please write to {who} about the training instead.\r\n"
)


def _every_kind_of_file(cli: Cli, newsletter: Path) -> None:
    """The database, the log, an issue's outbox, web mail, a kept bounce and a report
    that names people, each made the way mailer makes it."""
    newsletter_with_a_send(cli, newsletter)
    settings = config.load(newsletter)
    setup_logging(settings, stderr=False)
    with delivering_client(settings, [time.time()]) as client:
        link = unsubscribe_link(newsletter, PEOPLE[0])
        answer = client.post(
            link.removeprefix(settings.base_url), data={"List-Unsubscribe": "One-Click"}
        )
        assert answer.status_code == 200
        client.post("/manage", data={"email": PEOPLE[0]})
        client.post(
            "/subscribe",
            data={"email": PEOPLE[0], "lists": "schools", "consent": "yes"},
        )
    ok(cli("report", ISSUE, "--people", "--csv"))
    ok(cli("subscribers", "export", "-o", "people.csv"))
    ok(
        cli(
            "bounces",
            "process",
            "-",
            input=UNRECOGNISED.format(who=PEOPLE[0].upper()),
        )
    )


def add_person(session: Session, email: str) -> None:
    session.add(Subscriber(email=email))


def test_every_file_that_may_name_a_person_is_private(cli: Cli, newsletter: Path) -> None:
    _every_kind_of_file(cli, newsletter)
    state = newsletter / ".mailer"
    folders = [
        state,
        state / "bounces",
        state / "bounces" / "unrecognised",
        state / "reports" / ISSUE,
        newsletter / "outbox",
        newsletter / "outbox" / ISSUE,
        newsletter / "outbox" / "_web",
    ]
    assert {str(f.relative_to(newsletter)): mode(f) for f in folders} == {
        str(f.relative_to(newsletter)): 0o700 for f in folders
    }
    made = [
        state / "mailer.log",
        *(state / "bounces" / "unrecognised").glob("*.eml"),
        state / "reports" / ISSUE / "report.html",
        state / "reports" / ISSUE / "report.csv",
        *(newsletter / "outbox" / ISSUE).glob("*.eml"),
        *(newsletter / "outbox" / "_web").glob("*.eml"),
        newsletter / "people.csv",
    ]
    assert len(made) > 9
    assert {str(f.relative_to(newsletter)): mode(f) for f in made} == {
        str(f.relative_to(newsletter)): 0o600 for f in made
    }


@pytest.mark.sqlite_file
def test_the_database_and_its_wal_and_shm_files_are_private(cli: Cli, newsletter: Path) -> None:
    ok(cli("lists", "create", "all", "--name", "All practitioners"))
    with open_db(config.load(newsletter)) as database:
        with database.session(write=True) as session:
            add_person(session, "amira@example.org")
        made = [newsletter / f"subscribers.sqlite{end}" for end in ("", "-wal", "-shm")]
        assert [mode(f) for f in made] == [0o600] * 3


def test_erasure_leaves_the_address_in_no_file_mailer_wrote(cli: Cli, newsletter: Path) -> None:
    _every_kind_of_file(cli, newsletter)
    person = PEOPLE[0].encode()
    state = newsletter / ".mailer"
    report = state / "reports" / ISSUE / "report.html"

    def naming() -> set[str]:
        found = set()
        for path in [*state.rglob("*"), *(newsletter / "outbox").rglob("*")]:
            if path.is_file() and person in path.read_bytes().lower():
                found.add(str(path.relative_to(newsletter)).split("/")[1])
        return found

    # Before: the web mail, the kept bounce and the reports name the person.
    assert {"_web", "bounces", "reports"} <= naming()
    ok(cli("subscribers", "erase", PEOPLE[0], "--yes"))
    assert naming() == set()
    # The report keeps its figures; the address reads [erased].
    assert "[erased]" in report.read_text(encoding="utf-8")
    assert mode(report) == 0o600
