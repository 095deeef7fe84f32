"""Bounded requests: bodies counted as they are read (chunked ones too) and refused past
the limit with nothing spooled; a cap on connections; a cap on repeated log lines;
redirects only to base_url; tokens that must match exactly."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mailer import config, tokens
from mailer.errors import BadToken
from mailer.web import create_app
from mailer.web.limits import MAX_BODY, LogThrottle
from subscriber_helpers import Cli
from web_helpers import (
    ISSUE,
    PEOPLE,
    free_port,
    newsletter_with_a_send,
    start_server,
    stop_server,
    unsubscribe_link,
)

CHUNK = 16 * 1024
# The start of a multipart form whose file field then never ends.
MULTIPART_HEAD = b'--xyz\r\nContent-Disposition: form-data; name="f"; filename="a.bin"\r\n\r\n'


@pytest.fixture
def served(cli: Cli, newsletter: Path) -> Iterator[TestClient]:
    newsletter_with_a_send(cli, newsletter)
    with TestClient(
        create_app(config.load(newsletter)), headers={"Sec-Fetch-Site": "same-origin"}
    ) as client:
        yield client


# --- bodies ---------------------------------------------------------------------------------


def _endless_upload(app: Any, path: str, content_type: bytes) -> tuple[int, int]:
    """POST a chunked body that never ends to ``app``: (status answered, chunks read)."""
    pulled = 0
    answered: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        if pulled == 1 and content_type.startswith(b"multipart/"):
            return {"type": "http.request", "body": MULTIPART_HEAD, "more_body": True}
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answered.append(message["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", content_type), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    return answered[0], pulled


@pytest.mark.parametrize(
    ("route", "content_type"),
    [
        ("/subscribe", b"multipart/form-data; boundary=xyz"),
        ("/subscribe", b"application/x-www-form-urlencoded"),
        ("/manage", b"multipart/form-data; boundary=xyz"),
    ],
)
def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(
    cli: Cli, newsletter: Path, route: str, content_type: bytes
) -> None:
    newsletter_with_a_send(cli, newsletter)
    app = create_app(config.load(newsletter))
    status, pulled = _endless_upload(app, route, content_type)
    assert status == 413
    assert (pulled - 1) * CHUNK <= MAX_BODY  # nothing read past the limit


def test_a_declared_length_over_the_limit_is_refused_before_reading(served: TestClient) -> None:
    answer = served.post(
        "/subscribe",
        content=b"email=" + b"a" * (MAX_BODY + 1),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 413
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_a_one_click_unsubscribe_under_the_limit_still_works(
    served: TestClient, newsletter: Path
) -> None:
    link = unsubscribe_link(newsletter, PEOPLE[0])
    path = link.split("://", 1)[1].partition("/")[2]
    answer = served.post("/" + path, data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200


def _chunked_upload(port: int, total: int) -> tuple[bytes, int]:
    """Send a chunked multipart upload of ``total`` bytes to a real server as a browser
    would, reading its answer as soon as there is one: (answer, bytes sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            b"POST /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n%s\r\n" % (len(MULTIPART_HEAD), MULTIPART_HEAD)
        sock.sendall(chunk)
        sock.setblocking(False)
        body = b"%x\r\n%s\r\n" % (CHUNK, b"x" * CHUNK)
        answer = b""
        while sent < total:
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            except OSError:
                break
            if answer:
                break
            try:
                sock.sendall(body)
                sent += CHUNK
            except BlockingIOError:
                continue
            except OSError:
                break
        sock.setblocking(True)
        try:
            while b"\r\n\r\n" not in answer:
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
        except OSError:
            pass
    return answer, sent


def test_a_real_server_refuses_a_chunked_upload_and_spools_nothing(
    cli: Cli, newsletter: Path, tmp_path: Path
) -> None:
    newsletter_with_a_send(cli, newsletter)
    spool = tmp_path / "spool"
    spool.mkdir()
    port = free_port()
    server = start_server(newsletter, port, {**os.environ, "TMPDIR": str(spool)})
    try:
        answer, sent = _chunked_upload(port, 64 * 1024 * 1024)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent < 64 * 1024 * 1024
        assert list(spool.iterdir()) == []
    finally:
        stop_server(server)


# --- connections ----------------------------------------------------------------------------


def test_connections_past_the_cap_get_503_at_once(cli: Cli, newsletter: Path) -> None:
    import subprocess
    import sys

    from send_helpers import Lines

    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailer",
            "serve",
            "--port",
            str(port),
            "--max-connections",
            "3",
            "--rehearsal",
        ],
        cwd=newsletter,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines = Lines(process.stdout)
    try:
        lines.wait_for(f"on http://127.0.0.1:{port}/")
        url = f"http://127.0.0.1:{port}/healthz"
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == 200
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(url, timeout=30)
            assert refused.value.code == 503
            refused.value.close()
        finally:
            for sock in idle:
                sock.close()
    finally:
        process.terminate()
        process.wait(timeout=60)
        lines.close()


# --- the log --------------------------------------------------------------------------------


def test_repeated_log_lines_are_capped_and_counted() -> None:
    now = [0.0]
    throttle = LogThrottle(burst=3, window=10.0, clock=lambda: now[0])
    logger = logging.getLogger("test.throttle")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep()
    handler.addFilter(throttle)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        for i in range(1000):
            logger.info("%s %s %d %.1fms", "POST", "/unsubscribe/{token}", 200, i / 10)
        logger.info("%s %s %d %.1fms", "GET", "/healthz", 200, 1.0)  # another line
        now[0] = 10.0
        logger.info("%s %s %d %.1fms", "POST", "/unsubscribe/{token}", 200, 5.0)
    finally:
        logger.removeHandler(handler)
    assert len(records) == 5
    assert records[-1] == "POST /unsubscribe/{token} 200 5.0ms (and 997 more like it, left out)"


# --- redirects and links --------------------------------------------------------------------


def test_no_redirect_reflects_the_host_header(served: TestClient) -> None:
    base = served.app.state.site.settings.base_url  # type: ignore[attr-defined]
    for path, target in (
        (f"/{ISSUE}", f"{base}/{ISSUE}/"),
        (f"/issues/{ISSUE}/", f"{base}/{ISSUE}/"),
        ("/training", f"{base}/training/"),
    ):
        answer = served.get(path, headers={"host": "evil.example"}, follow_redirects=False)
        assert answer.status_code == 308, path
        assert answer.headers["location"] == target
    for path in ("/accessibility/", "/subscribe/", "/2099-01"):
        answer = served.get(path, headers={"host": "evil.example"}, follow_redirects=False)
        assert answer.status_code == 404 and "evil.example" not in answer.text


# --- tokens ---------------------------------------------------------------------------------

JUNK = ["!", "=", "==", "%21", " ", "\t", ".", "A", "\u0661", "\x00", "/x"]


def test_a_token_with_anything_added_is_refused(served: TestClient, newsletter: Path) -> None:
    key = b"k" * 32
    good = tokens.make(key, tokens.UNSUBSCRIBE, 12, 7)
    assert tokens.read(key, tokens.UNSUBSCRIBE, good) == (12, 7)
    spoiled = [good + j for j in JUNK] + [
        "+" + good,
        " " + good,
        good.replace("12", "1_2", 1),
        good.replace("12", "\u0661\u0662", 1),
    ]
    for token in spoiled:
        with pytest.raises(BadToken):
            tokens.read(key, tokens.UNSUBSCRIBE, token)
    text = tokens.sign_text(key, tokens.CLICK, "2025-11 https://example.org/")
    for token in [text + j for j in JUNK]:
        with pytest.raises(BadToken):
            tokens.read_text(key, tokens.CLICK, token)
    address = tokens.make_for_address(key, "verp", 412)
    assert tokens.read_for_address(key, "verp", address.upper()) == (412,)
    for token in [address + j for j in ["!", "=", " ", "a"]]:
        with pytest.raises(BadToken):
            tokens.read_for_address(key, "verp", token)
    # Through the site: the real link works, and with junk appended it does not.
    link = unsubscribe_link(newsletter, PEOPLE[0])
    path = "/" + link.split("://", 1)[1].partition("/")[2]
    assert served.get(path).status_code == 200
    for junk in ("!", "%21", "=", "%20"):
        assert served.get(path + junk).status_code == 400, junk


def test_under_a_base_path_the_bare_path_leads_to_base_url(newsletter: Path) -> None:
    path = newsletter / "mailer.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("https://news.example.org", "https://www.example.org/newsletter"),
        encoding="utf-8",
    )
    with TestClient(create_app(config.load(newsletter))) as client:
        for asked, target in (
            ("/newsletter", "https://www.example.org/newsletter/"),
            ("/newsletter/training", "https://www.example.org/newsletter/training/"),
        ):
            answer = client.get(asked, headers={"host": "evil.example"}, follow_redirects=False)
            assert answer.status_code == 308 and answer.headers["location"] == target
