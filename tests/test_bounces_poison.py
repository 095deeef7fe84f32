"""Poison messages: nothing that arrives stops the bounce mailbox or the pipe.

Each message below once crashed or stalled the reader. Through Postfix's pipe it must be
kept under .mailer/bounces/quarantine/ (0600 in a 0700 folder) with exit 0, so Postfix
does not return it; through a real Dovecot mailbox it must be moved to the quarantine
folder. Either way the genuine bounce queued behind it is processed, and no traceback is
ever printed.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bounce_helpers import copies, events, render, setup_sent, subscriber_status
from dovecot_server import PASSWORD, Dovecot
from send_helpers import addresses, sql
from test_bounces_imap import imap_recipe

PEOPLE = addresses(20)
HEAD = b"From: MAILER-DAEMON@mx.example.net\r\nTo: bounces@bounces.example.org\r\n"


def nested_multiparts(n: int) -> bytes:
    body = b"".join(
        b'--b%d\r\nContent-Type: multipart/mixed; boundary="b%d"\r\n\r\n' % (i, i + 1)
        for i in range(n)
    )
    return (
        HEAD + b"Subject: nested\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n' + body
    )


def many_parts(n: int) -> bytes:
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(n))
    return (
        HEAD + b'Subject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="p"'
        b"\r\n\r\n" + parts + b"--p--\r\n"
    )


def nested_messages(n: int) -> bytes:
    return HEAD + b"Subject: rfc822\r\nContent-Type: message/rfc822\r\n\r\n" * n + b"\r\nend\r\n"


def huge_header() -> bytes:
    return HEAD + b"Subject: " + b"a" * 2_000_000 + b"\r\n\r\nbody\r\n"


def too_large() -> bytes:
    return HEAD + b"Subject: large\r\n\r\n" + (b"x" * 998 + b"\r\n") * 11_000


def bad_encodings() -> bytes:
    """A DSN whose parts claim encodings and charsets they do not have."""
    truncated = base64.b64encode(b"Final-Recipient: rfc822; x@example.net\n" * 20)[:-7]
    return (
        HEAD + b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="e"\r\n\r\n'
        b"--e\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=\xff\xfe bad =\r\n"
        b'--e\r\nContent-Type: message/delivery-status; charset="utf-\xff8"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + truncated + b"\r\n"
        b"--e\r\nContent-Type: text/html; charset=\xc3(\r\nContent-Transfer-Encoding: x-uuencode"
        b"\r\n\r\nbegin 644 x\r\n\x00\x01\x02\r\n"
        b"--e\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"!!!not base64!!!\r\n--e--\r\n"
    )


def junk_headers() -> bytes:
    return (
        b"From: =?utf-8?b?////?= <\xff\xfe@>\r\nTo: <<<>>>@@@\r\nSubject: =?x-bad?q?=ZZ?=\r\n"
        b"Message-ID: \x00\x01\r\nContent-Type: multipart/report; boundary=\r\n"
        b"Return-Path: <>\r\n\r\n\x00\x00--\r\n--\r\n"
    )


# (name, message, whether it must be quarantined)
POISON = [
    ("1,000 nested multipart/mixed", nested_multiparts(1000), True),
    ("5,000 parts", many_parts(5000), True),
    ("3,000 nested message/rfc822", nested_messages(3000), True),
    ("a 2 MB header", huge_header(), True),
    ("11 MB, over max_message_kb", too_large(), True),
    ("bad encodings and charsets", bad_encodings(), False),
    ("junk headers", junk_headers(), False),
]
QUARANTINED = [p for p in POISON if p[2]]


@pytest.fixture
def sent(cli: Any, newsletter: Path) -> Path:
    setup_sent(cli, newsletter, PEOPLE)
    return newsletter


def pipe(root: Path, raw: bytes) -> subprocess.CompletedProcess[bytes]:
    """`mailer bounces process -` as Postfix's pipe runs it: a process, the message on stdin."""
    return subprocess.run(
        [sys.executable, "-m", "mailer", "bounces", "process", "-"],
        cwd=root,
        input=raw,
        capture_output=True,
        timeout=300,
    )


@pytest.mark.parametrize(("name", "raw", "quarantine"), POISON, ids=[p[0] for p in POISON])
def test_poison_through_the_pipe_is_kept_and_the_next_bounce_is_read(
    sent: Path, name: str, raw: bytes, quarantine: bool
) -> None:
    done = pipe(sent, raw)
    assert done.returncode == 0, done.stderr
    assert b"Traceback" not in done.stdout + done.stderr
    if quarantine:
        assert done.stdout.startswith(b"Quarantined ("), done.stdout
        kept = list((sent / ".mailer/bounces/quarantine").glob("*.eml"))
        assert len(kept) == 1
        assert kept[0].read_bytes() == raw
        assert kept[0].stat().st_mode & 0o777 == 0o600
        assert (sent / ".mailer/bounces/quarantine").stat().st_mode & 0o777 == 0o700
        listed = subprocess.run(
            [sys.executable, "-m", "mailer", "bounces", "list", "--quarantined"],
            cwd=sent,
            capture_output=True,
            timeout=300,
        )
        assert b"quarantined  not read" in listed.stdout, listed.stdout
    # The genuine bounce behind it.
    genuine = render("gmail-5.1.1.eml", copies(sent)[PEOPLE[2]], sent)
    done = pipe(sent, genuine)
    assert done.returncode == 0, done.stderr
    assert subscriber_status(sent, PEOPLE[2]) == "bounced"
    assert sql(sent, "SELECT COUNT(*) FROM subscriber WHERE status != 'active'") == [(1,)]


def test_poison_twice_is_kept_once(sent: Path) -> None:
    raw = nested_multiparts(1000)
    assert pipe(sent, raw).returncode == 0
    again = pipe(sent, raw)
    assert again.returncode == 0
    assert len(list((sent / ".mailer/bounces/quarantine").glob("*.eml"))) == 1
    assert sql(sent, "SELECT COUNT(*) FROM bounce_event WHERE kind = 'quarantined'") == [(1,)]


@pytest.fixture
def server() -> Iterator[Dovecot]:
    with Dovecot() as running:
        yield running


def test_poison_in_the_mailbox_is_moved_to_quarantine_and_the_rest_is_read(
    cli: Any, newsletter: Path, server: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup_sent(cli, newsletter, PEOPLE, extra=imap_recipe(server))
    monkeypatch.setenv("MAILER_BOUNCES_IMAP_PASSWORD", PASSWORD)
    by_email = copies(newsletter)
    for i, (_name, raw, _q) in enumerate(POISON):
        server.append(raw)
        server.append(render("ses-5.1.1.eml", by_email[PEOPLE[i]], newsletter))
    r = cli("worker", "--once")
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    assert server.messages("INBOX") == []
    assert len(server.messages("quarantine")) == len(QUARANTINED)
    assert all(subscriber_status(newsletter, PEOPLE[i]) == "bounced" for i in range(len(POISON)))
    assert [e[0] for e in events(newsletter)].count("quarantined") == len(QUARANTINED)
    listed = cli("bounces", "list", "--quarantined")
    assert listed.stdout.count("quarantined") >= len(QUARANTINED)
    assert "nested deeper than 16 parts" in listed.stdout
    assert "more than 500 parts" in listed.stdout
