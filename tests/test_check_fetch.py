"""`mailer check --online` fetches only the public internet, within limits of time and
bytes per URL.

Local servers stand for the far side: a FarSide network (tests/check_helpers.py) resolves a
public name to a public address and routes that address to 127.0.0.1. Everything else goes
through mailer's own vetting, which refuses the addresses themselves.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from check_helpers import PUBLIC_IP, SITE_HOST, FarSide, news, run_one, write_issue
from mailer.checks.fetch import Fetched, FetchLimits, Network, fetch, refusal

AGENT = "mailer/test"

REFUSED = {
    "127.0.0.1": "a loopback address",
    "127.8.9.10": "a loopback address",
    "10.1.2.3": "a private address",
    "172.16.0.1": "a private address",
    "192.168.1.1": "a private address",
    "169.254.169.254": "a cloud metadata address",
    "169.254.1.1": "a link-local address",
    "100.64.0.1": "a shared address",
    "100.127.255.254": "a shared address",
    "224.0.0.1": "a multicast address",
    "240.0.0.1": "a reserved address",
    "0.0.0.0": "an unspecified address",
    "192.0.2.1": "a private address",
    "::1": "a loopback address",
    "fe80::1": "a link-local address",
    "fd00:ec2::254": "a cloud metadata address",
    "fc00::1": "a private address",
    "ff02::1": "a multicast address",
    "::ffff:127.0.0.1": "a loopback address inside an IPv6 address",
    "::ffff:169.254.169.254": "a cloud metadata address inside an IPv6 address",
    "2002:7f00:1::": "a loopback address inside an IPv6 address",
    "64:ff9b::a00:1": "a private address inside an IPv6 address",
}


@pytest.mark.parametrize(("address", "why"), REFUSED.items())
def test_addresses_off_the_public_internet_are_refused(address: str, why: str) -> None:
    assert refusal(address) == why


@pytest.mark.parametrize("address", [PUBLIC_IP, "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(address) is None


class _Site(BaseHTTPRequestHandler):
    inside: ClassVar[str] = ""

    def do_GET(self) -> None:
        if self.path == "/to-inside":
            self.send_response(302)
            self.send_header("Location", self.inside)
        else:
            self.send_response(200 if self.path == "/ok" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local() -> Iterator[int]:
    """A real web server on 127.0.0.1: what an attacker's link would like to reach."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_internal_addresses_are_refused_before_any_connection(local: int) -> None:
    far = FarSide(
        local,
        {
            SITE_HOST: [PUBLIC_IP],
            "intranet.test": ["10.0.0.5"],
            "metadata.test": ["169.254.169.254"],
            "mixed.test": [PUBLIC_IP, "127.0.0.1"],
        },
    )
    for url, shown in (
        (f"http://127.0.0.1:{local}/ok", "127.0.0.1 a loopback address"),
        (f"http://[::1]:{local}/ok", "::1 a loopback address"),
        (f"http://[::ffff:7f00:1]:{local}/ok", "::ffff:7f00:1 a loopback address inside"),
        ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
        ("http://[fd00:ec2::254]/", "a cloud metadata address"),
        (f"http://intranet.test:{local}/ok", "intranet.test is 10.0.0.5, a private address"),
        ("http://metadata.test/", "metadata.test is 169.254.169.254, a cloud metadata"),
        (f"http://mixed.test:{local}/ok", "mixed.test is 127.0.0.1, a loopback address"),
    ):
        result = fetch(url, user_agent=AGENT, network=far.network)
        assert result.error is not None and shown in result.error, (url, result.error)
        assert "fetches only the public internet" in result.error
    assert far.connected == []
    # The public site itself is fetched, through the address that was vetted.
    assert fetch(f"http://{SITE_HOST}:{local}/ok", user_agent=AGENT, network=far.network).ok
    assert far.connected == [PUBLIC_IP]


def test_the_systems_own_resolver_is_vetted_too(local: int) -> None:
    for host in ("127.0.0.1", "localhost"):
        result = fetch(f"http://{host}:{local}/ok", user_agent=AGENT, network=Network())
        assert result.error is not None and "loopback" in result.error


def test_every_redirect_is_vetted_again(local: int) -> None:
    far = FarSide(local, {SITE_HOST: [PUBLIC_IP], "intranet.test": ["192.168.0.10"]})
    for inside, why in (
        (f"http://127.0.0.1:{local}/ok", "127.0.0.1 a loopback address"),
        (f"http://intranet.test:{local}/ok", "intranet.test is 192.168.0.10, a private"),
        ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
    ):
        _Site.inside = inside
        result = fetch(
            f"http://{SITE_HOST}:{local}/to-inside", user_agent=AGENT, network=far.network
        )
        assert result.redirected and result.final == inside
        assert result.error is not None and why in result.error
    assert set(far.connected) == {PUBLIC_IP}


def test_a_name_is_resolved_once_and_the_vetted_address_is_the_one_connected(
    local: int,
) -> None:
    answers = iter([[PUBLIC_IP], ["127.0.0.1"]])
    far = FarSide(local)
    looked_up: list[str] = []

    def rebinding(host: str, _port: int) -> list[str]:
        looked_up.append(host)
        return next(answers)

    network = Network(rebinding, far.connect)
    assert fetch(f"http://{SITE_HOST}:{local}/ok", user_agent=AGENT, network=network).ok
    assert looked_up == [SITE_HOST] and far.connected == [PUBLIC_IP]


class _Drip:
    """A server that answers a status line, then one header byte at a time, for ever (or
    endless headers at once, with ``flood``), until the test ends."""

    def __init__(self, *, flood: bool = False) -> None:
        self.flood = flood
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            try:
                while not self.stop.is_set():
                    if self.flood:
                        conn.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
                    else:
                        conn.sendall(b"X")
                        self.stop.wait(0.05)  # the drip's own pace
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(timeout=30)


def _fetch_from(drip: _Drip, limits: FetchLimits) -> Fetched:
    """The check's fetch of the site's address, which leads to ``drip``; closed after."""
    try:
        far = FarSide(drip.port)
        return fetch(
            f"http://{SITE_HOST}:{drip.port}/",
            user_agent=AGENT,
            network=far.network,
            limits=limits,
        )
    finally:
        drip.close()


def test_a_slow_drip_server_cannot_hold_the_check() -> None:
    result = _fetch_from(_Drip(), FetchLimits(seconds=0.5))
    assert result.error == "no answer within 0.5 s in all"


def test_endless_headers_stop_at_the_byte_limit() -> None:
    result = _fetch_from(_Drip(flood=True), FetchLimits(bytes=4096))
    assert result.error == "the answer's headers passed 4 KB"


def test_mailer_check_reports_an_internal_link_as_broken(newsletter: Path, local: int) -> None:
    slug = write_issue(
        newsletter,
        news("Read the guidance.").rstrip("\n")
        + "\n    links:\n"
        + '      - {text: "The guidance notes", url: "http://169.254.169.254/latest/meta-data/"}\n',
    )
    (found,) = run_one(newsletter, slug, "link-broken", online=True)
    assert found.message.startswith('"http://169.254.169.254/latest/meta-data/": not fetched: ')
    assert "a cloud metadata address" in found.message
