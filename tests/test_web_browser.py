"""`mailer serve` end to end: a real server process on 127.0.0.1, Debian's Chromium driven
by Playwright, and axe-core (from npm) checking every page for WCAG 2.2 A and AA failures.

The newsletter's base_url is the server's own address, so the links in the outbox's
messages lead to it exactly as a reader's mail program would.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Page

from conftest import EXAMPLE, PHONE, REPO
from mailer import config
from mailer.config import Settings
from mailer.operations import service
from mailer.site import build
from mailer.store.database import open_db
from mailer.subscribers import lists
from mailer.subscribers import roster as subscribers
from subscriber_helpers import query
from web_helpers import (
    ISSUE,
    body_links,
    free_port,
    mailed,
    start_server,
    stop_server,
    unsubscribe_link,
)

AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
PEOPLE = ["amira@example.org", "ben@example.org"]


@dataclass
class Served:
    settings: Settings
    url: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("serve") / "newsletter"
    shutil.copytree(EXAMPLE, root)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    toml = (root / "mailer.toml").read_text(encoding="utf-8")
    (root / "mailer.toml").write_text(
        toml.replace('base_url = "https://news.example.org"', f'base_url = "{url}"'),
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_SECRET_KEY"] = "browser-test-key-with-at-least-32-bytes"
    settings = config.load(root, env=env)
    assert settings.base_url == url
    lists.create(
        settings, "all", "All practitioners", "Everyone working with children.", public=True
    )
    lists.create(settings, "schools", "Schools DSLs", "Designated safeguarding leads.", public=True)
    with open_db(settings) as db:
        for address in PEOPLE:
            subscribers.add(db, address, "all", name=address.split("@")[0].title())
    build.build(settings, [ISSUE])
    service.approve(settings, ISSUE, "Sam Patel")
    service.start(settings, ISSUE, ["all"])
    build.publish(settings, ISSUE)  # a rehearsal send through the outbox publishes nothing
    build.publish(settings, "2021-12")
    process = start_server(root, port, env)
    try:
        yield Served(settings, url)
    finally:
        stop_server(process)


def accessible(page: Page) -> None:
    """axe-core finds no WCAG 2.2 A/AA violation, and nothing is wider than a phone."""
    page.evaluate(AXE.read_text(encoding="utf-8"))
    result: dict[str, Any] = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG
    )
    problems = [
        f"{v['id']}: {v['help']} ({len(v['nodes'])}x, e.g. {v['nodes'][0]['html'][:120]})"
        for v in result["violations"]
    ]
    assert problems == [], f"{page.url}: {problems}"
    assert len(result["passes"]) > 10
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE, page.url


def test_the_archive_and_an_issue(served: Served, page: Page) -> None:
    page.goto(served.url + "/")
    assert page.title() == f"{served.settings.name}: all issues"
    links = page.locator("main ol a")
    assert links.count() == 2
    assert "November 2025" in links.nth(0).inner_text()
    accessible(page)
    with page.expect_navigation(wait_until="load"):
        links.nth(1).click()
    assert page.url == f"{served.url}/2021-12/"
    sizes = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    assert sizes and all(complete and width > 0 for complete, width in sizes)
    accessible(page)


def test_unsubscribe_through_the_link_in_a_message(served: Served, page: Page) -> None:
    root = served.settings.root
    page.goto(unsubscribe_link(root, PEOPLE[0]))
    main = page.locator("main")
    assert "am•••a@example.org" in main.inner_text()
    accessible(page)
    with page.expect_navigation(wait_until="load"):
        page.get_by_role("button", name="Unsubscribe from this list").click()
    assert "is unsubscribed" in page.locator("[role=status]").inner_text()
    accessible(page)
    rows = query(
        root,
        "SELECT m.status FROM membership m JOIN subscriber s ON s.id = m.subscriber_id "
        "WHERE s.email = ?",
        PEOPLE[0],
    )
    assert rows == [("unsubscribed",)]


def test_sign_up_and_confirm_through_the_email(served: Served, page: Page) -> None:
    root = served.settings.root
    page.goto(served.url + "/subscribe")
    accessible(page)
    page.get_by_label("Email address").fill("Dana.Reader@example.org")
    page.get_by_label("Name").fill("Dana Reader")
    page.get_by_label("Schools DSLs").check()
    page.get_by_label(served.settings.web.consent).check()
    with page.expect_navigation(wait_until="load"):
        page.get_by_role("button", name="Sign up").click()
    assert page.locator("h1").inner_text() == "Check your email"
    accessible(page)
    (link,) = [u for u in body_links(mailed(root, "dana.reader@example.org")) if "/confirm/" in u]
    page.goto(link)
    assert "Schools DSLs" in page.locator("main").inner_text()
    accessible(page)
    with page.expect_navigation(wait_until="load"):
        page.get_by_role("button", name="Confirm my subscription").click()
    assert page.locator("h1").inner_text() == "You are subscribed"
    accessible(page)
    rows = query(
        root,
        "SELECT l.slug, m.status, c.basis FROM membership m "
        "JOIN subscriber s ON s.id = m.subscriber_id JOIN mailing_list l ON l.id = m.list_id "
        "JOIN consent c ON c.subscriber_id = m.subscriber_id AND c.list_id = m.list_id "
        "WHERE s.email = ?",
        "dana.reader@example.org",
    )
    assert rows == [("schools", "subscribed", "consent")]
    # The confirmation page links to the preferences page.
    with page.expect_navigation(wait_until="load"):
        page.get_by_role("link", name="change your choices").click()
    assert page.locator("h1").inner_text() == "Your subscription"


def test_a_form_error_is_announced_and_accessible(served: Served, page: Page) -> None:
    page.goto(served.url + "/subscribe")
    page.get_by_label("Email address").fill("someone@example.org")
    page.get_by_label("Schools DSLs").check()
    # The consent box is left unticked: the browser itself refuses the form first.
    page.get_by_role("button", name="Sign up").click()
    assert page.url == served.url + "/subscribe"
    assert page.evaluate("document.querySelector('#consent').validity.valid") is False


def test_manage_by_email(served: Served, page: Page) -> None:
    root = served.settings.root
    page.goto(served.url + "/manage")
    accessible(page)
    page.get_by_label("Email address").fill(PEOPLE[1])
    with page.expect_navigation(wait_until="load"):
        page.get_by_role("button", name="Email me a link").click()
    assert page.locator("h1").inner_text() == "Check your email"
    (link,) = [u for u in body_links(mailed(root, PEOPLE[1])) if "/preferences/" in u]
    page.goto(link)
    accessible(page)
    page.get_by_label("Organisation").fill("Carlisle Youth Zone")
    page.get_by_label("Schools DSLs").check()
    with page.expect_navigation(wait_until="load"):
        page.get_by_role("button", name="Save my choices").click()
    assert "Your choices are saved" in page.locator("[role=status]").inner_text()
    accessible(page)
    rows = query(root, "SELECT organisation FROM subscriber WHERE email = ?", PEOPLE[1])
    assert rows == [("Carlisle Youth Zone",)]


@pytest.mark.parametrize(
    "path", ["/accessibility", "/unsubscribe", "/no-such-page/", "/unsubscribe/1-1.bad"]
)
def test_other_pages_are_accessible(served: Served, page: Page, path: str) -> None:
    page.goto(served.url + path)
    accessible(page)


def test_the_keyboard_reaches_the_skip_link_and_focus_is_visible(
    served: Served, page: Page
) -> None:
    page.goto(served.url + "/subscribe")
    page.keyboard.press("Tab")
    focused = page.evaluate(
        "() => { const e = document.activeElement; const s = getComputedStyle(e);"
        " return [e.textContent, s.outlineStyle, s.outlineWidth]; }"
    )
    assert focused[0] == "Skip to the main content"
    assert focused[1] != "none" and focused[2] != "0px"
