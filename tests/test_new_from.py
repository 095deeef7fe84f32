"""`mailer new SLUG --from PREVIOUS`: next month starts from this one, without what is past."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from mailer.content.carry import new_subject


def load(root: Path, slug: str) -> Any:
    return YAML(typ="safe").load((root / "issues" / slug / "issue.yaml").read_text("utf-8"))


def test_new_from_keeps_recurring_sections_and_drops_what_is_past(
    cli: Any, newsletter: Path
) -> None:
    r = cli("new", "2025-12", "--date", "2025-12-02", "--from", "2025-11")
    assert r.exit_code == 0, r.output
    assert r.stdout == (
        "Created issues/2025-12/issue.yaml from 2025-11: check the lines marked REVIEW, then "
        "run: mailer build 2025-12\n"
    )
    old, new = load(newsletter, "2025-11"), load(newsletter, "2025-12")
    assert new["subject"] == "CSCP Newsletter – December 2025"
    assert str(new["date"]) == "2025-12-02"
    titles = [s["title"] for s in new["sections"]]
    # Private Fostering Awareness Day (5 November) is over; the 16 Days run to 10 December.
    assert "Private Fostering Awareness Day" not in titles
    assert "16 Days of Activism Against Gender-Based Violence" in titles
    training = [s for s in new["sections"] if s["type"] == "training"]
    assert training and all(
        str(session["date"]) >= "2025-12-02" for s in training for session in s["sessions"]
    )
    before = sum(len(s.get("sessions") or []) for s in old["sections"])
    after = sum(len(s.get("sessions") or []) for s in training)
    assert 0 < after < before
    # The consultation closed on 2 November: its closes: date is gone, the section stays.
    (consultation,) = [s for s in new["sections"] if "SEND Needs" in s["title"]]
    assert "closes" not in consultation
    text = (newsletter / "issues/2025-12/issue.yaml").read_text(encoding="utf-8")
    assert "# REVIEW: was 'CSCP Newsletter – November 2025'" in text
    assert "# REVIEW: its deadline (2025-11-02) had passed and was removed" in text
    # A course with no session still to come is gone, and so is November's intro.
    courses = [s["title"] for s in old["sections"] if s["type"] == "training"]
    assert len(training) < len(courses)
    assert "intro" not in new
    assert "# REVIEW: written for 2025-11" in text
    # Times keep their quotes, and the new issue builds as it is.
    assert 'start: "09:30"' in text
    assert cli("build", "2025-12").exit_code == 0


def test_new_from_copies_the_images_the_kept_sections_show(cli: Any, newsletter: Path) -> None:
    r = cli("new", "2022-01", "--date", "2022-01-04", "--from", "2021-12")
    assert r.exit_code == 0, r.output
    shown = [s["image"]["src"] for s in load(newsletter, "2022-01")["sections"] if s.get("image")]
    assert shown
    for src in shown:
        copy = newsletter / "issues/2022-01" / src
        assert copy.read_bytes() == (newsletter / "issues/2021-12" / src).read_bytes()
    assert cli("build", "2022-01").exit_code == 0


def test_new_from_refuses_a_missing_or_broken_issue_and_writes_nothing(
    cli: Any, newsletter: Path
) -> None:
    r = cli("new", "2026-01", "--from", "2025-1")
    assert r.exit_code == 1
    assert "no issue '2025-1': did you mean '2025-11'?" in r.stderr
    path = newsletter / "issues/2025-11/issue.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("subject:", "subject:\t", 1))
    r = cli("new", "2026-01", "--from", "2025-11")
    assert r.exit_code == 1
    assert not (newsletter / "issues/2026-01").exists()


def test_new_without_from_names_the_newsletter_in_the_subject(cli: Any, newsletter: Path) -> None:
    assert cli("new", "2026-01", "--date", "2026-01-06").exit_code == 0
    assert load(newsletter, "2026-01")["subject"] == "CSCP Newsletter – January 2026"


def test_the_subject_moves_to_the_new_month() -> None:
    # Sent on 30 October for November: the new issue is named after its slug's month.
    assert (
        new_subject("News – November 2025", dt.date(2025, 10, 30), dt.date(2025, 11, 27), "2025-12")
        == "News – December 2025"
    )
    # Without a month in the slug, the subject moves as far as the date did.
    assert (
        new_subject("News – November 2025", dt.date(2025, 10, 30), dt.date(2025, 11, 27), "xmas")
        == "News – December 2025"
    )
    assert new_subject("Special edition", dt.date(2025, 10, 30), dt.date(2025, 12, 1)) == (
        "Special edition"
    )
