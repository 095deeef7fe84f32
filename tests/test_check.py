"""`mailer check` end to end, and the commands that refuse an issue with errors.

The example issues must pass on the day they went out, and fail with every session and
deadline that had passed a month later. SpamAssassin runs for real (the Makefile installs
Debian's package); the --online checks fetch from a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from check_helpers import SITE_HOST, FarSide, enforce, news, run_one, write_issue
from conftest import Result
from mailer import checks, config
from mailer.checks import CHECKS, spam
from mailer.checks.registry import Context
from mailer.checks.source import Source
from mailer.config import Settings
from mailer.content.awareness import calendar, parse
from mailer.errors import ChecksFailed, ConfigError
from mailer.render import compile_slug
from mailer.scheduling import runner
from mailer.store import database as db
from send_helpers import addresses, make_list, sql
from test_check_rules import CASES

UTC = dt.UTC


def check_json(cli: Any, *args: str) -> tuple[int, list[dict[str, Any]]]:
    r: Result = cli("check", *args, "--json")
    return r.exit_code, json.loads(r.stdout)


# --- The example issues ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slug", "went_out"), [("2021-12", "2021-12-01"), ("2025-11", "2025-10-30")]
)
def test_the_example_issues_have_no_errors_on_the_day_they_went_out(
    cli: Any, slug: str, went_out: str
) -> None:
    code, found = check_json(cli, slug, "--send-date", went_out)
    assert code == 0
    assert [f for f in found if f["severity"] == "error"] == []
    # SpamAssassin ran on a real message and scored it low: neither a score nor a note.
    assert not {f["code"] for f in found} & {"spam-score", "spam-likely", "spam-not-checked"}


def test_a_month_later_every_past_session_and_deadline_of_november_2025_is_an_error(
    cli: Any, newsletter: Path
) -> None:
    code, found = check_json(cli, "2025-11", "--send-date", "2025-12-01")
    assert code == 1
    text = (newsletter / "issues/2025-11/issue.yaml").read_text(encoding="utf-8").splitlines()
    # Every session of November 2025, written `- {date: 2025-11-..` or `- date: 2025-11-..`.
    past_sessions = {
        n for n, line in enumerate(text, 1) if re.match(r"\s*- \{?date: 2025-11-", line)
    }
    assert len(past_sessions) == 5
    errors = {(f["code"], f["line"]) for f in found if f["severity"] == "error"}
    closes = next(n for n, line in enumerate(text, 1) if "closes: 2025-11-02" in line)
    awareness = next(n for n, line in enumerate(text, 1) if "date: 2025-11-05" in line)
    assert errors == {("session-past", n) for n in past_sessions} | {
        ("deadline-past", closes),
        ("awareness-past", awareness),
    }


def test_the_report_groups_findings_by_severity_with_file_line_and_fix(cli: Any) -> None:
    r = cli("check", "2025-11", "--send-date", "2025-12-01")
    assert r.exit_code == 1
    lines = r.stdout.splitlines()
    assert lines[0].startswith(
        "2025-11 checked for a send on Monday 1 December 2025 (--send-date): 7 errors, "
    )
    assert lines.index("Errors") < lines.index("Notes")
    first = lines[lines.index("Errors") + 1]
    assert re.match(r"  issues/2025-11/issue\.yaml:\d+: .+ \[\w[\w-]+\]$", first), first
    assert lines[lines.index("Errors") + 2].startswith("      fix: ")


def test_json_findings_have_the_documented_keys(cli: Any) -> None:
    _, found = check_json(cli, "2025-11", "--send-date", "2025-12-01")
    assert found
    for f in found:
        assert list(f) == ["severity", "code", "message", "file", "line", "hint"]
        assert f["severity"] in ("error", "warning", "note")
        assert f["code"] in CHECKS


def test_a_bad_send_date_is_one_line(cli: Any) -> None:
    r = cli("check", "2025-11", "--send-date", "next week")
    assert r.exit_code == 1
    assert r.stderr == (
        "Error: --send-date 'next week' is not a date (write a date like \"2026-12-07\", "
        '"7/12/2026" or "7 December 2026")\n'
    )


def test_every_check_has_a_fixture_that_trips_it() -> None:
    elsewhere = {
        "image-alt-missing",
        "calendar-differs",
        "calendar-link-missing",
        "colour-contrast",
        "text-missing-link",
        "subject-length",
        "preheader-length",
        "spam-likely",
        "spam-score",
        "spam-not-checked",
        "link-broken",
        "link-redirect",
        "web-version-missing",
    }
    assert set(CHECKS) == set(CASES) | elsewhere


def test_docs_check_md_lists_every_check_with_its_severity() -> None:
    text = (Path(__file__).parent.parent / "docs" / "check.md").read_text(encoding="utf-8")
    for check in CHECKS.values():
        assert re.search(rf"^\| `{check.code}` \| {check.severity} \|", text, re.MULTILINE), (
            check.code
        )


# --- SpamAssassin, for real ----------------------------------------------------------------

SPAM = news(
    "Dear friend, CONGRATULATIONS!!! You have been selected to receive $1,000,000 USD.\n"
    "100% FREE. No credit card required. Act now, this offer expires soon! Buy cheap\n"
    "Viagra, Cialis and Xanax online with no prescription. Lose weight fast and earn\n"
    "cash from home, $5000 per week guaranteed. Risk free, money back.",
    title="YOU HAVE WON A CASH PRIZE",
)
DOUBTFUL = news("Dear friend, places are limited, so act now. It is 100% free of charge.")


def test_spamassassin_scores_a_real_message_of_the_issue(newsletter: Path) -> None:
    slug = write_issue(newsletter, SPAM, subject="FREE MONEY!!! CLAIM YOUR CASH PRIZE NOW")
    (found,) = run_one(newsletter, slug, "spam-likely")
    assert re.match(r"SpamAssassin scores it \d+\.\d \(.*DEAR_FRIEND", found.message)
    assert float(found.message.split()[3]) >= 5.0
    slug = write_issue(newsletter, DOUBTFUL)
    (found,) = run_one(newsletter, slug, "spam-score")
    assert 2.0 < float(found.message.split()[3]) < 5.0
    assert run_one(newsletter, slug, "spam-likely") == []
    slug = write_issue(newsletter, news("The partnership has appointed a new chair."))
    assert run_one(newsletter, slug, "spam-score") == []


@pytest.mark.parametrize("slug", ["2025-11", "2021-12"])
def test_both_example_issues_score_zero_in_spamassassin(settings: Settings, slug: str) -> None:
    """The hidden preheader no longer costs HTML_FONT_LOW_CONTRAST (a font colour equal to
    the background): nothing that SpamAssassin's shipped rules score is left."""
    compiled = compile_slug(settings, slug)
    ctx = Context(settings, compiled, compiled.issue.date, Source(compiled.issue, settings.root))
    found = spam.score(ctx)
    assert isinstance(found, spam.Score), found
    print(f"\n{slug}: SpamAssassin {found.points} ({', '.join(found.rules)})")
    assert found.points == 0.0, found.rules
    assert "HTML_FONT_LOW_CONTRAST" not in found.rules


def test_without_spamassassin_a_note_says_how_to_install_it(
    newsletter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slug = write_issue(newsletter, news("The partnership has appointed a new chair."))
    assert run_one(newsletter, slug, "spam-not-checked") == []
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    (found,) = run_one(newsletter, slug, "spam-not-checked")
    assert found.message == "no spam score: spamassassin is not installed"
    assert "apt-get install spamassassin" in found.hint


# --- --online, against a real server -------------------------------------------------------


class _Site(BaseHTTPRequestHandler):
    pages: ClassVar[set[str]] = {"/ok", "/2026-03/", "/2026-03/images/ofsted.png"}
    agents: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.agents.append(self.headers.get("User-Agent", ""))
        if self.path == "/moved":
            self.send_response(301)
            self.send_header("Location", "/ok")
        elif self.path in self.pages:
            self.send_response(200)
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def far() -> Iterator[FarSide]:
    """A real HTTP server on 127.0.0.1 that the checks reach as SITE_HOST, a public site."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FarSide(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def site(far: FarSide) -> str:
    return f"http://{SITE_HOST}:{far.port}"


def _online_issue(root: Path, site: str, link: str, published: bool = True) -> str:
    path = root / "mailer.toml"
    text = path.read_text(encoding="utf-8").replace("https://news.example.org", site)
    path.write_text(text, encoding="utf-8")
    slug = "2026-03" if published else "2026-04"
    return write_issue(
        root,
        news("Read the guidance.").rstrip("\n")
        + f'\n    links:\n      - {{text: "The guidance notes", url: "{site}{link}"}}\n'
        + '    image: {src: images/ofsted.png, alt: "A magnifying glass over a chart"}\n',
        slug=slug,
    )


def test_online_reports_broken_links_and_redirects(
    newsletter: Path, site: str, far: FarSide
) -> None:
    net = far.network
    slug = _online_issue(newsletter, site, "/missing")
    (broken,) = run_one(newsletter, slug, "link-broken", online=True, network=net)
    assert broken.message == f'"{site}/missing": HTTP 404'
    assert _Site.agents[-1].startswith("mailer/")
    slug = _online_issue(newsletter, site, "/moved")
    assert run_one(newsletter, slug, "link-broken", online=True, network=net) == []
    (moved,) = run_one(newsletter, slug, "link-redirect", online=True, network=net)
    assert moved.message == f'"{site}/moved" redirects to "{site}/ok"'
    slug = _online_issue(newsletter, site, "/ok")
    assert run_one(newsletter, slug, "link-redirect", online=True, network=net) == []
    # Without --online nothing is fetched.
    assert run_one(newsletter, _online_issue(newsletter, site, "/missing"), "link-broken") == []


def test_online_checks_the_web_version_and_images_are_live(
    newsletter: Path, site: str, far: FarSide
) -> None:
    slug = _online_issue(newsletter, site, "/ok")
    assert run_one(newsletter, slug, "web-version-missing", online=True, network=far.network) == []
    slug = _online_issue(newsletter, site, "/ok", published=False)
    found = run_one(newsletter, slug, "web-version-missing", online=True, network=far.network)
    assert [f.message.split(" ")[1] for f in found] == ["web", "image"]
    assert found[0].message == f'the web version "{site}/2026-04/" is not live: HTTP 404'


# --- Silencing, and settings -----------------------------------------------------------------


def test_a_code_silenced_in_mailer_toml_is_not_reported(cli: Any, newsletter: Path) -> None:
    path = newsletter / "mailer.toml"
    path.write_text(
        path.read_text(encoding="utf-8") + 'ignore = ["session-past", "phone-in-text"]\n',
        encoding="utf-8",
    )
    _, found = check_json(cli, "2025-11", "--send-date", "2025-12-01")
    codes = {f["code"] for f in found}
    assert "session-past" not in codes and "phone-in-text" not in codes
    assert "deadline-past" in codes


def test_an_unknown_code_in_ignore_is_one_line_with_a_suggestion(
    cli: Any, newsletter: Path
) -> None:
    path = newsletter / "mailer.toml"
    path.write_text(
        path.read_text(encoding="utf-8") + 'ignore = ["link-generik"]\n', encoding="utf-8"
    )
    r = cli("check", "2025-11")
    assert r.exit_code == 1
    assert "checks.ignore: there is no check 'link-generik' (did you mean 'link-generic'?)" in (
        r.stderr
    )
    assert r.stderr.count("\n") == 1


def test_a_wrong_bank_holiday_region_is_refused(newsletter: Path) -> None:
    path = newsletter / "mailer.toml"
    path.write_text(path.read_text(encoding="utf-8") + 'bank_holidays = "XX"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"checks\.bank_holidays: must be one of ENG, WLS"):
        config.load(newsletter)


# --- Refusing to approve, send and schedule --------------------------------------------------


@pytest.fixture
def enforced(cli: Any, newsletter: Path) -> Path:
    enforce(newsletter)
    make_list(cli, newsletter, "practitioners", addresses(3))
    return newsletter


def test_approve_refuses_an_issue_with_errors_for_today(cli: Any, enforced: Path) -> None:
    r = cli("approve", "2025-11", "--by", "Sam Patel")
    assert r.exit_code == 1
    errors = r.stderr.splitlines()
    assert re.match(r"Error: 2025-11 has \d+ check errors for a send on \w+day ", errors[0])
    assert any("session-past" in line for line in errors)
    assert "mailer check 2025-11 --send-date" in errors[-1]
    assert sql(enforced, "SELECT COUNT(*) FROM approval") == [(0,)]


def test_send_refuses_unless_a_reason_is_given_and_status_shows_it(
    cli: Any, enforced: Path
) -> None:
    r = cli("approve", "2025-11", "--by", "Sam Patel", "--skip-checks", "example issue")
    assert r.exit_code == 0, r.output
    r = cli("send", "2025-11", "--list", "practitioners", "--yes")
    assert r.exit_code == 1
    assert "check errors for a send on" in r.stderr
    assert sql(enforced, "SELECT COUNT(*) FROM send") == [(0,)]
    reason = "dates confirmed with the trainers"
    r = cli("send", "2025-11", "--list", "practitioners", "--yes", "--skip-checks", reason)
    assert r.exit_code == 0, r.output
    assert re.search(
        r"^Going ahead despite \d+ check error\(s\) \(awareness-past, deadline-past, "
        r"session-past\): dates confirmed with the trainers$",
        r.stdout,
        re.MULTILINE,
    )
    assert sql(enforced, "SELECT checks_skipped FROM send") == [(reason,)]
    status = cli("status", "2025-11")
    assert f"  checks      skipped: {reason}" in status.stdout.splitlines()
    (row,) = json.loads(cli("status", "2025-11", "--json").stdout)
    assert row["checks_skipped"] == reason


def test_an_empty_reason_is_refused(cli: Any, enforced: Path) -> None:
    r = cli("approve", "2025-11", "--by", "Sam Patel", "--skip-checks", "  ")
    assert r.exit_code == 1
    assert r.stderr == (
        'Error: --skip-checks needs a reason, e.g. --skip-checks "dates confirmed by phone"\n'
    )


def test_mailer_build_still_builds_an_old_issue(cli: Any, enforced: Path) -> None:
    assert cli("build", "2025-11").exit_code == 0


def test_schedule_checks_for_the_day_of_at_and_the_worker_keeps_the_reason(
    cli: Any, enforced: Path
) -> None:
    assert cli("approve", "2025-11", "--by", "Sam Patel", "--skip-checks", "test").exit_code == 0
    settings = config.load(enforced)
    database = db.open_db(settings)
    now = dt.datetime(2025, 11, 30, 12, tzinfo=UTC)
    with pytest.raises(ChecksFailed, match="for a send on Tuesday 2 December 2025"):
        runner.schedule_once(
            settings, database, "2025-11", ["practitioners"], "2025-12-02 09:00", now
        )
    item = runner.schedule_once(
        settings,
        database,
        "2025-11",
        ["practitioners"],
        "2025-12-02 09:00",
        now,
        skip_checks="agreed with the chair",
    )
    # `mailer check` without --send-date judges the issue as of its scheduled day.
    r = cli("check", "2025-11")
    assert r.stdout.startswith(
        f"2025-11 checked for a send on Tuesday 2 December 2025 (the date of schedule {item.id})"
    )
    (outcome,) = runner.run_due(settings, database, dt.datetime(2025, 12, 2, 9, 1, tzinfo=UTC))
    assert outcome.sent, outcome.outcome
    assert sql(enforced, "SELECT checks_skipped FROM send") == [("agreed with the chair",)]
    database.close()


def test_the_worker_refuses_a_scheduled_issue_with_errors_on_its_day(
    cli: Any, newsletter: Path
) -> None:
    make_list(cli, newsletter, "practitioners", addresses(3))
    # Approved and scheduled while the checks were off; the worker runs with them on.
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    r = cli("schedule", "2025-11", "--list", "practitioners", "--at", "2099-01-06 09:00")
    assert r.exit_code == 0, r.output
    enforce(newsletter)
    settings = config.load(newsletter)
    database = db.open_db(settings)
    (outcome,) = runner.run_due(settings, database, dt.datetime(2099, 1, 6, 9, 1, tzinfo=UTC))
    database.close()
    assert not outcome.sent
    assert re.match(
        r"not sent: 2025-11 has \d+ check errors for a send on Tuesday 6 January 2099:\n"
        r"  issues/2025-11/issue\.yaml:\d+: ",
        outcome.outcome,
    )
    # The slot is kept, to be tried again once the issue is fixed, until the grace period ends.
    assert sql(newsletter, "SELECT status FROM schedule") == [("active",)]
    assert sql(newsletter, "SELECT COUNT(*) FROM send") == [(0,)]


def test_skip_checks_is_refused_for_a_monthly_slot(cli: Any, enforced: Path) -> None:
    r = cli(
        "schedule", "--monthly", "1st tue 09:00", "--list", "practitioners", "--skip-checks", "x"
    )
    assert r.exit_code == 1
    assert "--skip-checks is for one issue" in r.stderr


def test_a_clean_issue_is_approved_without_a_reason(cli: Any, enforced: Path) -> None:
    today = config.load(enforced).today()
    body = "The partnership has appointed a new chair, who starts this month."
    slug = write_issue(enforced, news(body), date=today.isoformat(), slug="fresh")
    settings = config.load(enforced)
    report = checks.run(settings, compile_slug(settings, slug), today)
    assert report.errors == [], report.errors
    assert cli("build", slug).exit_code == 0
    r = cli("approve", slug, "--by", "Sam Patel")
    assert r.exit_code == 0, r.output


# --- Awareness days: the calendar, `mailer awareness` and `mailer new` ---------------------


def test_the_shipped_calendar_has_a_source_and_a_checked_year_for_every_day() -> None:
    days = calendar().days
    assert len(days) >= 12
    for day in days:
        assert day.source.startswith("https://")
        assert 2023 <= day.verified <= 2030
    names = {d.name for d in days}
    for wanted in (
        "Safer Internet Day",
        "Children's Mental Health Week",
        "Anti-Bullying Week",
        "16 Days of Activism Against Gender-Based Violence",
        "Private Fostering Awareness Day",
        "Child Exploitation Awareness Day",
        "Young Carers Action Day",
        "Safeguarding Adults Week",
    ):
        assert wanted in names


def test_a_calendar_entry_without_a_rule_or_dates_is_refused() -> None:
    with pytest.raises(ConfigError, match="day 1: give a rule or dates"):
        parse('[[day]]\nname = "X"\nsource = "https://example.org"\nverified = 2026\n')
    with pytest.raises(ConfigError, match="is not like '18 march'"):
        parse(
            '[[day]]\nname = "X"\nrule = "every tuesday"\n'
            'source = "https://example.org"\nverified = 2026\n'
        )


def test_mailer_awareness_lists_a_month(cli: Any) -> None:
    r = cli("awareness", "--month", "2026-02")
    assert r.exit_code == 0
    assert "  Tuesday 10 February 2026: Safer Internet Day" in r.stdout.splitlines()
    assert "  Monday 9 to Sunday 15 February 2026: Children's Mental Health Week" in (
        r.stdout.splitlines()
    )
    later = cli("awareness", "--month", "2027-11").stdout
    assert "Anti-Bullying Week: usually in November; the 2027 dates are not known yet" in later
    bad = cli("awareness", "--month", "Feb")
    assert bad.exit_code == 1
    assert bad.stderr == "Error: --month 'Feb' is not a month (use YYYY-MM)\n"


def test_mailer_new_suggests_the_coming_awareness_days(cli: Any, newsletter: Path) -> None:
    r = cli("new", "2025-11-draft", "--date", "2025-11-04")
    assert r.exit_code == 0, r.output
    text = (newsletter / "issues/2025-11-draft/issue.yaml").read_text(encoding="utf-8")
    assert (
        '  #   title: "Anti-Bullying Week"\n  #   start: 2025-11-10\n  #   end: 2025-11-14' in text
    )
    assert '  #   title: "Private Fostering Awareness Day"\n  #   date: 2025-11-05' in text
    # The untouched template builds, but mailer check says it is the template.
    assert cli("build", "2025-11-draft").exit_code == 0
    _, found = check_json(cli, "2025-11-draft", "--send-date", "2025-11-04")
    assert "template-text" in {f["code"] for f in found if f["severity"] == "error"}
