"""The issue's own day: `check` and `approve` judge dates by the day the issue goes out, and
`mailer new --from` carries nothing that belonged to last month."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from check_helpers import enforce, session, training, write_issue
from mailer import config
from mailer.formats import long_date


def load(root: Path, slug: str) -> Any:
    return YAML(typ="safe").load((root / "issues" / slug / "issue.yaml").read_text("utf-8"))


def _weekday(day: dt.date) -> dt.date:
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day


def test_an_issue_dated_ahead_is_checked_for_its_own_day_not_today(
    cli: Any, newsletter: Path
) -> None:
    # In December, an April issue whose course still lists a March session.
    now = config.load(newsletter).today()
    march = _weekday(now + dt.timedelta(days=90))
    april = march + dt.timedelta(days=30)
    slug = write_issue(
        newsletter,
        training([session(march.isoformat())]),
        slug="april",
        date=april.isoformat(),
        subject="CSCP Newsletter",
    )
    enforce(newsletter)
    r = cli("check", slug)
    assert r.exit_code == 1, r.output
    assert r.stdout.startswith(
        f"april checked for a send on {long_date(april)} (its date: in issue.yaml)"
    )
    assert f"the session on {long_date(march)} (Carlisle) is before the send date" in r.stdout
    # approve judges by the same day, so it refuses now rather than on the day of sending.
    r = cli("approve", slug, "--by", "Sam Patel")
    assert r.exit_code == 1
    assert f"april has 1 check error for a send on {long_date(april)}" in r.stderr
    assert "session-past" in r.stderr
    # The same issue dated before the session is clean of that error.
    write_issue(
        newsletter,
        training([session(march.isoformat())]),
        slug="april",
        date=(march - dt.timedelta(days=7)).isoformat(),
        subject="CSCP Newsletter",
    )
    assert "session-past" not in cli("check", slug).stdout


def test_an_issue_dated_in_the_past_is_checked_for_today(cli: Any, newsletter: Path) -> None:
    # 2025-11 is long past: it can only go out today.
    r = cli("check", "2025-11")
    now = config.load(newsletter).today()
    assert r.stdout.startswith(f"2025-11 checked for a send on {long_date(now)} (today)")


def test_new_from_a_december_issue_starts_january_clean_of_december(
    cli: Any, newsletter: Path
) -> None:
    assert cli("new", "2025-12", "--date", "2025-12-02", "--from", "2025-11").exit_code == 0
    december = load(newsletter, "2025-12")
    assert "intro" not in december
    path = newsletter / "issues/2025-12/issue.yaml"
    written = path.read_text(encoding="utf-8").replace(
        "\nsections:", '\nintro: "Welcome to the December newsletter."\nsections:', 1
    )
    path.write_text(written, encoding="utf-8")
    r = cli("new", "2026-01", "--date", "2026-01-06", "--from", "2025-12")
    assert r.exit_code == 0, r.output
    january = load(newsletter, "2026-01")
    assert january["subject"] == "CSCP Newsletter – January 2026"
    assert str(january["date"]) == "2026-01-06"
    # No intro from December ("Welcome to the December newsletter").
    assert "intro" not in january
    text = (newsletter / "issues/2026-01/issue.yaml").read_text(encoding="utf-8")
    assert "# The intro of 2025-12 was not carried over" in text
    # Every course left has a session on or after the new issue's day; the others are gone.
    courses = [s for s in january["sections"] if s["type"] == "training"]
    for course in courses:
        assert course["sessions"]
        assert all(str(s["date"]) >= "2026-01-06" for s in course["sessions"])
    before = [s["title"] for s in december["sections"] if s["type"] == "training"]
    kept = {s["title"] for s in courses}
    gone = [
        s["title"]
        for s in december["sections"]
        if s["type"] == "training"
        and not any(str(x["date"]) >= "2026-01-06" for x in s["sessions"])
    ]
    assert gone and not kept & set(gone)
    assert len(kept) < len(before)
    assert "every session had passed" not in text
    # Awareness campaigns over by January are dropped (the 16 Days ended on 10 December).
    titles = [s["title"] for s in january["sections"]]
    assert "16 Days of Activism Against Gender-Based Violence" not in titles
    # It builds, and check names every mark still to review, each on its line, as errors.
    assert cli("build", "2026-01").exit_code == 0
    r = cli("check", "2026-01", "--send-date", "2026-01-06")
    assert r.exit_code == 1
    marks = [n for n, line in enumerate(text.splitlines(), 1) if "# REVIEW" in line]
    assert len(marks) >= 3
    errors = r.stdout.split("\nErrors\n", 1)[1].split("\nWarnings\n", 1)[0]
    for n in marks:
        assert f"issues/2026-01/issue.yaml:{n}: still marked for review: " in errors
    assert "[review-mark]" in errors
