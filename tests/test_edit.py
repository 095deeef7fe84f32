"""`mailer edit`: a real editor process on 127.0.0.1, driven by Debian's Chromium through
Playwright (with script and without), every page checked by axe-core for WCAG 2.2 A and
AA failures; and the round trip of issue.yaml through the form, comments kept."""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from conftest import PHONE, REPO
from mailer.content import document
from send_helpers import Lines, mailer_process

AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
# The editor runs on this day, whatever the machine's date: its notes (awareness days,
# sessions already past) are the same on every run. On this day they include an awareness
# day whose note carries a long web address.
TODAY = dt.date(2026, 12, 8)
COURSE = "Understanding the Levels of Need"
HAND_COMMENT = "# Checked with the training team by phone."


def png(width: int = 4, height: int = 3) -> bytes:
    """A small real PNG picture."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x80\x40\x20" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@dataclass
class Running:
    url: str
    root: Path
    process: Any
    lines: Lines

    def issue(self, slug: str) -> str:
        return f"{self.url}issue/{slug}"


def stop(running: Running) -> str:
    """Ctrl-C, as in the terminal; what the editor printed to stderr."""
    running.process.send_signal(signal.SIGINT)
    running.process.wait(timeout=120)
    running.lines.close()
    errors = running.process.stderr.read().decode("utf-8", "replace")
    running.process.stderr.close()
    return str(errors)


@pytest.fixture
def editor(newsletter: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    noon = dt.datetime.combine(TODAY, dt.time(12), dt.UTC)
    monkeypatch.setenv("MAILER_CLOCK_OFFSET", str((noon - dt.datetime.now(dt.UTC)).total_seconds()))
    process = mailer_process(newsletter, "edit", "--no-browser")
    lines = Lines(process.stdout)
    line = lines.wait_for("Editing on ")
    url = line.split("Editing on ")[1].split()[0]
    running = Running(url, newsletter, process, lines)
    try:
        yield running
    finally:
        if process.poll() is None:
            stop(running)


def accessible(page: Page) -> None:
    """axe-core finds no WCAG 2.2 A/AA violation, and nothing is wider than a phone. The
    email in the preview frames is the newsletter's, checked by its own tests."""
    page.evaluate(AXE.read_text(encoding="utf-8"))
    result: dict[str, Any] = page.evaluate(
        "tags => axe.run(document, {iframes: false, runOnly: {type: 'tag', values: tags}})", WCAG
    )
    problems = [
        f"{v['id']}: {v['help']} ({len(v['nodes'])}x, e.g. {v['nodes'][0]['html'][:120]})"
        for v in result["violations"]
    ]
    assert problems == [], f"{page.url}: {problems}"
    assert len(result["passes"]) > 10
    # What pushes the page sideways: elements whose content is wider than they are.
    wide = page.evaluate(
        """() => [...document.querySelectorAll('main *')]
            .filter(e => e.scrollWidth > e.clientWidth + 1)
            .filter(e => getComputedStyle(e).overflowX === 'visible')
            .map(e => e.tagName + ': ' + (e.textContent || '').trim().slice(0, 80))"""
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE, f"{page.url}: {wide}"


def press(page: Page, name: str) -> None:
    with page.expect_navigation(wait_until="load"):
        page.get_by_role("button", name=name, exact=True).first.click()


def test_write_a_new_issue_in_the_browser(editor: Running, page: Page, cli: Any) -> None:
    page.goto(editor.url)
    accessible(page)
    page.get_by_label("Its name").fill("2099-01")
    page.get_by_label("The date it goes out").fill((TODAY + dt.timedelta(days=20)).isoformat())
    press(page, "Create the issue")
    assert page.locator("h1").inner_text() == "Editing 2099-01"
    path = editor.root / "issues/2099-01/issue.yaml"
    # A comment written by hand in the file before it is opened.
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("\nsections:", f"\n{HAND_COMMENT}\nsections:", 1), "utf-8")
    page.goto(editor.issue("2099-01"))
    accessible(page)

    # A training course with two sessions, one of them already past.
    press(page, "Add Training")
    section = page.locator("section.section").nth(1)
    assert "2. Training" in section.locator("h2").inner_text()
    page.locator("#f-sections-1-title").fill(COURSE)
    page.locator("#f-sections-1-body").fill("Who the course is for and what it covers.")
    page.locator("#f-sections-1-booking-url").fill("https://example.org/book/levels-of-need")
    press(page, "Add a session to section 2")
    press(page, "Add a session to section 2")
    past, ahead = TODAY - dt.timedelta(days=10), TODAY + dt.timedelta(days=40)
    for j, (day, venue) in enumerate(((past, "Whitehaven"), (ahead, "Microsoft Teams"))):
        page.locator(f"#f-sections-1-sessions-{j}-date").fill(day.isoformat())
        page.locator(f"#f-sections-1-sessions-{j}-start").fill("13:30")
        page.locator(f"#f-sections-1-sessions-{j}-end").fill("16:30")
        page.locator(f"#f-sections-1-sessions-{j}-venue").fill(venue)
    page.locator("#f-sections-1-sessions-1-online").check()
    page.locator("#f-sections-1-sessions-1-url").fill("https://example.org/teams/levels")
    press(page, "Update the preview")
    accessible(page)

    # The course goes first.
    press(page, "Move section 2 up")
    assert page.locator("section.section h2").nth(0).inner_text() == f"1. Training: {COURSE}"
    assert page.locator("section.section h2").nth(1).inner_text().startswith("2. Partnership news")

    # A picture for the news, checked as the build checks it.
    picture = editor.root / "family.png"
    picture.write_bytes(png())
    page.locator("#f-sections-1-image-upload").set_input_files(str(picture))
    page.locator("#f-sections-1-image-alt").fill("A family support worker with a parent")
    press(page, "Upload the picture for section 2")
    assert page.locator("#f-sections-1-image-src").input_value() == "images/family.png"
    assert (editor.root / "issues/2099-01/images/family.png").read_bytes() == png()
    page.locator("#f-sections-1-title").fill("Family Help: what changes in January")
    page.locator("#f-sections-1-body").fill("The new Family Help service starts in January.")
    page.locator("#f-preheader").fill(
        "The Levels of Need course, and what changes in Family Help in January"
    )

    press(page, "Save issue.yaml")
    expect(page.locator("#status")).to_have_text("Saved 2099-01/issue.yaml.")
    accessible(page)
    saved = path.read_text(encoding="utf-8")
    assert HAND_COMMENT in saved
    assert "# required: the email subject line" in saved  # the template's own comments
    assert saved.index(COURSE) < saved.index("Family Help: what changes")
    assert 'start: "13:30"' in saved and "src: images/family.png" in saved
    assert f"date: {past.isoformat()}" in saved and "online: true" in saved
    # The save is in the issue's history.
    (event,) = json.loads(cli("history", "2099-01", "--json").stdout)
    assert event["event"] == "saved" and len(event["content_hash"]) == 16

    # The past session's check finding is beside its date; the other session has none.
    notes = page.locator("#f-sections-0-sessions-0-date-notes")
    expect(notes).to_contain_text("is before the send date")
    expect(notes).to_contain_text("session-past")
    assert "session-past" not in page.locator("#f-sections-0-sessions-1-date-notes").inner_text()
    assert page.locator("#f-sections-0-sessions-0-date").get_attribute("aria-invalid") == "true"

    # The email beside the form shows the course, at both widths, with its picture.
    phone = page.frame_locator("iframe[title='The email on a phone']")
    expect(phone.get_by_role("heading", name=COURSE)).to_be_visible()
    expect(phone.get_by_text("Microsoft Teams").first).to_be_attached()
    desktop = page.frame_locator("iframe[title='The email on a desktop']")
    expect(desktop.locator("img[alt='A family support worker with a parent']")).to_be_attached()
    frame = next(f for f in page.frames if f.url.endswith("email.html"))
    frame.wait_for_function(
        "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)"
    )

    # An edit made on disk meanwhile is never overwritten: the save is refused and the
    # page shows what changed on disk.
    on_disk = saved.replace("Family Help: what changes in January", "Family Help in 2099")
    path.write_text(on_disk, encoding="utf-8")
    page.locator("#f-subject").fill("CSCP Newsletter – a new subject")
    page.get_by_role("button", name="Save issue.yaml").first.click()
    alert = page.locator("#conflict")
    expect(alert).to_contain_text("changed on disk since you opened it: nothing was saved")
    expect(alert.locator("pre").first).to_contain_text('+    title: "Family Help in 2099"')
    assert path.read_text(encoding="utf-8") == on_disk
    accessible(page)


def test_the_form_works_without_script(editor: Running, browser: Browser) -> None:
    context = browser.new_context(
        viewport={"width": PHONE, "height": 800}, java_script_enabled=False
    )
    page = context.new_page()
    try:
        page.goto(editor.issue("2021-12"))
        count = page.locator("section.section").count()
        press(page, "Add Training")
        i = count
        page.locator(f"#f-sections-{i}-title").fill(COURSE)
        press(page, f"Add a session to section {i + 1}")
        page.locator(f"#f-sections-{i}-sessions-0-date").fill("2099-03-04")
        page.locator(f"#f-sections-{i}-sessions-0-start").fill("09:30")
        page.locator(f"#f-sections-{i}-sessions-0-end").fill("12:00")
        page.locator(f"#f-sections-{i}-sessions-0-venue").fill("Carlisle")
        press(page, f"Move section {i + 1} up")
        assert page.locator("section.section h2").nth(i - 1).inner_text().endswith(COURSE)
        press(page, "Save issue.yaml")
        expect(page.locator("#status")).to_have_text("Saved 2021-12/issue.yaml.")
        saved = (editor.root / "issues/2021-12/issue.yaml").read_text(encoding="utf-8")
        assert f"title: {COURSE}" in saved and 'start: "09:30"' in saved
        phone = page.frame_locator("iframe[title='The email on a phone']")
        expect(phone.get_by_role("heading", name=COURSE)).to_be_visible()
    finally:
        context.close()


def test_the_preview_and_the_notes_follow_typing_with_script(
    editor: Running, browser: Browser
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(editor.issue("2021-12"))
        phone = page.frame_locator("iframe[title='The email on a phone']")
        expect(phone.locator("h1, h2, h3").first).to_be_visible()
        page.locator("#f-sections-0-title").fill("Typed, not yet saved")
        expect(phone.get_by_role("heading", name="Typed, not yet saved")).to_be_visible(
            timeout=60_000
        )
        # A mistake is shown beside its field as it is typed, and goes when it is fixed.
        page.locator("#f-sections-0-title").fill("")
        notes = page.locator("#f-sections-0-title-notes")
        expect(notes).to_contain_text("must not be empty", timeout=60_000)
        page.locator("#f-sections-0-title").fill("Fixed")
        expect(notes).to_have_text("", timeout=60_000)
        # Nothing was written.
        assert "Typed, not yet saved" not in (editor.root / "issues/2021-12/issue.yaml").read_text(
            encoding="utf-8"
        )
        # Enter in a field only updates the preview: it never presses another button.
        sections = page.locator("section.section").count()
        with page.expect_navigation(wait_until="load"):
            page.locator("#f-subject").press("Enter")
        assert page.locator("section.section").count() == sections
    finally:
        page.close()


def test_a_file_that_is_not_a_picture_is_refused_and_not_kept(editor: Running, page: Page) -> None:
    page.goto(editor.issue("2021-12"))
    fake = editor.root / "notes.png"
    fake.write_bytes(b"this is text, not a picture")
    page.locator("#f-sections-0-image-upload").set_input_files(str(fake))
    press(page, "Upload the picture for section 1")
    expect(page.get_by_role("alert")).to_contain_text("not really a PNG, JPEG, GIF or WebP")
    assert not (editor.root / "issues/2021-12/images/notes.png").exists()
    accessible(page)


def test_only_this_run_with_its_own_address_can_use_it(editor: Running) -> None:
    base = editor.url.rstrip("/")
    origin, _, token = base.rpartition("/")
    assert len(token) >= 32
    assert httpx.get(f"{base}/issue/2021-12", timeout=60).status_code == 200
    # Without the token, or with another, there is nothing there.
    assert httpx.get(f"{origin}/issue/2021-12", timeout=60).status_code == 404
    assert httpx.get(f"{origin}/{'x' * len(token)}/", timeout=60).status_code == 404
    # A page elsewhere cannot reach it through a rebound DNS name, nor post its forms.
    rebound = httpx.get(f"{base}/", headers={"Host": "evil.example:80"}, timeout=60)
    assert rebound.status_code == 400
    form = {"action": "save", "base": "", "draft": "subject: x\n"}
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        refused = httpx.post(f"{base}/issue/2021-12", data=form, headers=headers, timeout=60)
        assert refused.status_code == 403
    assert "subject: x" not in (editor.root / "issues/2021-12/issue.yaml").read_text("utf-8")
    # Only the pictures an issue folder holds are served, nothing else of the folder.
    assert httpx.get(f"{base}/site/2021-12/images/ofsted.png", timeout=60).status_code == 200
    for path in ("2021-12/issue.yaml", "2021-12/../../mailer.toml", "2021-12/.mailer/secret_key"):
        assert httpx.get(f"{base}/site/{path}", timeout=60).status_code == 404


def test_ctrl_c_stops_it_cleanly(editor: Running) -> None:
    errors = stop(editor)
    assert editor.process.returncode == 0
    assert "Editor stopped." in editor.lines.text()
    assert "Traceback" not in errors


def test_a_misspelt_issue_is_refused(cli: Any) -> None:
    r = cli("edit", "2021-1", "--no-browser")
    assert r.exit_code == 1
    assert "did you mean '2021-12'?" in r.stderr


# -- the document behind the form -------------------------------------------------------------


@pytest.mark.parametrize("slug", ["2021-12", "2025-11"])
def test_an_issue_goes_through_the_form_unchanged(newsletter: Path, slug: str) -> None:
    text = (newsletter / f"issues/{slug}/issue.yaml").read_text(encoding="utf-8")
    doc = document.read(text)
    values = document.view(doc)
    form = {"subject": values["subject"], "date": values["date"]}
    for i, section in enumerate(values["sections"]):
        for key in ("title", "body", "closes"):
            form[f"sections[{i}].{key}"] = section[key]
        for j, session in enumerate(section["sessions"]):
            for key in ("date", "start", "end", "venue", "url", "note"):
                form[f"sections[{i}].sessions[{j}].{key}"] = session[key]
            form[f"sections[{i}].sessions[{j}].online:shown"] = "1"
            if session["online"] == "true":
                form[f"sections[{i}].sessions[{j}].online"] = "true"
    document.apply(doc, form)
    assert document.write(doc, text) == text


def test_a_changed_value_keeps_comments_quotes_and_unknown_keys(tmp_path: Path) -> None:
    text = (
        "# The January issue.\n"
        'subject: "News – January"   # the subject line\n'
        "date: 2026-01-06\n"
        "sections:\n"
        "  - type: training\n"
        "    title: Levels of Need\n"
        "    x-owner: training team   # a key of someone else's\n"
        "    sessions:\n"
        '      - {date: 2026-01-20, start: "13:30", end: "16:30", venue: Whitehaven}\n'
    )
    doc = document.read(text)
    document.apply(
        doc,
        {
            "subject": "News: January",
            "sections[0].sessions[0].start": "14:00",
            "sections[0].body": "First line.\n\nSecond paragraph.",
        },
    )
    out = document.write(doc, text)
    assert out.startswith("# The January issue.\n")
    assert re.search(r'\nsubject: "News: January" +# the subject line\n', out)
    assert "x-owner: training team   # a key of someone else's" in out
    assert 'start: "14:00", end: "16:30"' in out
    assert "    body: |\n      First line.\n\n      Second paragraph.\n" in out
    with pytest.raises(Exception, match="changed on disk"):
        (tmp_path / "issue.yaml").write_text("subject: other\n", encoding="utf-8")
        document.save(tmp_path, text, out)
    assert (tmp_path / "issue.yaml").read_text(encoding="utf-8") == "subject: other\n"
