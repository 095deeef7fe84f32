"""`mailer report`: a send with known outcomes shows exactly those numbers, names nobody
unless asked, and its page passes axe-core in Chromium."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from bounce_helpers import copies, enable_bounces, render
from conftest import CHROMIUM, CHROMIUM_ARGS, REPO
from send_helpers import addresses, make_list, smtp_env
from smtp_server import Handler, SMTPServer

PRACTITIONERS = addresses(8, "p")
SCHOOLS = [*addresses(2, "s"), PRACTITIONERS[0]]
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO / "tests" / "screenshots"

# What came back after the send, and to whom.
RETURNED = [
    ("exchange-5.1.1.eml", PRACTITIONERS[0]),
    ("gmail-5.1.1.eml", PRACTITIONERS[1]),
    ("postfix-4.4.1-failed.eml", PRACTITIONERS[2]),
    ("m365-5.7.1-policy.eml", PRACTITIONERS[3]),
    ("arf-yahoo-abuse.eml", PRACTITIONERS[4]),
    ("unsubscribe-mailto-subject.eml", PRACTITIONERS[5]),
    ("ooo-exchange-automatic-reply.eml", PRACTITIONERS[6]),
]
OUTCOMES = [
    *("recipients", "accepted", "delivered", "hard", "soft"),
    *("refused", "skipped", "waiting", "unknown", "policy", "complained", "unsubscribed"),
]
EXPECTED = {
    "all": dict(zip(OUTCOMES, (10, 9, 6, 2, 1, 1, 0, 0, 0, 1, 1, 2), strict=True)),
    "practitioners": dict(zip(OUTCOMES, (8, 7, 4, 2, 1, 1, 0, 0, 0, 1, 1, 1), strict=True)),
    "schools": dict(zip(OUTCOMES, (3, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 1), strict=True)),
}


@pytest.fixture
def reported(cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A send to two lists through SMTP, one address refused, and mail that came back."""
    enable_bounces(newsletter)
    make_list(cli, newsletter, "practitioners", PRACTITIONERS)
    make_list(cli, newsletter, "schools", SCHOOLS, name="Schools DSLs")
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    with SMTPServer(Handler(perm_fail={PRACTITIONERS[7]})) as server:
        smtp_env(monkeypatch, server.port)
        r = cli("send", "2025-11", "--list", "practitioners", "--list", "schools", "--yes")
    assert r.exit_code == 0, r.output
    by_email = copies(newsletter)
    for name, email in RETURNED:
        r = cli("bounces", "process", "-", input=render(name, by_email[email], newsletter).decode())
        assert r.exit_code == 0, r.output
    r = cli("subscribers", "unsubscribe", SCHOOLS[0], "--list", "schools")
    assert r.exit_code == 0, r.output
    yield newsletter


def figures(text: str) -> dict[tuple[str, str, str], str]:
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["section", "group", "measure", "value"]
    return {(s, g, m): v for s, g, m, v in rows[1:]}


def test_the_report_shows_exactly_the_known_outcomes(cli: Any, reported: Path) -> None:
    r = cli("report", "2025-11", "--csv")
    assert r.exit_code == 0, r.output
    assert "Wrote build/2025-11/report.html" in r.stdout
    assert "Wrote build/2025-11/report.csv" in r.stdout
    assert "  Delivered (no failure reported):" in r.stdout
    assert "Flagged: 1 copy was refused for policy or reputation" in r.stdout
    got = figures((reported / "build/2025-11/report.csv").read_text(encoding="utf-8"))
    for group, expected in EXPECTED.items():
        for measure, value in expected.items():
            assert got[("outcomes", group, measure)] == str(value), (group, measure)
    reasons = {g: int(v) for (s, g, _m), v in got.items() if s == "failures by reason"}
    assert reasons == {"5.1.1": 3, "4.4.1": 1, "5.7.1": 1}
    assert got[("send", "2025-11", "lists")] == "practitioners schools"
    accepted = sum(int(v) for (s, _g, _m), v in got.items() if s == "accepted over time")
    assert accepted == 9
    html = (reported / "build/2025-11/report.html").read_text(encoding="utf-8")
    assert "<script" not in html
    assert "Link clicks are not counted" in html
    # Nothing identifies a person.
    for email in {*PRACTITIONERS, *SCHOOLS}:
        assert email not in html and email not in r.stdout
    assert "@example.org" not in html
    assert not (reported / ".mailer/reports").exists()


def test_people_are_named_only_when_asked_and_never_in_build(cli: Any, reported: Path) -> None:
    assert cli("report", "2025-11").exit_code == 0
    public = (reported / "build/2025-11/report.html").read_text(encoding="utf-8")
    r = cli("report", "2025-11", "--people", "--csv")
    assert r.exit_code == 0, r.output
    assert "Wrote .mailer/reports/2025-11/report.html" in r.stdout
    private = reported / ".mailer/reports/2025-11/report.html"
    assert private.stat().st_mode & 0o077 == 0
    text = private.read_text(encoding="utf-8")
    for email in (*PRACTITIONERS[:6], PRACTITIONERS[7], SCHOOLS[0]):
        assert email in text, email
    assert PRACTITIONERS[6] not in text  # an out-of-office reply: delivered
    assert (reported / "build/2025-11/report.html").read_text(encoding="utf-8") == public
    rows = (reported / ".mailer/reports/2025-11/report.csv").read_text(encoding="utf-8")
    assert f"people,{PRACTITIONERS[7]},refused (failed-permanent),5.1.1" in rows


def test_a_report_before_any_send_is_one_line(cli: Any, newsletter: Path) -> None:
    r = cli("report", "2025-11")
    assert r.exit_code == 1
    assert r.stderr == "Error: 2025-11 has never been sent: nothing to show\n"


AXE_RUN = """async () => {
  const result = await axe.run(document, {runOnly: {type: 'tag',
    values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']}});
  return result.violations.map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '));
}"""


def test_the_report_page_passes_axe_core_in_chromium(cli: Any, reported: Path) -> None:
    assert cli("report", "2025-11").exit_code == 0
    assert cli("report", "2025-11", "--people").exit_code == 0
    pages = [
        reported / "build/2025-11/report.html",
        reported / ".mailer/reports/2025-11/report.html",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for path in pages:
                for width in (375, 800):
                    page = browser.new_page(viewport={"width": width, "height": 900})
                    page.route(
                        "**/*",
                        lambda route: (
                            route.continue_()
                            if route.request.url.startswith("file:")
                            else route.abort()
                        ),
                    )
                    page.goto(path.as_uri(), wait_until="load")
                    page.add_script_tag(path=str(AXE))
                    assert page.evaluate(AXE_RUN) == [], (path, width)
                    assert page.evaluate("document.documentElement.scrollWidth") <= width
                    charts = page.locator("svg[role=img]")
                    assert charts.count() == 2
                    for i in range(2):
                        name = charts.nth(i).get_attribute("aria-labelledby")
                        assert name and all(
                            page.locator(f"#{n}").count() == 1 for n in name.split()
                        )
                    if width == 800 and "build" in path.parts:
                        SCREENSHOTS.mkdir(exist_ok=True)
                        page.screenshot(path=str(SCREENSHOTS / "report-800.png"), full_page=True)
                    page.close()
        finally:
            browser.close()


def test_what_a_server_said_cannot_become_a_spreadsheet_formula(cli: Any, reported: Path) -> None:
    copy = copies(reported)[SCHOOLS[1]]
    raw = render("postfix-4.4.1-failed.eml", copy, reported).decode()
    raw = raw.replace("Status: 4.4.1", "Status:").replace(
        "Diagnostic-Code: X-Postfix; connect", 'Diagnostic-Code: =HYPERLINK("https://x")'
    )
    assert cli("bounces", "process", "-", input=raw).exit_code == 0
    assert cli("report", "2025-11", "--people", "--csv").exit_code == 0
    rows = list(
        csv.reader(
            io.StringIO(
                (reported / ".mailer/reports/2025-11/report.csv").read_text(encoding="utf-8")
            )
        )
    )
    [row] = [r for r in rows if r[:2] == ["people", SCHOOLS[1]]]
    assert row[3].startswith("'=HYPERLINK")


def test_the_report_shows_clicks_per_link_when_they_are_counted(cli: Any, reported: Path) -> None:
    from mailer import config
    from mailer.store import clicks
    from mailer.store.database import open_db

    toml = reported / "mailer.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + "\n[web]\ntrack_clicks = true\n")
    settings = config.load(reported)
    with open_db(settings) as database, database.session(write=True) as session:
        for url, n in (("https://learning.nspcc.org.uk/a", 3), ("https://example.org/b", 1)):
            for _ in range(n):
                clicks.record_click(session, "2025-11", url)
    r = cli("report", "2025-11", "--csv")
    assert r.exit_code == 0, r.output
    got = figures((reported / "build/2025-11/report.csv").read_text(encoding="utf-8"))
    assert got[("clicks", "https://learning.nspcc.org.uk/a", "clicks")] == "3"
    assert got[("clicks", "https://example.org/b", "clicks")] == "1"
    html = (reported / "build/2025-11/report.html").read_text(encoding="utf-8")
    assert "Link clicks are not counted" not in html
    assert "https://learning.nspcc.org.uk/a" in html


def test_people_skipped_at_their_turn_and_copies_not_sent_yet_are_counted_apart(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = addresses(4, "k")
    make_list(cli, newsletter, "practitioners", people)
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    server = SMTPServer(Handler())  # not started yet: the send pauses with nobody mailed
    smtp_env(monkeypatch, server.port)
    assert cli("send", "2025-11", "--list", "practitioners", "--yes").exit_code == 1
    assert cli("report", "2025-11", "--csv").exit_code == 0
    got = figures((newsletter / "build/2025-11/report.csv").read_text(encoding="utf-8"))
    assert got[("outcomes", "all", "waiting")] == "4"
    assert got[("outcomes", "all", "unknown")] == "0"

    assert cli("subscribers", "unsubscribe", people[0]).exit_code == 0
    with server:
        assert cli("send", "2025-11", "--resume").exit_code == 0
    assert sorted(server.handler.recipients()) == people[1:]
    r = cli("report", "2025-11", "--people", "--csv")
    assert r.exit_code == 0, r.output
    rows = (newsletter / ".mailer/reports/2025-11/report.csv").read_text(encoding="utf-8")
    got = figures(rows)
    expected = {"accepted": "3", "skipped": "1", "waiting": "0", "unknown": "0"}
    assert {m: got[("outcomes", "all", m)] for m in expected} == expected
    assert f"people,{people[0]},not mailed (skipped)" in rows
