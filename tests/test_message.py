"""Message bytes ready for the wire: dot-stuffed once per issue, CRLF throughout, and the
header fast path giving exactly what the general one gives."""

from __future__ import annotations

import random
import string

import pytest

from mailer import urls
from mailer.config import Settings
from mailer.sending import headers, message
from mailer.sending.message import Content, MessageTemplate, Recipient, stuff, unstuff

U = urls.UNSUBSCRIBE_PLACEHOLDER
P = urls.PREFERENCES_PLACEHOLDER


@pytest.mark.parametrize(
    ("data", "start", "stuffed"),
    [
        (b".hidden\r\n", True, b"..hidden\r\n"),
        (b".hidden\r\n", False, b".hidden\r\n"),  # the middle of a line: left alone
        (b"a\r\n.\r\nb\r\n", True, b"a\r\n..\r\nb\r\n"),
        (b"a\r\n..x\r\n", True, b"a\r\n...x\r\n"),
        (b"no dots here\r\n", True, b"no dots here\r\n"),
    ],
)
def test_stuffing_doubles_every_dot_that_starts_a_line(
    data: bytes, start: bool, stuffed: bytes
) -> None:
    assert stuff(data, start) == stuffed
    if start:
        assert unstuff(stuffed) == data


def wire_lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")


def test_a_dot_right_after_a_splice_point_is_stuffed(settings: Settings) -> None:
    # Each static segment starts where a personal link was spliced in, so a line that
    # starts with a dot there starts a segment: stuffing the segment on its own would miss
    # it, and a lone "." there would end the message.
    text = f"Hello\n{U}\n.starts with a dot\n.\n{P}\n..two\n"
    html = f'<a href="{U}">.x</a>\n.<p>line</p>\n<a href="{P}">m</a>'
    template = MessageTemplate(
        settings, Content("2025-11", "Subject", html, text), list_id="x.example.org", send_id=4
    )
    recipient = Recipient("jo@example.org", "Jo Bloggs", 7, 12)
    message_id, plain = template.render(recipient)
    same_id, wire = template.render(recipient, wire=True)
    assert same_id == message_id
    assert unstuff(wire) == plain
    assert b"\r\n.\r\n" not in wire  # nothing ends the data early
    assert all(not line.startswith(b".") or line.startswith(b"..") for line in wire_lines(wire))
    assert b"\r\n..starts with a dot\r\n" in wire
    assert b"\r\n...two\r\n" in wire
    # CRLF throughout: no bare LF or CR reaches the wire.
    assert wire.count(b"\n") == wire.count(b"\r\n") == wire.count(b"\r")


def test_lone_carriage_returns_in_content_become_line_breaks(settings: Settings) -> None:
    template = MessageTemplate(
        settings,
        Content("2025-11", "Subject", "<p>a</p>", f"one\rtwo\r\n{U}\n"),
        list_id="x.example.org",
    )
    _, data = template.render(Recipient("jo@example.org"), wire=True)
    assert data.count(b"\r") == data.count(b"\r\n")
    assert b"one\r\ntwo\r\n" in data


def test_the_address_header_fast_path_gives_what_the_general_path_gives() -> None:
    def general(name: str, display: str, email: str) -> bytes:
        atoms = headers._atoms(headers.strip_controls(display), phrase=True) if display else []
        return headers.fold(name, [*atoms, f"<{email}>" if atoms else email])

    rng = random.Random(5)
    names = string.ascii_letters + string.digits + "'- .\"(),é"
    locals_ = string.ascii_lowercase + ".+_-'=?#"
    fast = 0
    for _ in range(5000):
        display = "".join(rng.choice(names) for _ in range(rng.randint(0, 70)))
        local = "".join(rng.choice(locals_) for _ in range(rng.randint(1, 30))).strip(".") or "x"
        email = f"{local}@{rng.choice(['example.org', 'a-b.example.co.uk'])}"
        fast += bool(headers._PLAIN_NAME.fullmatch(display))
        assert headers.address("To", display, email) == general("To", display, email)
    assert fast > 500  # the fast path was exercised, not only the general one


def test_the_link_fast_path_encodes_as_quoted_printable_would() -> None:
    rng = random.Random(3)
    chars = string.ascii_letters + string.digits + "-_./:?&=% \"'~<>é"
    plain = 0
    for _ in range(5000):
        tail = "".join(rng.choice(chars) for _ in range(rng.randint(0, 70)))
        url = f"https://news.example.org/{tail}"
        assert message._link_line(url) == message._qp_open(f"\n{url}\n")
        assert message._link_attribute(url) == message._qp_open(f'"{url}"')
        plain += bool(message._PLAIN_QP.fullmatch(url))
    assert plain > 500
