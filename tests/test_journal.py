"""The sending journal: what a killed sender's journal vouches for, and what a journal a
dead machine left behind (missing, cut short, from another boot) does not.

A real `mailer send` process against aiosmtpd, which holds messages at DATA after the
30th so the sender is killed with messages in hand; the resume is `mailer send --resume`
in this process (the reaper on the same machine). Kill points at random and several
workers are in test_send_resume.py and test_fleet.py.
"""

from __future__ import annotations

import signal
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mailer.sending.journal import ON_THE_WIRE, parse
from mailer.store.recovery import BEGUN, JournalEntry
from send_helpers import addresses, ledger, mailer_process, make_list, smtp_env, sql
from smtp_server import Handler, SMTPServer

BOOT = "0b7c1e52-1f4a-4d39-9a57-1d4f0e0f7a11"
HEADER = b"mailer-journal 1 " + BOOT.encode() + b" 7 host:12:34/1\n"


def test_a_journal_says_the_last_thing_recorded_of_each_row() -> None:
    body = b"S1\nS2\nO1 sent <a@b>\nS3\nP3\nS4\nO4 failed-permanent \nS5"
    assert parse(HEADER + body, 7, "host:12:34/1", BOOT) == {
        1: JournalEntry("sent", "<a@b>"),
        2: JournalEntry(BEGUN),
        3: JournalEntry("pending"),
        4: JournalEntry("failed-permanent"),
        # Row 5's record was cut short: the process died in the write, before its bytes.
    }


@pytest.mark.parametrize(
    ("data", "boot", "send", "worker"),
    [
        (HEADER + b"S1\n", "another-boot", 7, "host:12:34/1"),  # the machine restarted
        (HEADER + b"S1\n", BOOT, 8, "host:12:34/1"),  # another send's journal
        (HEADER + b"S1\n", BOOT, 7, "host:12:34/2"),  # another run's
        (HEADER[:20], BOOT, 7, "host:12:34/1"),  # the first line lost
        (b"", BOOT, 7, "host:12:34/1"),
        (HEADER + b"S1\nX2\n", BOOT, 7, "host:12:34/1"),  # not what this version writes
        (HEADER + b"S1\n", None, 7, "host:12:34/1"),  # a machine whose boot is unknown
    ],
)
def test_a_journal_that_cannot_vouch_for_every_row_vouches_for_none(
    data: bytes, boot: str | None, send: int, worker: str
) -> None:
    assert parse(data, send, worker, boot) is None


@pytest.fixture
def killed(cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A send of 90 on 3 connections, killed with a message held at DATA on each."""
    make_list(cli, newsletter, "practitioners", addresses(90))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    with SMTPServer(Handler(hold_after=30)) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_CONNECTIONS="3")
        process = mailer_process(newsletter, "send", "2025-11", "--list", "practitioners", "--yes")
        server.handler.wait_until(lambda h: len(h.received) == 30 and h.held >= 3)
        (journal,) = (newsletter / ".mailer" / "journals").iterdir()
        text = journal.read_bytes()
        process.send_signal(signal.SIGKILL)
        process.communicate()
        server.handler.release(accept=False)  # the sender is gone: nothing held is delivered
        server.handler.hold_after = None
        yield server, journal, text


def test_the_journal_is_private_and_names_rows_not_people(newsletter: Path, killed: Any) -> None:
    _, journal, text = killed
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal.parent.stat().st_mode) == 0o700
    assert not [a for a in addresses(90) if a.encode() in text]  # ids, outcomes, Message-IDs
    ids = {str(i) for (i,) in sql(newsletter, "SELECT id FROM delivery")}
    begun = [line[1:] for line in text.decode().splitlines()[1:] if line.startswith("S")]
    assert begun and set(begun) <= ids


def test_a_killed_sender_leaves_unknown_only_what_it_had_begun(
    cli: Any, newsletter: Path, killed: Any
) -> None:
    server, journal, _ = killed
    in_flight = {e for e, s in ledger(newsletter).items() if s == "in-flight"}
    r = cli("send", "2025-11", "--resume")
    assert r.exit_code == 0, r.output
    unknown = {e for e, s in ledger(newsletter).items() if s == "unknown"}
    assert unknown < in_flight
    assert len(unknown) <= 3 * ON_THE_WIRE
    got = Counter(server.handler.recipients())
    assert set(got) == set(addresses(90)) - unknown
    assert max(got.values()) == 1
    assert not journal.exists()  # consumed by the resume


@pytest.mark.parametrize("left", ["missing", "from another boot", "cut in its first line"])
def test_what_a_dead_machine_leaves_of_a_journal_makes_every_claimed_row_unknown(
    cli: Any, newsletter: Path, killed: Any, left: str
) -> None:
    # A machine that dies may lose the journal's last writes, or all of them; after the
    # restart its boot is another. Each is what the reaper may find: it resends nothing.
    server, journal, text = killed
    if left == "missing":
        journal.unlink()
    elif left == "from another boot":
        header, _, body = text.partition(b"\n")
        words = header.split(b" ")
        words[2] = b"00000000-0000-0000-0000-000000000000"
        journal.write_bytes(b" ".join(words) + b"\n" + body)
    else:
        journal.write_bytes(text[:10])
    in_flight = {e for e, s in ledger(newsletter).items() if s == "in-flight"}
    r = cli("send", "2025-11", "--resume")
    assert r.exit_code == 0, r.output
    assert {e for e, s in ledger(newsletter).items() if s == "unknown"} == in_flight
    got = Counter(server.handler.recipients())
    # Some of them were delivered before the kill: that is why none is sent again.
    assert set(got) | in_flight == set(addresses(90))
    assert max(got.values()) == 1
