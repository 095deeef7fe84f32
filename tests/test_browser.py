"""The built pages in a real browser: Debian's Chromium driven by Playwright.

The example issues are built once for the module and opened from disk. Requests for the
newsletter's public address (its images) are answered from the build folder, and every
other request is refused, so the pages render exactly as published and nothing leaves the
machine. Screenshots of both widths are kept in tests/screenshots/ for a human to look at.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from playwright.sync_api import Browser, Page, Route

from conftest import EXAMPLE, REPO
from mailer import config, urls
from mailer.config import Settings
from mailer.content import all_slugs
from mailer.site import build as builder

SCREENSHOTS = REPO / "tests" / "screenshots"
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
PHONE, DESKTOP = 375, 800
COLUMN = 640


@dataclass(frozen=True)
class Site:
    settings: Settings

    def url(self, *parts: str) -> str:
        return self.settings.build_dir.joinpath(*parts).as_uri()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("browser") / "newsletter"
    root.mkdir()
    shutil.copytree(EXAMPLE, root, dirs_exist_ok=True)
    settings = config.load(
        root, env={"MAILER_SECRET_KEY": "test-secret-key-with-at-least-32-bytes"}
    )
    for slug in all_slugs(settings):  # drafts are left out of the archive
        builder.publish(settings, slug)
    # The training calendar as it was when the November 2025 issue went out.
    builder.build(settings, all_slugs(settings), archive=True, today=dt.date(2025, 10, 30))
    return Site(settings)


@pytest.fixture
def refused() -> Iterator[list[str]]:
    """Requests a test's pages tried to make to anywhere but the newsletter's own address:
    checked after every test, so each page is held to it on its own."""
    found: list[str] = []
    yield found
    assert found == [], f"the page asked for things from elsewhere: {found}"


def open_page(
    browser: Browser,
    site: Site,
    refused: list[str],
    width: int,
    *parts: str,
    scheme: Literal["light", "dark"] = "light",
) -> Page:
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
    base = site.settings.base_url + "/"
    local_files = site.settings.build_dir.as_uri() + "/"

    def answer(route: Route) -> None:
        url = route.request.url
        if url.startswith(local_files):
            route.continue_()
            return
        if url.startswith(base):
            local = site.settings.build_dir / url.removeprefix(base).split("?")[0]
            if local.is_file():
                route.fulfill(path=local)
                return
        refused.append(url)
        route.abort()

    page.route("**/*", answer)
    page.goto(site.url(*parts), wait_until="load")
    return page


# Every element's right edge, so the test can name what sticks out.
OVERFLOW = """width => Array.from(document.querySelectorAll('body *'))
  .map(el => [el, el.getBoundingClientRect()])
  .filter(([el, box]) => box.width > 0 && box.right > width + 0.5)
  .map(([el, box]) => el.tagName.toLowerCase() + '.' + el.className + ' right=' + box.right)"""

# The boxes of the newsletter's centred column: MJML's section wrappers (max-width 640px).
COLUMN_BOXES = """() => Array.from(document.querySelectorAll('div[role=article] > div'))
  .map(el => el.getBoundingClientRect())
  .filter(box => box.width > 0)
  .map(box => ({left: box.left, right: box.right, width: box.width}))"""

PAGES = [("2025-11", "email.html"), ("2025-11", "index.html"), ("2021-12", "email.html")]


def shoot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    path.unlink(missing_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.mark.parametrize("parts", PAGES, ids=["email", "web", "email-2021-12"])
def test_nothing_is_wider_than_a_phone(
    browser: Browser, site: Site, refused: list[str], parts: tuple[str, str]
) -> None:
    page = open_page(browser, site, refused, PHONE, *parts)
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE
        assert page.evaluate(OVERFLOW, PHONE) == []
        height = page.evaluate("document.documentElement.scrollHeight")
        # A long newsletter on a phone: many screens, but not absurdly many.
        assert 3000 < height < 40000
        if parts[0] == "2025-11":
            path = shoot(page, f"{parts[0]}-{parts[1].removesuffix('.html')}-{PHONE}")
            assert path.stat().st_size > 10_000
    finally:
        page.close()


@pytest.mark.parametrize("parts", PAGES, ids=["email", "web", "email-2021-12"])
def test_the_column_is_centred_and_at_most_640px_on_a_desktop(
    browser: Browser, site: Site, refused: list[str], parts: tuple[str, str]
) -> None:
    page = open_page(browser, site, refused, DESKTOP, *parts)
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= DESKTOP
        boxes: list[dict[str, Any]] = page.evaluate(COLUMN_BOXES)
        assert len(boxes) >= 3  # the top links, the masthead, the content card, the footer
        for box in boxes:
            assert box["width"] <= COLUMN
            assert abs(box["left"] - (DESKTOP - box["right"])) <= 2, box
        # The masthead and content share one column width.
        assert max(b["width"] for b in boxes) == COLUMN
        height = page.evaluate("document.documentElement.scrollHeight")
        assert 2000 < height < 30000
        if parts[0] == "2025-11":
            path = shoot(page, f"{parts[0]}-{parts[1].removesuffix('.html')}-{DESKTOP}")
            assert path.stat().st_size > 10_000
    finally:
        page.close()


def test_images_load_from_the_published_address(
    browser: Browser, site: Site, refused: list[str]
) -> None:
    page = open_page(browser, site, refused, DESKTOP, "2021-12", "index.html")
    try:
        sizes = page.evaluate(
            "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.width])"
        )
        assert len(sizes) == 4
        for complete, natural, shown in sizes:
            assert complete and natural > 0
            assert shown == 592
    finally:
        page.close()


def test_text_is_readable_at_16px(browser: Browser, site: Site, refused: list[str]) -> None:
    page = open_page(browser, site, refused, PHONE, "2025-11", "email.html")
    try:
        sizes = page.evaluate(
            """Array.from(document.querySelectorAll('.body p, .body li'))
                .filter(el => !el.closest('.kicker') && !el.classList.contains('kicker'))
                .map(el => parseFloat(getComputedStyle(el).fontSize))"""
        )
        assert len(sizes) > 50
        assert min(sizes) >= 15
        assert sorted(sizes)[len(sizes) // 2] == 16
    finally:
        page.close()


def test_the_archive_links_to_both_issues(browser: Browser, site: Site, refused: list[str]) -> None:
    page = open_page(browser, site, refused, PHONE, "index.html")
    try:
        links = page.locator("main ol a")
        assert links.count() == 2
        training = page.get_by_role("link", name="Training calendar", exact=False)
        assert training.get_attribute("href") == urls.training_url(site.settings)
        for i, slug in enumerate(("2025-11", "2021-12")):
            link = links.nth(i)
            assert link.is_visible()
            assert link.get_attribute("href") == urls.issue_url(site.settings, slug)
        assert "November 2025" in links.nth(0).inner_text()
        assert "December 2021" in links.nth(1).inner_text()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE
        assert shoot(page, f"archive-{PHONE}").stat().st_size > 10_000
    finally:
        page.close()


AXE_PAGES = [
    ("2025-11", "email.html"),
    ("2025-11", "index.html"),
    ("2021-12", "email.html"),
    ("2021-12", "index.html"),
    ("index.html",),
    ("training", "index.html"),
]


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("parts", AXE_PAGES, ids=lambda p: "/".join(p))
def test_axe_finds_no_wcag_violation_in_light_or_dark_mode(
    browser: Browser,
    site: Site,
    refused: list[str],
    parts: tuple[str, ...],
    scheme: Literal["light", "dark"],
) -> None:
    """axe-core checks colour contrast too, so the dark-mode rules are held to WCAG 2.2 AA."""
    page = open_page(browser, site, refused, DESKTOP, *parts, scheme=scheme)
    try:
        page.evaluate(AXE.read_text(encoding="utf-8"))
        result: dict[str, Any] = page.evaluate(
            "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG
        )
        problems = [
            f"{v['id']}: {v['help']} ({len(v['nodes'])}x, e.g. {v['nodes'][0]['html'][:120]})"
            for v in result["violations"]
        ]
        print(
            f"\naxe {'/'.join(parts)} {scheme}: {len(problems)} violations, "
            f"{len(result['passes'])} rules passed"
        )
        assert problems == []
        assert len(result["passes"]) > 10
    finally:
        page.close()
