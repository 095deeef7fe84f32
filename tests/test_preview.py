"""`mailer preview`: the email at phone and desktop widths, its text part and its web
version, with the issue folder's images, rebuilt and reloaded when a file changes."""

from __future__ import annotations

import http.client
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import sync_playwright

from conftest import CHROMIUM, CHROMIUM_ARGS
from mailer.site.preview import Preview, serve
from send_helpers import Lines, mailer_process

ISSUE = "issues/2021-12/issue.yaml"
TITLE = "Child Exploitation Risk Assessment and Review (CERAR) process"


@pytest.fixture
def preview(newsletter: Path) -> Iterator[tuple[str, Preview]]:
    server, watched = serve(newsletter, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield watched.base_url, watched
    finally:
        watched.stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=60)


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, timeout=60, **kwargs)


def news_after(base: str, seen: str) -> str:
    """The preview's version once it differs from ``seen``: each request waits for news (a
    long poll), so this waits for the watcher, however busy the machine is."""
    for _ in range(20):
        version = str(get(f"{base}/_preview/changes", params={"seen": seen}).json()["version"])
        if version != seen:
            return version
    raise AssertionError("the preview never noticed the change")


def edit(root: Path, old: str, new: str) -> None:
    path = root / ISSUE
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_the_preview_shows_both_widths_the_text_part_and_serves_the_images(
    newsletter: Path, preview: tuple[str, Preview]
) -> None:
    base, _ = preview
    page = get(f"{base}/_preview/2021-12/")
    assert page.status_code == 200
    assert "width='375'" in page.text and "width='700'" in page.text
    assert "<h2>Text part</h2><pre>CSCP Newsletter – December 2021" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    email = get(f"{base}/_preview/2021-12/email.html").text
    # Images come from this server, not from base_url, which does not have them yet.
    image = f"{base}/2021-12/images/ofsted.png"
    assert f'src="{image}"' in email
    assert get(image).content == (newsletter / "issues/2021-12/images/ofsted.png").read_bytes()
    # Each reader's own links lead to a page that says what they are.
    assert "%%MAILER_" not in email and "/_preview/personal" in email
    web = get(f"{base}/2021-12/")
    assert web.status_code == 200 and TITLE in web.text
    assert "script-src" not in web.headers["content-security-policy"]
    assert get(f"{base}/").status_code == 200


def test_the_preview_serves_nothing_else_and_only_to_its_own_address(
    preview: tuple[str, Preview],
) -> None:
    base, _ = preview
    host, port = base.removeprefix("http://").split(":")
    for path in ("/2021-12/../../mailer.toml", "/2021-12/issue.yaml", "/.mailer/secret_key"):
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("GET", path)
        assert conn.getresponse().status == 404, path
        conn.close()
    # Another site's page cannot read it through a rebound DNS name.
    assert get(f"{base}/_preview/2021-12/", headers={"Host": "evil.example"}).status_code == 400
    assert httpx.post(f"{base}/_preview/2021-12/", timeout=60).status_code == 501


def test_a_change_is_rebuilt_and_a_mistake_is_shown_until_it_is_fixed(
    newsletter: Path, preview: tuple[str, Preview]
) -> None:
    base, _ = preview
    seen = news_after(base, "")
    edit(newsletter, TITLE, "CERAR: the new process")
    # The page's request for news is answered when the watcher sees the change.
    seen = news_after(base, seen)
    assert "CERAR: the new process" in get(f"{base}/_preview/2021-12/email.html").text

    edit(newsletter, "  - type: news\n", "\t- type: news\n")
    seen = news_after(base, seen)
    page = get(f"{base}/_preview/2021-12/").text
    assert "2021-12 cannot be shown yet" in page
    assert "use spaces, not tabs" in page and "issues/2021-12/issue.yaml:" in page
    edit(newsletter, "\t- type: news\n", "  - type: news\n")
    news_after(base, seen)
    assert "cannot be shown yet" not in get(f"{base}/_preview/2021-12/").text


def test_in_a_browser_the_images_show_and_the_page_reloads_itself(
    newsletter: Path, preview: tuple[str, Preview]
) -> None:
    base, _ = preview
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{base}/_preview/2021-12/")
            phone = page.frame_locator("iframe[width='375']")
            phone.locator("img").first.wait_for()
            # Every picture loaded: the reader sees images, not their alt text.
            frame = next(f for f in page.frames if f.url.endswith("email.html"))
            frame.wait_for_function(
                "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)"
            )
            version = page.evaluate("document.documentElement.dataset.version")
            edit(newsletter, TITLE, "Reloaded by itself")
            page.wait_for_function(
                "v => document.documentElement.dataset.version !== v", arg=version, timeout=60_000
            )
            phone.get_by_role("heading", name="Reloaded by itself").wait_for(timeout=60_000)
        finally:
            browser.close()


def test_mailer_preview_prints_its_address_and_stops_on_ctrl_c(newsletter: Path) -> None:
    process = mailer_process(newsletter, "preview", "2021-12", "--port", "0", "--no-browser")
    assert process.stdout is not None
    lines = Lines(process.stdout)
    try:
        line = lines.wait_for("Previewing on ")
        url = line.split("Previewing on ")[1].split()[0]
        assert url.endswith("/_preview/2021-12/")
        assert get(url).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
        lines.close()
        assert process.stderr is not None
        process.stderr.close()
    assert process.returncode == 0
    assert "Preview stopped." in lines.text()


def test_mailer_preview_refuses_a_misspelt_issue(cli: Any) -> None:
    r = cli("preview", "2021-1", "--no-browser")
    assert r.exit_code == 1
    assert "did you mean '2021-12'?" in r.stderr
