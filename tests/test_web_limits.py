"""Limits a flood cannot walk around, forms only this site can post, the same work (and
time) whatever the address's state, and one-click unsubscribes that wait out a busy
database. On both databases."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from db_helpers import on_postgres, url_of
from fake_clock import FakeClock
from mailer import config
from mailer.addresses import mailbox
from mailer.config import Settings
from mailer.store.database import open_db
from mailer.subscribers import selfservice
from mailer.subscribers.outgoing import network
from mailer.subscribers.posting import Postman
from mailer.subscribers.selfservice import SignupRequest
from mailer.web import create_app
from subscriber_helpers import Cli, ok, query
from web_helpers import PEOPLE, messages, newsletter_with_a_send, recipient, unsubscribe_link

NOW = 1_800_000_000.0
SAME = {"Sec-Fetch-Site": "same-origin"}


@pytest.mark.parametrize(
    ("typed", "delivered"),
    [
        ("Victim+1@Gmail.com", "victim@gmail.com"),
        ("v.ictim@googlemail.com", "victim@gmail.com"),
        ("v.i.c.t.i.m+x+y@gmail.com", "victim@gmail.com"),
        ("jo.smith+news@example.org", "jo.smith@example.org"),
        ("+tag@example.org", "+tag@example.org"),
    ],
)
def test_the_mailbox_as_delivered(typed: str, delivered: str) -> None:
    assert mailbox(typed) == delivered


def test_networks_are_ipv4_addresses_and_ipv6_64s() -> None:
    assert network("192.0.2.7") == "192.0.2.7"
    assert network("2001:db8:1:2:aaaa::1") == network("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert network("2001:db8:1:3::1") != network("2001:db8:1:2::1")
    assert network("::ffff:192.0.2.7") == "192.0.2.7"


def sign_up(settings: Settings, email: str, ip: str, now: float = NOW) -> None:
    form = SignupRequest(email, "", "", ["all"], True, "", ip)
    with open_db(settings) as db:
        selfservice.request_signup(db, form, now=now)


def deliver(settings: Settings, now: float = NOW) -> None:
    with open_db(settings) as db:
        Postman(settings, db, clock=FakeClock(now)).deliver_due()


def web_recipients(root: Path) -> list[str]:
    return [recipient(m) for m in messages(root, "_web")]


@pytest.fixture
def site(cli: Cli, newsletter: Path) -> Settings:
    newsletter_with_a_send(cli, newsletter)
    return config.load(newsletter)


def test_tags_dots_and_googlemail_reach_one_inbox_once(site: Settings) -> None:
    for i in range(30):
        sign_up(site, f"victim+{i}@gmail.com", f"198.51.100.{i}")
    sign_up(site, "v.ictim@googlemail.com", "203.0.113.1")
    sign_up(site, "VICTIM@gmail.com", "203.0.113.2")
    deliver(site)
    assert web_recipients(site.root) == ["victim+0@gmail.com"]


def test_one_ipv6_64_is_one_network(site: Settings) -> None:
    for i in range(30):
        sign_up(site, f"p{i}@example.net", f"2001:db8:5:6::{i + 1:x}")
    deliver(site)
    assert len(web_recipients(site.root)) == site.web.per_ip_per_hour


def test_five_posts_do_not_lock_a_person_out(site: Settings) -> None:
    for _ in range(5):
        sign_up(site, "dana@example.net", "192.0.2.1")
    deliver(site)
    assert web_recipients(site.root) == ["dana@example.net"]
    later = NOW + 61 * 60  # past the cooling-off period, far within the day
    sign_up(site, "dana@example.net", "192.0.2.1", now=later)
    deliver(site, later)
    assert web_recipients(site.root) == ["dana@example.net"] * 2


def test_the_hourly_cap_holds_confirmations_and_alerts_once(site: Settings) -> None:
    text = (site.root / "mailer.toml").read_text(encoding="utf-8")
    (site.root / "mailer.toml").write_text(
        'alerts_to = ["ops@example.org"]\n' + text + "\n[web]\nconfirmations_per_hour = 3\n"
    )
    capped = config.load(site.root)
    assert capped.alerts_to
    for i in range(8):
        sign_up(capped, f"p{i}@example.net", f"198.51.100.{i}")
    deliver(capped)
    assert len(web_recipients(site.root)) == 3
    alerts = messages(site.root, "_alerts")
    assert len(alerts) == len(capped.alerts_to)
    assert "hourly cap" in str(alerts[0]["Subject"])
    assert "p4@example.net" not in alerts[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    # An hour on, confirmations go again.
    sign_up(capped, "late@example.net", "198.51.100.99", now=NOW + 3601)
    deliver(capped, NOW + 3601)
    assert "late@example.net" in web_recipients(site.root)


# --- same-origin forms ------------------------------------------------------------------------


@pytest.fixture
def client(site: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(site, clock=lambda: NOW)) as served:
        yield served


def test_cross_site_form_posts_are_refused(client: TestClient, site: Settings) -> None:
    form = {"email": "dana@example.net", "lists": "all", "consent": "yes"}
    for headers in (
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site", "Origin": site.base_url},
        {"Sec-Fetch-Site": "same-site"},
        {},  # neither header and no form token
    ):
        for path, data in (("/subscribe", form), ("/manage", {"email": PEOPLE[0]})):
            answer = client.post(path, data=data, headers=headers)
            assert answer.status_code == 403, (path, headers)
            assert "This form was sent from another website" in answer.text
    assert query(site.root, "SELECT count(*) FROM web_mail") == [(0,)]


def test_same_origin_posts_and_the_form_token_are_accepted(
    client: TestClient, site: Settings
) -> None:
    form = {"email": "dana@example.net", "lists": "all", "consent": "yes"}
    assert client.post("/subscribe", data=form, headers=SAME).status_code == 200
    assert (
        client.post("/subscribe", data=form, headers={"Origin": site.base_url}).status_code == 200
    )
    page = client.get("/subscribe").text
    token = page.split('name="form_token" value="')[1].split('"')[0]
    answer = client.post("/subscribe", data=dict(form, form_token=token))
    assert answer.status_code == 200
    forged = client.post("/subscribe", data=dict(form, form_token=token[:-2] + "xx"))
    assert forged.status_code == 403


def test_one_click_unsubscribe_stays_exempt(client: TestClient, site: Settings) -> None:
    link = unsubscribe_link(site.root, PEOPLE[0]).removeprefix(site.base_url)
    answer = client.post(link, data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    assert client.post(link, data={"scope": "all"}).status_code == 403  # the page's own form


# --- the same work, the same time -------------------------------------------------------------


def _statements(record: list[str]) -> Iterator[None]:
    """Every SQL statement any engine of this process runs meanwhile, appended to ``record``
    with its parameters left out (they are bound, so the text is the statement's shape)."""

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        record.append(" ".join(statement.split()))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", seen)
    try:
        yield
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", seen)


@pytest.mark.parametrize("transport", ["outbox", "smtp"])
def test_sign_up_and_manage_do_the_same_work_whoever_asks(
    cli: Cli, newsletter: Path, transport: str
) -> None:
    """What a request does for a subscribed, an unknown and a suppressed address is the same,
    statement for statement and email built for email, so its time tells nobody which it
    was (bench/web_timing.py measures the times themselves, as ratios in one run)."""
    newsletter_with_a_send(cli, newsletter)
    ok(cli("subscribers", "add", "gone@example.org", "--list", "all"))
    ok(cli("subscribers", "erase", "gone@example.org", "--yes"))
    env = {**os.environ, "MAILER_TRANSPORT": transport, "MAILER_SMTP_HOST": "127.0.0.1"}
    settings = config.load(newsletter, env=env)
    with TestClient(create_app(settings, clock=lambda: NOW)) as served:
        for path in ("/subscribe", "/manage"):
            asks = {
                "subscribed": PEOPLE[0],
                "unknown": f"new-{path[1:]}@example.net",
                "suppressed": "gone@example.org",
            }
            work: dict[str, list[str]] = {}
            for group, email in asks.items():
                data = {"email": email, "lists": "all", "consent": "yes"}
                record: list[str] = []
                with contextlib.contextmanager(_statements)(record):
                    assert served.post(path, data=data, headers=SAME).status_code == 200
                work[group] = record
            assert work["subscribed"], path
            assert work["unknown"] == work["subscribed"], (path, transport)
            assert work["suppressed"] == work["subscribed"], (path, transport)
            # One email built and written for each, queued or skipped.
            assert sum(s.startswith("INSERT INTO web_mail") for s in work["unknown"]) == 1


# --- no lost unsubscribe ----------------------------------------------------------------------


class Waited(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "busy" in record.getMessage():
            self.event.set()


def test_a_one_click_unsubscribe_waits_out_a_writer_holding_the_database(
    client: TestClient, site: Settings
) -> None:
    link = unsubscribe_link(site.root, PEOPLE[1]).removeprefix(site.base_url)
    engine = sa.create_engine(url_of(site.root), poolclass=sa.pool.NullPool)
    holder = engine.connect()
    if on_postgres(site.root):
        holder.exec_driver_sql("BEGIN")
        holder.exec_driver_sql("LOCK TABLE membership IN ACCESS EXCLUSIVE MODE")
    else:
        holder.connection.dbapi_connection.isolation_level = None  # type: ignore[union-attr]
        holder.exec_driver_sql("BEGIN IMMEDIATE")
    waited = Waited()
    logger = logging.getLogger("mailer.store")
    logger.addHandler(waited)
    answers: list[int] = []
    post = threading.Thread(
        target=lambda: answers.append(
            client.post(link, data={"List-Unsubscribe": "One-Click"}).status_code
        )
    )
    try:
        post.start()
        assert waited.event.wait(120), "the unsubscribe never met the busy database"
        assert answers == []  # still waiting: not answered 503
        holder.exec_driver_sql("ROLLBACK")
        post.join(120)
    finally:
        logger.removeHandler(waited)
        holder.close()
        engine.dispose()
    assert answers == [200]
    status = query(
        site.root,
        "SELECT m.status FROM membership m JOIN subscriber s ON s.id = m.subscriber_id "
        "WHERE s.email = ?",
        PEOPLE[1],
    )
    assert status == [("unsubscribed",)]
