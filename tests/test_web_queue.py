"""The web side's mail leaves the request: queued in the database, sent in the background
with retries and an expiry, claimed safely by two senders, erased with the person, and
shown by `mailer status` and `mailer doctor` when it is stuck. On both databases."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fake_clock import FakeClock
from mailer import config
from mailer.config import Settings
from mailer.store.database import open_db
from mailer.subscribers import outgoing, selfservice
from mailer.subscribers.posting import Postman
from mailer.subscribers.selfservice import SignupRequest
from mailer.web import create_app
from subscriber_helpers import Cli, ok, query
from web_helpers import ISSUE, PEOPLE, messages, newsletter_with_a_send, recipient

NOW = 1_800_000_000.0


class Silent:
    """A relay that accepts connections and never says a word (not even its greeting)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(50)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.stopped = True
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    relay = Silent()
    yield relay
    relay.close()


def smtp_settings(newsletter: Path, port: int) -> Settings:
    return config.load(
        newsletter,
        env={
            **os.environ,
            "MAILER_TRANSPORT": "smtp",
            "MAILER_SMTP_HOST": "127.0.0.1",
            "MAILER_SMTP_PORT": str(port),
            "MAILER_SMTP_SECURITY": "none",
            "MAILER_SMTP_TIMEOUT": "2",
        },
    )


def sign_up(settings: Settings, email: str, *, ip: str = "192.0.2.1", now: float = NOW) -> None:
    form = SignupRequest(email, "", "", ["all"], True, "", ip)
    with open_db(settings) as db:
        selfservice.request_signup(db, form, now=now)


def rows(root: Path) -> list[tuple[str, str, str]]:
    return [
        (str(k), str(s), str(r))
        for k, s, r in query(root, "SELECT kind, status, recipient FROM web_mail ORDER BY id")
    ]


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_page_never_talks_to_the_relay(
    cli: Cli, newsletter: Path, silent: Silent, monkeypatch: pytest.MonkeyPatch
) -> None:
    newsletter_with_a_send(cli, newsletter)
    settings = smtp_settings(newsletter, silent.port)
    client = TestClient(create_app(settings, clock=lambda: NOW))
    headers = {"Sec-Fetch-Site": "same-origin"}
    for i in range(5):
        data = {"email": f"p{i}@example.net", "lists": "all", "consent": "yes"}
        answer = client.post("/subscribe", data=data, headers=headers)
        assert answer.status_code == 200 and "Check your email" in answer.text
    answer = client.post("/manage", data={"email": PEOPLE[0]}, headers=headers)
    assert answer.status_code == 200
    # The hung relay was never contacted by a request: everything waits in the queue.
    assert silent.accepted == []
    assert [r[:2] for r in rows(newsletter)] == [("confirm", "queued")] * 5 + [("manage", "queued")]


def test_a_failed_confirmation_is_retried_then_expires_without_using_up_the_cooling_off(
    cli: Cli, newsletter: Path
) -> None:
    newsletter_with_a_send(cli, newsletter)
    down = smtp_settings(newsletter, refused_port())
    sign_up(down, "dana@example.net")
    clock = FakeClock(NOW)
    with open_db(down) as db:
        postman = Postman(down, db, clock=clock)
        assert postman.deliver_due() == 0
        waits = []
        for _ in range(4):  # each try fails; the next is due later and later
            (row,) = query(newsletter, "SELECT attempts, status, last_error FROM web_mail")
            assert row[1] == "queued" and row[2]
            due = query(newsletter, "SELECT next_try_at FROM web_mail")[0][0]
            waits.append(str(due))
            clock.now += 3600
            postman.deliver_due()
        assert len(set(waits)) == 4
        clock.now += outgoing.EXPIRY.total_seconds()
        postman.deliver_due()
    assert rows(newsletter) == [("confirm", "failed", "")]
    # The failure did not use up the cooling-off: a new sign-up in the same hour is mailed.
    outbox = dataclasses.replace(down, transport=config.load(newsletter).transport)
    sign_up(outbox, "dana@example.net", now=clock.now)
    with open_db(outbox) as db:
        assert Postman(outbox, db, clock=clock).deliver_due() == 1
    assert [recipient(m) for m in messages(newsletter, "_web")] == ["dana@example.net"]


def test_two_senders_send_each_email_once(cli: Cli, newsletter: Path) -> None:
    newsletter_with_a_send(cli, newsletter)
    settings = config.load(newsletter)
    for i in range(40):
        sign_up(settings, f"p{i}@example.net", ip=f"192.0.2.{i}")
    start = threading.Barrier(2)
    counts: list[int] = []

    def sender() -> None:
        with open_db(settings) as db:
            postman = Postman(settings, db, clock=FakeClock(NOW))
            start.wait()
            counts.append(postman.deliver_due())

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = sorted(recipient(m) for m in messages(newsletter, "_web"))
    assert sum(counts) == 40
    assert sent == sorted(f"p{i}@example.net" for i in range(40))
    assert {r[1] for r in rows(newsletter)} == {"sent"}
    # A sent email keeps no address and no message.
    assert query(newsletter, "SELECT count(*) FROM web_mail WHERE message IS NOT NULL") == [(0,)]


def test_erasure_deletes_the_person_s_queued_mail(cli: Cli, newsletter: Path) -> None:
    newsletter_with_a_send(cli, newsletter)
    down = smtp_settings(newsletter, refused_port())
    sign_up(down, "dana@example.net")
    sign_up(down, "eve@example.net", ip="192.0.2.9")
    ok(cli("subscribers", "erase", "dana@example.net", "--yes"))
    assert [r[2] for r in rows(newsletter)] == ["eve@example.net"]


def test_status_and_doctor_show_a_stuck_queue(cli: Cli, newsletter: Path) -> None:
    newsletter_with_a_send(cli, newsletter)
    import time

    down = smtp_settings(newsletter, refused_port())
    sign_up(down, "dana@example.net", now=time.time() - 3600)
    doctor = cli("doctor")
    assert "web mail" in doctor.stdout and "waiting, the oldest for 60 min" in doctor.stdout
    assert "FAIL  web mail" in doctor.stdout
    status = ok(cli("status", ISSUE)).stdout
    assert "Web mail: 1 web email(s) waiting, the oldest for 60 min" in status
    assert "dana" not in doctor.stdout + status


def test_a_confirmed_sign_up_is_welcomed_per_list_through_the_queue(
    cli: Cli, newsletter: Path
) -> None:
    newsletter_with_a_send(cli, newsletter)
    (newsletter / "welcome").mkdir()
    (newsletter / "welcome" / "all.txt").write_text(
        "Welcome! The latest issue is here: {latest_issue}\n", encoding="utf-8"
    )
    settings = config.load(newsletter)
    client = TestClient(create_app(settings, clock=lambda: NOW))
    same = {"Sec-Fetch-Site": "same-origin"}
    data = {"email": "dana@example.net", "lists": ["all", "schools"], "consent": "yes"}
    assert client.post("/subscribe", data=data, headers=same).status_code == 200
    clock = FakeClock(NOW)
    with open_db(settings) as db:
        Postman(settings, db, clock=clock).deliver_due()
        (confirmation,) = messages(newsletter, "_web")
        text = confirmation.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        link = next(w for w in text.split() if "/confirm/" in w)
        answer = client.post(link.removeprefix(settings.base_url), headers=same)
        assert answer.status_code == 200 and "You are subscribed" in answer.text
        assert len(messages(newsletter, "_web")) == 1  # nothing was sent in the request
        Postman(settings, db, clock=clock).deliver_due()
    welcomes = [m for m in messages(newsletter, "_web") if "Welcome" in str(m["Subject"])]
    # Only the list with a welcome text (welcome/all.txt) sends one.
    assert [str(m["Subject"]) for m in welcomes] == ["Welcome to All practitioners"]
    body = welcomes[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert f"{settings.base_url}/{ISSUE}/" in body
    assert "/preferences/" in body and recipient(welcomes[0]) == "dana@example.net"
