"""The link in every issue may be forwarded: it shows a masked address and no record; the
full record (address, sign-up IP addresses, history) needs a fresh link from "manage by
email", which expires after a few hours."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer import config, tokens
from mailer.subscribers.selfservice import FRESH_LINK_HOURS
from subscriber_helpers import Cli, query
from web_helpers import (
    PEOPLE,
    body_links,
    delivering_client,
    messages,
    newsletter_with_a_send,
    recipient,
)

NOW = 1_800_000_000.0
# The address the test client's requests come from: what a sign-up records as its IP.
CLIENT_IP = "testclient"
NEWCOMER = "dana@example.org"


class Site:
    def __init__(self, newsletter: Path) -> None:
        self.settings = config.load(newsletter)
        self.now = [NOW]
        self.client = delivering_client(self.settings, self.now)

    def get(self, url: str) -> object:
        return self.client.get(url.removeprefix(self.settings.base_url))

    def preferences_link(self, folder: str, address: str) -> str:
        (link,) = [
            u
            for m in messages(self.settings.root, folder)
            if recipient(m) == address
            for u in body_links(m)
            if "/preferences/" in u
        ]
        return link


@pytest.fixture
def site(cli: Cli, newsletter: Path) -> Iterator[Site]:
    newsletter_with_a_send(cli, newsletter)
    served = Site(newsletter)
    with served.client:
        # A newcomer signs up and confirms, so their record holds IP addresses.
        served.client.post(
            "/subscribe",
            data={"email": NEWCOMER, "lists": "schools", "consent": "yes", "name": "Dana"},
        )
        (confirm,) = [
            u for m in messages(newsletter, "_web") for u in body_links(m) if "/confirm/" in u
        ]
        assert served.client.post(confirm.removeprefix(served.settings.base_url)).status_code == 200
        yield served


def test_a_forwarded_issue_link_shows_no_address_no_ip_and_no_record(site: Site) -> None:
    link = site.preferences_link("2025-11", PEOPLE[0])
    page = site.get(link)
    assert page.status_code == 200  # type: ignore[attr-defined]
    html = page.text  # type: ignore[attr-defined]
    assert "am•••a@example.org" in html and PEOPLE[0] not in html
    assert "data.json" not in html and "ask for a link by email" in html
    data = site.get(link + "/data.json")
    assert data.status_code == 400  # type: ignore[attr-defined]
    assert PEOPLE[0] not in data.text and "Manage your subscription" in data.text  # type: ignore[attr-defined]


def test_the_newcomers_own_long_lived_link_shows_no_ip_address(site: Site) -> None:
    key = site.settings.require_secret_key()
    # The link a confirmed newcomer is shown, and that every issue then carries.
    ((subscriber_id,),) = query(
        site.settings.root, "SELECT id FROM subscriber WHERE email = ?", NEWCOMER
    )
    lasting = f"/preferences/{tokens.make(key, tokens.PREFERENCES, subscriber_id)}"
    for url in (lasting, lasting + "/data.json"):
        text = site.client.get(url).text
        assert CLIENT_IP not in text and NEWCOMER not in text


def test_manage_by_email_sends_a_fresh_link_that_shows_everything_for_hours(site: Site) -> None:
    site.client.post("/manage", data={"email": NEWCOMER})
    link = site.preferences_link("_web", NEWCOMER)
    (mail,) = [
        m.get_body(("plain",))
        for m in messages(site.settings.root, "_web")
        if m["Subject"].startswith("Your ")
    ]
    assert mail is not None and f"works for {FRESH_LINK_HOURS} hours" in mail.get_content()
    page = site.get(link)
    assert "data.json" in page.text  # type: ignore[attr-defined]
    data = site.get(link + "/data.json")
    assert data.status_code == 200  # type: ignore[attr-defined]
    held = json.loads(data.text)  # type: ignore[attr-defined]
    assert held["email"] == NEWCOMER
    assert held["web_signups"][0]["requested_ip"] == CLIENT_IP
    # The same link works to the end of its hours, and not after.
    site.now[0] = NOW + FRESH_LINK_HOURS * 3600 - 60
    assert site.get(link + "/data.json").status_code == 200  # type: ignore[attr-defined]
    site.now[0] = NOW + FRESH_LINK_HOURS * 3600 + 180
    for url in (link, link + "/data.json"):
        expired = site.get(url)
        assert expired.status_code == 400  # type: ignore[attr-defined]
        assert "This link has expired" in expired.text  # type: ignore[attr-defined]
        assert f"work for {FRESH_LINK_HOURS} hours" in expired.text  # type: ignore[attr-defined]
        assert NEWCOMER not in expired.text  # type: ignore[attr-defined]


def test_a_fresh_link_is_refused_for_any_other_purpose(site: Site) -> None:
    key = site.settings.require_secret_key()
    fresh = tokens.make_expiring(key, tokens.PREFERENCES_FRESH, NOW, 1)
    for url in (f"/unsubscribe/{fresh}", f"/confirm/{fresh}"):
        assert site.client.get(url).status_code == 400
    # A forwarded issue's token cannot be turned into a fresh one by adding a minute.
    lasting = tokens.make(key, tokens.PREFERENCES, 1)
    payload, _, mac = lasting.partition(".")
    forged = f"{payload}-{int(NOW // 60)}.{mac}"
    assert site.client.get(f"/preferences/{forged}/data.json").status_code == 400
