"""Typographic quotes and telephone links, as readers see them in the built issue.

The numbers are those of the real issues behind the examples (/work/shared seeds): the
CCASS line, the footer's switchboard, and a Teams meeting ID that must stay plain text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lxml.html
import pytest

from check_helpers import write_issue
from conftest import draft_dir
from mailer.content import phones
from mailer.render.markdown import prose, to_html, typo


@pytest.mark.parametrize(
    ("written", "href"),
    [
        ("0333 240 1727", "tel:+443332401727"),
        ("01228 606060", "tel:+441228606060"),
        ("01228 000 000", "tel:+441228000000"),
        ("07700 900123", "tel:+447700900123"),
        ("+44 (0)7700 900123", "tel:+447700900123"),
        ("+44 333 240 1727", "tel:+443332401727"),
        ("0800 1111", "tel:+448001111"),
        ("0808-800-5000", "tel:+448088005000"),
    ],
)
def test_uk_numbers_become_e164_tel_links(written: str, href: str) -> None:
    html = str(to_html(f"Call {written} today."))
    assert f'<a href="{href}">{written}</a>' in html


@pytest.mark.parametrize(
    "text",
    [
        "See https://example.org/0333-240-1727 for details.",
        "[the page](https://example.org/calls/03332401727)",
        "Meeting ID 326 836 067 140 9, passcode Vi7rg35a",
        "Closes 2025-11-02, or 01-12-2025 10:00 at the latest.",
        "Course code CSE-0123456789 and ref CSE0123456789.",
        "Between 2020 and 2024, 1,234 referrals.",
        "Use `0333 240 1727` in the code.",
    ],
)
def test_numbers_that_are_not_phone_numbers_are_left_alone(text: str) -> None:
    assert "tel:" not in str(to_html(text))


def test_a_number_already_linked_is_not_linked_twice() -> None:
    html = str(to_html("[Call CCASS on 0333 240 1727](tel:+443332401727)"))
    assert html.count("<a ") == 1


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("Children's Services", "Children’s Services"),
        (
            'The course "Understanding the Levels of Need".',
            "The course “Understanding the Levels of Need”.",
        ),
        ("under 'Additional Resources'.", "under ‘Additional Resources’."),
        ('"**bold** quoted"', "“<strong>bold</strong> quoted”"),
    ],
)
def test_straight_quotes_become_typographic(source: str, shown: str) -> None:
    assert shown in str(to_html(source))


def test_quotes_stay_straight_in_addresses_code_and_attributes() -> None:
    html = str(to_html("[it's here](https://example.org/it's) `don't` <https://example.org/a'b>"))
    assert 'href="https://example.org/it\'s"' in html
    assert "it’s here" in html
    assert "<code>don't</code>" in html
    assert ">https://example.org/a'b</a>" in html


def test_plain_fields_are_escaped_as_well() -> None:
    assert str(typo("Season's <b>greetings</b>")) == "Season’s &lt;b&gt;greetings&lt;/b&gt;"
    assert str(prose("Dial 0333 240 1727 & ask")) == (
        'Dial <a href="tel:+443332401727">0333 240 1727</a> &amp; ask'
    )


def test_the_seed_issue_numbers_in_the_built_example(settings: Any) -> None:
    build = draft_dir(settings.root, "2025-11")
    email = lxml.html.document_fromstring((build / "email.html").read_bytes())
    tel = {a.get("href"): a.text_content() for a in email.xpath("//a[starts-with(@href, 'tel:')]")}
    # The CCASS line in the body, and the switchboard in the footer's contact line.
    assert tel == {"tel:+443332401727": "0333 240 1727", "tel:+441228000000": "01228 000 000"}
    text = email.text_content()
    assert "Meeting ID 326 836 067 140 9" in text
    assert "Cumberland Council’s Children’s Services" in text
    plain = (build / "email.txt").read_text(encoding="utf-8")
    assert "(CCASS) on 0333 240 1727" in " ".join(plain.split())
    assert "tel:" not in plain
    assert "Children’s Services" in plain


def test_a_number_in_a_venue_or_note_is_linked(newsletter: Path, cli: Any) -> None:
    slug = write_issue(
        newsletter,
        '  - type: training\n    title: "Dial-in briefing"\n    sessions:\n'
        '      - {date: 2026-03-10, start: "09:30", end: "10:30", venue: "By phone", '
        'note: "Dial 020 7946 0000, then the code 4455"}\n',
    )
    assert cli("build", slug).exit_code == 0
    email = (draft_dir(newsletter, slug) / "email.html").read_text(encoding="utf-8")
    assert '<a href="tel:+442079460000"' in email
    assert phones.tel_href("020 7946 0000") == "tel:+442079460000"
