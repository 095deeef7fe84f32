"""Helpers for the web tests: a newsletter with lists, people and a sent issue, and the
links taken from the messages in its outbox as a reader would take them."""

from __future__ import annotations

import email
import email.policy
import quopri
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from fake_clock import FakeClock
from made_once import made_once
from mailer import config
from mailer.config import Settings
from mailer.store.database import open_db
from mailer.subscribers.posting import Postman
from mailer.web import create_app
from send_helpers import Lines
from subscriber_helpers import Cli, ok

ISSUE = "2025-11"
PEOPLE = ["amira@example.org", "ben@example.org", "chloe@example.org"]


class Delivering(TestClient):
    """A browser on the site's own pages (Sec-Fetch-Site: same-origin) whose every POST is
    followed by the background sender's look at the queue, as mailer serve's thread does."""

    postman: Postman

    def post(self, *args: Any, **kw: Any) -> Any:
        answer = super().post(*args, **kw)
        self.postman.deliver_due()
        return answer


def delivering_client(settings: Settings, now: list[float]) -> Delivering:
    """The app on a :class:`Delivering` client, its clock and its sender's at ``now[0]``."""
    client = Delivering(
        create_app(settings, clock=lambda: now[0]), headers={"Sec-Fetch-Site": "same-origin"}
    )
    clock = FakeClock(now[0])
    clock.time = lambda: now[0]  # type: ignore[method-assign]
    client.postman = Postman(settings, open_db(settings), clock=clock)
    return client


def newsletter_with_a_send(cli: Cli, root: Path, people: list[str] = PEOPLE) -> None:
    """Lists 'all' (public) and 'schools' (public), people on 'all', and ISSUE sent to 'all'
    through the outbox and published, all with the real commands (run once per process for
    each starting point, then copied: see made_once)."""
    made_once(root, f"a send to {people}", lambda folder: _send_for_real(cli, people))


def _send_for_real(cli: Cli, people: list[str]) -> None:
    ok(cli("lists", "create", "all", "--name", "All practitioners", "--public"))
    ok(cli("lists", "create", "schools", "--name", "Schools DSLs", "--public"))
    ok(cli("lists", "create", "board", "--name", "Board members"))
    for address in people:
        ok(cli("subscribers", "add", address, "--list", "all", "--name", address.split("@")[0]))
    ok(cli("build", ISSUE))
    ok(cli("approve", ISSUE, "--by", "Sam Patel"))
    ok(cli("send", ISSUE, "--list", "all", "--yes"))
    ok(cli("publish", ISSUE))  # a rehearsal send publishes nothing


def messages(root: Path, folder: str = ISSUE) -> list[email.message.EmailMessage]:
    """Every message in ``outbox/folder``, parsed (file names carry no address)."""
    found = []
    for path in sorted((root / "outbox" / folder).glob("*.eml")):
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        found.append(parsed)
    return found


def mailed(
    root: Path, address: str, folder: str = "_web", timeout: float = 120.0
) -> email.message.EmailMessage:
    """The message to ``address`` in ``outbox/folder``, once the background sender of the
    real ``mailer serve`` started in ``root`` has written it (the web side's mail leaves the
    request): looked for again each time the server logs a line, as it does for each send."""
    (lines,) = [lines for where, lines in _SERVERS.values() if where.resolve() == root.resolve()]

    def found() -> email.message.EmailMessage | None:
        return next((m for m in messages(root, folder) if recipient(m) == address), None)

    message: email.message.EmailMessage = lines.wait_until(
        found, f"a message to {address} in outbox/{folder}", timeout
    )
    return message


def recipient(message: email.message.EmailMessage) -> str:
    return str(message["To"].addresses[0].addr_spec).lower()


def message_to(root: Path, address: str, folder: str = ISSUE) -> email.message.EmailMessage:
    (found,) = [m for m in messages(root, folder) if recipient(m) == address]
    return found


def unsubscribe_link(root: Path, address: str) -> str:
    """The https link of the List-Unsubscribe header of ``address``'s copy."""
    header = str(message_to(root, address)["List-Unsubscribe"])
    return re.findall(r"<(https?://[^>]+)>", header)[0]


def mailto_token(root: Path, address: str) -> str:
    header = str(message_to(root, address)["List-Unsubscribe"])
    return re.findall(r"subject=unsubscribe%20([^>]+)>", header)[0]


def body_links(message: email.message.EmailMessage) -> list[str]:
    part = message.get_body(("plain",))
    assert part is not None
    return re.findall(r"https?://\S+", part.get_content())


def html_part(message: email.message.EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    raw = part.get_payload(decode=True)
    assert isinstance(raw, bytes)
    return raw.decode("utf-8") if b"=\r\n" not in raw else quopri.decodestring(raw).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(root: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A real `mailer serve` on 127.0.0.1:port, returned once it says it is listening and
    /healthz answers; with the outbox transport, as a rehearsal."""
    rehearsal = ["--rehearsal"] if config.load(root, env=env).transport.name == "outbox" else []
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "serve", "--port", str(port), *rehearsal],
        cwd=root,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines = Lines(process.stdout)
    _SERVERS[process.pid] = (root, lines)
    lines.wait_for(f"on http://127.0.0.1:{port}/")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as r:
        assert r.status == 200
    return process


# The folder and output reader of each running server, closed when the server stops.
_SERVERS: dict[int, tuple[Path, Lines]] = {}


def stop_server(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    served = _SERVERS.pop(process.pid, None)
    if served is not None:
        served[1].close()
