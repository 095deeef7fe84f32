"""Every preflight check, one by one: an issue that trips it and one that passes it.

Each case writes a small issue into the test's copy of the example newsletter folder and
runs that check alone (every other code silenced through [checks] ignore), as of a send
date, then asserts what a comms officer would read: the message and the line it points at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from check_helpers import news, run_one, session, training, write_issue
from mailer.checks import CHECKS

BIG_PARAGRAPH = (
    "Practitioners across the partnership told us how they use the newsletter, "
    "and what they would change about it next year. "
)


def big(paragraphs: int) -> str:
    return "\n\n".join(f"{BIG_PARAGRAPH}{i}" for i in range(paragraphs))


def awareness(title: str, when: str) -> str:
    return (
        f'  - type: awareness\n    title: "{title}"\n    {when}\n'
        "    body: |\n      What the day is about and how to take part.\n"
    )


def links(*pairs: tuple[str, str], title: str = "Guidance") -> str:
    rows = "".join(f'      - {{text: "{t}", url: "{u}"}}\n' for t, u in pairs)
    return (
        f'  - type: news\n    title: "{title}"\n    body: |\n      New guidance.\n'
        f"    links:\n{rows}"
    )


# code: (send date, issue that trips it, what the message says, issue that passes it)
CASES: dict[str, tuple[str, str, str, str]] = {
    "date-weekday": (
        "2026-03-02",
        news("The briefing is on Wednesday 10 March."),
        "10 March 2026 is a Tuesday, not a Wednesday",
        news("The briefing is on Tuesday 10 March."),
    ),
    "date-invalid": (
        "2026-03-02",
        news("Nominations close on 31 April 2026."),
        '"31 April 2026" in the body is not a date that exists',
        news("Nominations close on 30 April 2026."),
    ),
    "date-text-differs": (
        "2026-03-02",
        training([session("2026-03-10")], body="Join us on 11 March in Carlisle."),
        '"11 March" in the body of "Understanding the Levels of Need" is not one of its dates',
        training([session("2026-03-10")], body="Join us on 10 March in Carlisle."),
    ),
    "session-past": (
        "2026-03-02",
        training([session("2026-03-01"), session("2026-03-10")]),
        "the session on Sunday 1 March 2026 (Carlisle) is before the send date",
        training([session("2026-03-02"), session("2026-03-10")]),
    ),
    "awareness-past": (
        "2026-03-02",
        awareness("Young Carers Action Day", "date: 2026-02-27"),
        "is before the send date, Monday 2 March 2026",
        awareness("Child Exploitation Awareness Day", "date: 2026-03-18"),
    ),
    "deadline-past": (
        "2026-03-02",
        news("Have your say.").rstrip("\n") + "\n    closes: 2026-02-28\n",
        "closed on Saturday 28 February 2026, before the send date",
        news("Have your say.").rstrip("\n") + "\n    closes: 2026-03-20\n",
    ),
    "deadline-soon": (
        "2026-03-02",
        news("Have your say.").rstrip("\n") + "\n    closes: 2026-03-04\n",
        "closes on Wednesday 4 March 2026, 2 days after it",
        news("Have your say.").rstrip("\n") + "\n    closes: 2026-03-20\n",
    ),
    "session-weekend": (
        "2026-03-02",
        training([session("2026-03-07")]),
        "is on a Saturday",
        training([session("2026-03-10")]),
    ),
    "session-bank-holiday": (
        "2026-03-02",
        training([session("2026-04-06")]),
        "is on Easter Monday, a bank holiday",
        training([session("2026-04-07")]),
    ),
    "date-far-ahead": (
        "2026-03-02",
        training([session("2027-06-01")]),
        "the session on Tuesday 1 June 2027 is more than 13 months after the send date",
        training([session("2027-03-02")]),
    ),
    "session-duplicate": (
        "2026-03-02",
        training([session("2026-03-10"), session("2026-03-10", venue="Wigton")]),
        'at 09:30 of "Understanding the Levels of Need" repeats session 1',
        training([session("2026-03-10"), session("2026-03-10", "13:30", "16:30")]),
    ),
    "awareness-upcoming": (
        "2026-03-02",
        news("Partnership news."),
        "Child Exploitation Awareness Day (Wednesday 18 March 2026) is not mentioned",
        news("Child Exploitation Awareness Day is on 18 March."),
    ),
    "awareness-date": (
        "2026-02-02",
        awareness("Safer Internet Day 2026", "date: 2026-02-11"),
        "but the calendar has Safer Internet Day on Tuesday 10 February 2026",
        awareness("Safer Internet Day 2026", "date: 2026-02-10"),
    ),
    "placeholder": (
        "2026-03-02",
        news("The venue is TBC."),
        '"TBC" in the body',
        news("The venue is to be confirmed by the trainer."),
    ),
    "template-text": (
        "2026-03-02",
        news("Write the story here. Separate paragraphs with a blank line.", title="A news item"),
        'the title "A news item" is the template\'s',
        news("The partnership has a new chair.", title="A new chair"),
    ),
    "review-mark": (
        "2026-03-02",
        news("The partnership has a new chair.").replace(
            "type: news", "type: news  # REVIEW: carried over from 2026-02: still current?"
        ),
        'still marked for review: "carried over from 2026-02: still current?"',
        news("The partnership has a new chair.").replace("type: news", "type: news  # checked"),
    ),
    "email-in-text": (
        "2026-03-02",
        news("Questions to cscp@example.org, please."),
        "cscp@example.org in the body is not a link",
        news("Questions to [cscp@example.org](mailto:cscp@example.org), please."),
    ),
    "phone-in-text": (
        "2026-03-02",
        news("Call the front door any day.", title="The front door: 0333 240 1727"),
        "0333 240 1727 in the title cannot be a tel: link",
        news("Call the front door on 0333 240 1727.", title="The front door"),
    ),
    "session-no-end": (
        "2026-03-02",
        training(['date: 2026-03-10, start: "09:30", venue: Carlisle']),
        'the session on Tuesday 10 March 2026 (Carlisle) of "Understanding the Levels of Need" '
        "has no end time",
        training([session("2026-03-10")]),
    ),
    "link-malformed": (
        "2026-03-02",
        links(("The guidance notes", "https://example/guidance")),
        "example is not a host name",
        links(("The guidance notes", "https://example.org/guidance")),
    ),
    "link-http": (
        "2026-03-02",
        links(("The guidance notes", "http://example.org/guidance")),
        '"http://example.org/guidance" is not https://',
        links(("The guidance notes", "https://example.org/guidance")),
    ),
    "link-mailto": (
        "2026-03-02",
        news("[Email the team](mailto:cscp.example.org)"),
        '"mailto:cscp.example.org": ',
        news("[Email the team](mailto:cscp@example.org)"),
    ),
    "link-tel": (
        "2026-03-02",
        news("[Call the team](tel:call-us)"),
        '"tel:call-us" is not a telephone number',
        news("[Call the team](tel:+441228000000)"),
    ),
    "link-bare-url": (
        "2026-03-02",
        links(("https://example.org/guidance", "https://example.org/guidance")),
        'the link text "https://example.org/guidance" is a web address',
        links(("The guidance notes", "https://example.org/guidance")),
    ),
    "link-generic": (
        "2026-03-02",
        news("To book, [click here](https://example.org/book)."),
        'the link text "click here" does not say where it goes',
        news("[Book a place on the course](https://example.org/book)."),
    ),
    "link-text-reused": (
        "2026-03-02",
        links(("Guidance", "https://example.org/a"), ("Guidance", "https://example.org/b")),
        'the link text "Guidance" goes to "https://example.org/b" here',
        links(
            ("Guidance on A", "https://example.org/a"), ("Guidance on B", "https://example.org/b")
        ),
    ),
    "link-same-url": (
        "2026-03-02",
        links(("Guidance", "https://example.org/a"), ("The notes", "https://example.org/a")),
        '"https://example.org/a" is "The notes" here and "Guidance"',
        links(("Guidance", "https://example.org/a"), ("The notes", "https://example.org/b")),
    ),
    "booking-missing": (
        "2026-03-02",
        training([session("2026-03-10")]).replace(
            '    booking_url: "https://example.org/cscp/training/levels-of-need"\n', ""
        ),
        '"Understanding the Levels of Need" says nothing about how to book',
        training([session("2026-03-10")]),
    ),
    "link-shortener": (
        "2026-03-02",
        links(("The guidance notes", "https://bit.ly/3abcdef")),
        "is a shortened link (bit.ly)",
        links(("The guidance notes", "https://example.org/guidance")),
    ),
    "image-alt-useless": (
        "2026-03-02",
        news("Ofsted has published its report.").rstrip("\n")
        + '\n    image: {src: images/ofsted.png, alt: "ofsted.png"}\n',
        'the alt text "ofsted.png" is the picture\'s file name',
        news("Ofsted has published its report.").rstrip("\n")
        + '\n    image: {src: images/ofsted.png, alt: "A magnifying glass over a bar chart"}\n',
    ),
    "heading-skip": (
        "2026-03-02",
        news("#### What has changed\n\nThe procedure is new."),
        "a level-4 heading (####) in the body follows a level-2 one, skipping a level",
        news("### What has changed\n\nThe procedure is new."),
    ),
    "all-caps": (
        "2026-03-02",
        news("PLEASE BOOK YOUR PLACE EARLY as places are limited."),
        '"PLEASE BOOK YOUR PLACE EARLY" in the body is in capitals',
        news("Please book your place early, as places are limited."),
    ),
    "html-clipped": ("2026-03-02", news(big(650)), "over Gmail's 102.0 KB", news(big(540))),
    "html-large": ("2026-03-02", news(big(540)), "the email's HTML is 9", news(big(100))),
    "year-stale": (
        "2026-03-02",
        news("Read this year's report (2024) on the website."),
        'says "this year" beside 2024',
        news("Read this year's report (2026) on the website."),
    ),
}


def _line_of(root: Path, slug: str, needle: str) -> int:
    lines = (root / "issues" / slug / "issue.yaml").read_text(encoding="utf-8").splitlines()
    return next(n for n, text in enumerate(lines, 1) if needle in text)


@pytest.mark.parametrize("code", sorted(CASES))
def test_a_check_trips_on_its_fixture_and_passes_the_fixed_one(code: str, newsletter: Path) -> None:
    send_date, tripping, message, passing = CASES[code]
    slug = write_issue(newsletter, tripping)
    found = run_one(newsletter, slug, code, send_date)
    assert found, f"{code} found nothing in:\n{tripping}"
    assert message in found[0].message, found[0].message
    assert found[0].severity == CHECKS[code].severity
    assert found[0].hint
    slug = write_issue(newsletter, passing)
    assert run_one(newsletter, slug, code, send_date) == []


@pytest.mark.parametrize(
    ("code", "body", "needle"),
    [
        ("date-weekday", "Intro line.\n\nThe briefing is on Wednesday 10 March.", "Wednesday 10"),
        ("placeholder", "First paragraph.\n\nSecond paragraph.\n\nVenue: TBC", "Venue: TBC"),
    ],
)
def test_a_finding_in_a_block_of_text_points_at_its_own_line(
    code: str, body: str, needle: str, newsletter: Path
) -> None:
    slug = write_issue(newsletter, news(body))
    (found,) = run_one(newsletter, slug, code)
    assert found.file == f"issues/{slug}/issue.yaml"
    assert found.line == _line_of(newsletter, slug, needle)


def test_a_date_without_a_year_is_the_one_nearest_the_issue(newsletter: Path) -> None:
    # A December issue's "Monday 12 January" is next January, a Monday: no finding.
    slug = write_issue(
        newsletter, news("Sessions restart on Monday 12 January."), date="2025-12-02"
    )
    assert run_one(newsletter, slug, "date-weekday", "2025-12-02") == []
    slug = write_issue(
        newsletter, news("Sessions restart on Sunday 12 January."), date="2025-12-02"
    )
    (found,) = run_one(newsletter, slug, "date-weekday", "2025-12-02")
    assert "12 January 2026 is a Monday" in found.message
    assert 'write "Monday 12 January"' in found.hint


@pytest.mark.parametrize(
    "written", ["Wed 3 Dec 2025", "Wednesday, 3rd December 2025", "Wednesday the 3rd of December"]
)
def test_weekdays_are_read_in_the_ways_people_write_them(written: str, newsletter: Path) -> None:
    slug = write_issue(newsletter, news(f"The forum meets on {written}."), date="2025-11-28")
    assert run_one(newsletter, slug, "date-weekday", "2025-11-28") == []
    wrong = written.replace("Wednesday", "Thursday").replace("Wed ", "Thu ")
    slug = write_issue(newsletter, news(f"The forum meets on {wrong}."), date="2025-11-28")
    (found,) = run_one(newsletter, slug, "date-weekday", "2025-11-28")
    assert "3 December 2025 is a Wednesday" in found.message


def test_bank_holidays_are_those_of_the_part_of_the_uk_in_mailer_toml(newsletter: Path) -> None:
    # St Patrick's Day is a bank holiday in Northern Ireland only.
    slug = write_issue(newsletter, training([session("2026-03-17")]))
    assert run_one(newsletter, slug, "session-bank-holiday") == []
    path = newsletter / "mailer.toml"
    path.write_text(path.read_text(encoding="utf-8") + 'bank_holidays = "NIR"\n', encoding="utf-8")
    (found,) = run_one(newsletter, slug, "session-bank-holiday")
    assert "Saint Patrick" in found.message or "St Patrick" in found.message


def test_brand_colours_below_aa_contrast_point_at_mailer_toml(newsletter: Path) -> None:
    slug = write_issue(newsletter, news("Partnership news."))
    assert run_one(newsletter, slug, "colour-contrast") == []
    path = newsletter / "mailer.toml"
    text = path.read_text(encoding="utf-8").replace('accent = "#0f766e"', 'accent = "#5eead4"')
    path.write_text(text, encoding="utf-8")
    found = run_one(newsletter, slug, "colour-contrast")
    assert [f.file for f in found] == ["mailer.toml", "mailer.toml"]
    assert found[0].line == _line_in(path, 'accent = "#5eead4"')
    assert "brand.accent #5eead4: section labels on the white card has a contrast of" in (
        found[0].message
    )


def _line_in(path: Path, needle: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(n for n, text in enumerate(lines, 1) if needle in text)


def _override_news_template(root: Path, extra: str) -> None:
    folder = root / "templates" / "sections"
    folder.mkdir(parents=True)
    (folder / "news.mjml.j2").write_text(
        '{%- from "sections/_card.mjml.j2" import card with context -%}\n'
        "{% call card(section) %}{{ section.body | md }}{% endcall %}\n" + extra,
        encoding="utf-8",
    )


def test_an_image_without_alt_from_a_template_override_is_an_error(newsletter: Path) -> None:
    slug = write_issue(newsletter, news("Partnership news."))
    assert run_one(newsletter, slug, "image-alt-missing") == []
    # Sections are written inside the card's open text block: close it for an MJML image.
    _override_news_template(
        newsletter,
        '</mj-text><mj-image src="https://example.org/chart.png" /><mj-text css-class="body">\n',
    )
    (found,) = run_one(newsletter, slug, "image-alt-missing")
    assert found.message == 'the image "https://example.org/chart.png" has no alt attribute'


def test_a_link_only_in_the_html_part_is_an_error(newsletter: Path) -> None:
    slug = write_issue(newsletter, news("Partnership news."))
    assert run_one(newsletter, slug, "text-missing-link") == []
    _override_news_template(
        newsletter,
        '<p><a href="https://example.org/only-in-html">The survey</a></p>\n',
    )
    (found,) = run_one(newsletter, slug, "text-missing-link")
    assert '"https://example.org/only-in-html" is in the HTML but not in the text part' in (
        found.message
    )


def test_subject_and_preheader_lengths(newsletter: Path) -> None:
    slug = write_issue(newsletter, news("Partnership news."), subject="News", preheader=None)
    (subject,) = run_one(newsletter, slug, "subject-length")
    assert subject.message == "the subject is 4 characters long"
    (preheader,) = run_one(newsletter, slug, "preheader-length")
    assert preheader.message == "there is no preheader"
    slug = write_issue(newsletter, news("Partnership news."), preheader="Too short")
    (preheader,) = run_one(newsletter, slug, "preheader-length")
    assert preheader.message == "the preheader is 9 characters long"
    slug = write_issue(newsletter, news("Partnership news."))
    assert run_one(newsletter, slug, "subject-length") == []
    assert run_one(newsletter, slug, "preheader-length") == []


def test_a_stale_copyright_year_is_a_warning(newsletter: Path) -> None:
    slug = write_issue(newsletter, news("Photographs © 2024 the partnership."))
    (found,) = run_one(newsletter, slug, "year-stale")
    assert '"© 2024" is not 2026, the issue\'s year' in found.message
    slug = write_issue(newsletter, news("Photographs © 2025–2026 the partnership."))
    assert run_one(newsletter, slug, "year-stale") == []


def _override_training_template(root: Path, session_line: str) -> None:
    folder = root / "templates" / "sections"
    folder.mkdir(parents=True)
    (folder / "training.mjml.j2").write_text(
        '{%- from "sections/_card.mjml.j2" import card with context -%}\n'
        "{% call card(section) %}{{ section.body | md }}<ul>{% for s in section.sessions %}"
        f"<li>{session_line}</li>{{% endfor %}}</ul>{{% endcall %}}\n",
        encoding="utf-8",
    )


def test_a_calendar_entry_that_says_another_time_than_the_email_is_an_error(
    newsletter: Path,
) -> None:
    slug = write_issue(newsletter, training([session("2026-03-10"), session("2026-03-12")]))
    assert run_one(newsletter, slug, "calendar-differs") == []
    assert run_one(newsletter, slug, "calendar-link-missing") == []
    # An override that shows every session at 10am, while the entries say 9:30am.
    _override_training_template(
        newsletter,
        "{{ s.date | long_date }}, 10am to 12:30pm, {{ s.venue }} "
        '<a href="{{ urls.session_ics(section, s) }}">Add to calendar</a>',
    )
    found = run_one(newsletter, slug, "calendar-differs")
    assert len(found) == 2
    assert found[0].message.startswith(
        "the calendar entry of the session on Tuesday 10 March 2026 (Carlisle) says "
        "Tuesday 10 March 2026, 9:30am, 12:30pm, Carlisle; the email says"
    )
    assert found[0].line == _line_of(newsletter, slug, "date: 2026-03-10")


def test_a_session_without_its_calendar_link_is_a_warning(newsletter: Path) -> None:
    slug = write_issue(newsletter, training([session("2026-03-10")]))
    _override_training_template(newsletter, "{{ s.date | long_date }}, {{ s | time_range }}")
    (found,) = run_one(newsletter, slug, "calendar-link-missing")
    assert found.message == (
        'the session on Tuesday 10 March 2026 (Carlisle) has no "Add to calendar" link'
    )
    assert run_one(newsletter, slug, "calendar-differs") == []
