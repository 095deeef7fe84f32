"""The content contract as a user meets it: ``mailer build`` on good, bad and hostile input.

Every bad input goes through the real command. A failed build must exit 1, print one line
per problem naming the file, the line and the field, report every problem at once, print
no traceback, and leave the issue's previous build exactly as it was.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import lxml.html
import pytest

from conftest import Result, draft_dir
from mailer.content import SECTION_TYPES
from mailer.render.markdown import smart_quotes

CLI = Callable[..., Result]
ISSUE = "issues/2025-11/issue.yaml"
PROBLEM = re.compile(r"^issues/2025-11/issue\.yaml:(\d+): (\S+): (.+)$")

# A small, valid issue using every part of the format. Each bad-input case below changes
# one line of it, so the line numbers the build reports can be checked exactly.
VALID = """\
subject: "CSCP Newsletter – test issue"
preheader: "A short preview of this issue that is long enough for the inbox"
date: 2025-10-30
intro: |
  Welcome to this issue.
sections:
  - type: news
    title: "Family Help changes"
    body: |
      Cumberland is changing how Family Help is delivered.
    image: {src: images/photo.png, alt: "A family walking in a park"}
    links:
      - {text: "Read the letter about Family Help", url: "https://example.org/letter"}
    closes: 2025-11-02
  - type: awareness
    title: "16 Days of Activism"
    start: 2025-11-25
    end: 2025-12-10
  - title: "Private Fostering Awareness Day"
    type: awareness
    date: 2025-11-05
  - type: training
    title: "Understanding the Levels of Need"
    booking_url: "https://example.org/book"
    sessions:
      - {date: 2025-12-03, start: "09:30", end: "12:30", venue: Wigton}
      - date: 2025-12-04
        start: "13:30"
        end: "16:30"
        venue: Carlisle
      - date: 2025-12-05
        start: "09:30"
        end: "12:30"
        venue: Workington
      - date: 2025-12-06
        start: "10:00"
        end: "13:00"
        venue: Whitehaven
"""

# Each case changes one line of VALID, and no two cases touch the same section or session,
# so all of them together must give exactly one problem each.
# (name, line to change, replacement or None to delete it, the line the problem is
# reported on, field, words the message must contain).
CASES = [
    (
        "missing required field",
        '    title: "Understanding the Levels of Need"\n',
        None,
        "  - type: training\n",
        "sections[3].title",
        "is required",
    ),
    (
        "unknown section type",
        "    type: awareness\n",
        "    type: campaign\n",
        "    type: campaign\n",
        "sections[2].type",
        "unknown section type 'campaign' (use one of: news, training, nspcc, awareness, text)",
    ),
    (
        "misspelt key",
        '    booking_url: "https://example.org/book"\n',
        '    bookng_url: "https://example.org/book"\n',
        '    bookng_url: "https://example.org/book"\n',
        "sections[3].bookng_url",
        "unknown key (did you mean 'booking_url'?)",
    ),
    (
        "invalid date",
        "      - date: 2025-12-04\n",
        "      - date: 2025-02-30\n",
        "      - date: 2025-02-30\n",
        "sections[3].sessions[1].date",
        "'2025-02-30' is not a valid date",
    ),
    (
        "invalid time",
        '        start: "13:30"\n',
        '        start: "25:00"\n',
        '        start: "25:00"\n',
        "sections[3].sessions[1].start",
        "'25:00' is not a valid time",
    ),
    (
        "session ends before it starts",
        '        end: "13:00"\n',
        '        end: "09:00"\n',
        '        end: "09:00"\n',
        "sections[3].sessions[3].end",
        "09:00 is not after the start 10:00",
    ),
    (
        "campaign ends before it starts",
        "    end: 2025-12-10\n",
        "    end: 2025-11-10\n",
        "    end: 2025-11-10\n",
        "sections[1].end",
        "2025-11-10 is before the start 2025-11-25",
    ),
    (
        "missing image file",
        '    image: {src: images/photo.png, alt: "A family walking in a park"}\n',
        '    image: {src: images/missing.png, alt: "A family walking in a park"}\n',
        '    image: {src: images/missing.png, alt: "A family walking in a park"}\n',
        "sections[0].image.src",
        "image file images/missing.png does not exist",
    ),
]


def line_of(text: str, line: str) -> int:
    """The 1-based number of the one line of ``text`` equal to ``line``."""
    numbers = [i for i, candidate in enumerate(text.splitlines(True), 1) if candidate == line]
    assert len(numbers) == 1, f"{line!r} occurs {len(numbers)} times"
    return numbers[0]


def change(text: str, old: str, new: str | None) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new or "")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def built(newsletter: Path, cli: CLI) -> dict[str, bytes]:
    """Build the real 2025-11 issue, then give it an image; return the build's bytes."""
    result = cli("build", "2025-11")
    assert result.exit_code == 0, result.output
    images = newsletter / "issues/2025-11/images"
    images.mkdir(exist_ok=True)
    shutil.copy(newsletter / "issues/2021-12/images/ofsted.png", images / "photo.png")
    before = snapshot(draft_dir(newsletter, "2025-11"))
    assert {"email.html", "email.txt", "index.html"} <= set(before)
    return before


def write_issue(newsletter: Path, text: str) -> None:
    (newsletter / ISSUE).write_text(text, encoding="utf-8")


def assert_failed_cleanly(result: Result, newsletter: Path, before: dict[str, bytes]) -> list[str]:
    """Exit 1, no traceback, nothing on stdout, the old build intact; return problem lines."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert snapshot(draft_dir(newsletter, "2025-11")) == before
    for root in (newsletter / "build", draft_dir(newsletter, "2025-11").parent):
        assert not [p.name for p in root.iterdir() if p.name.startswith(".")]
    lines = result.stderr.splitlines()
    if len(lines) == 1:
        return lines  # one problem is one line
    *problems, summary = lines
    assert summary == f"{len(problems)} problems found; nothing was written."
    return problems


def test_the_valid_base_issue_builds(newsletter: Path, cli: CLI, built: dict[str, bytes]) -> None:
    write_issue(newsletter, VALID)
    result = cli("build", "2025-11")
    assert result.exit_code == 0, result.output
    assert (draft_dir(newsletter, "2025-11") / "images/photo.png").is_file()


@pytest.mark.parametrize(
    ("old", "new", "at", "field", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_is_reported_with_file_line_and_field(
    newsletter: Path,
    cli: CLI,
    built: dict[str, bytes],
    old: str,
    new: str | None,
    at: str,
    field: str,
    message: str,
) -> None:
    text = change(VALID, old, new)
    write_issue(newsletter, text)
    result = cli("build", "2025-11")
    problems = assert_failed_cleanly(result, newsletter, built)
    assert len(problems) == 1, problems
    match = PROBLEM.match(problems[0])
    assert match, problems[0]
    assert int(match[1]) == line_of(text, at)
    assert match[2] == field
    assert message in match[3]


def test_every_problem_is_reported_at_once(
    newsletter: Path, cli: CLI, built: dict[str, bytes]
) -> None:
    text = VALID
    for _, old, new, _, _, _ in CASES:
        text = change(text, old, new)
    write_issue(newsletter, text)
    problems = assert_failed_cleanly(cli("build", "2025-11"), newsletter, built)
    expected = sorted((line_of(text, at), field, message) for _, _, _, at, field, message in CASES)
    found = []
    for line in problems:
        match = PROBLEM.match(line)
        assert match, line
        found.append((int(match[1]), match[2], match[3]))
    assert len(found) == len(expected), problems
    # Problems come in the order they appear in the file, so a user fixes them top down.
    assert [f[0] for f in found] == sorted(f[0] for f in found)
    for (line, field, message), (got_line, got_field, got_message) in zip(
        expected, sorted(found), strict=True
    ):
        assert (got_line, got_field) == (line, field)
        assert message in got_message


def test_the_precise_example_from_the_issue(
    newsletter: Path, cli: CLI, built: dict[str, bytes]
) -> None:
    text = change(VALID, "      - date: 2025-12-04\n", "      - date: 2025-02-30\n")
    write_issue(newsletter, text)
    problems = assert_failed_cleanly(cli("build", "2025-11"), newsletter, built)
    assert problems == [
        "issues/2025-11/issue.yaml:27: sections[3].sessions[1].date: "
        "'2025-02-30' is not a valid date (use YYYY-MM-DD)"
    ]


def test_malformed_yaml(newsletter: Path, cli: CLI, built: dict[str, bytes]) -> None:
    # An unquoted title with a colon in it: the commonest YAML mistake.
    text = change(VALID, '    title: "Family Help changes"\n', "    title: Update: Family Help\n")
    write_issue(newsletter, text)
    problems = assert_failed_cleanly(cli("build", "2025-11"), newsletter, built)
    line = line_of(text, "    title: Update: Family Help\n")
    assert problems == [
        f"issues/2025-11/issue.yaml:{line}: malformed YAML: put text containing a colon in "
        'quotes, like title: "Update: Family Help"'
    ]


def test_unclosed_quote(newsletter: Path, cli: CLI, built: dict[str, bytes]) -> None:
    unclosed = '    title: "16 Days of Activism\n'
    text = change(VALID, '    title: "16 Days of Activism"\n', unclosed)
    write_issue(newsletter, text)
    (problem,) = assert_failed_cleanly(cli("build", "2025-11"), newsletter, built)
    # YAML only notices an unclosed quote lines later, so the message also names the line
    # where the enclosing block starts, which is at or before the mistake.
    match = re.match(
        r"^issues/2025-11/issue\.yaml:(\d+): malformed YAML: .+ that starts on line (\d+)\)$",
        problem,
    )
    assert match, problem
    assert int(match[2]) <= line_of(text, unclosed) <= int(match[1])


def test_non_existent_slug(newsletter: Path, cli: CLI, built: dict[str, bytes]) -> None:
    result = cli("build", "2099-01")
    problems = assert_failed_cleanly(result, newsletter, built)
    assert problems == [
        "issues/2099-01/issue.yaml: no issue '2099-01' (known issues: 2021-12, 2025-11)"
    ]
    assert not (newsletter / "build/2099-01").exists()
    assert not draft_dir(newsletter, "2099-01").exists()


def test_one_bad_issue_is_reported_and_the_rest_still_build(
    newsletter: Path, cli: CLI, built: dict[str, bytes]
) -> None:
    shutil.rmtree(draft_dir(newsletter, "2021-12"))  # the copy the fixture came with
    write_issue(newsletter, change(VALID, '        start: "13:30"\n', '        start: "25:00"\n'))
    result = cli("build", "--all")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "issues/2025-11/issue.yaml:" in result.stderr and "start" in result.stderr
    # The broken issue's last good build is kept; the other issue is built.
    assert (draft_dir(newsletter, "2025-11") / "email.html").read_bytes() == built["email.html"]
    assert (draft_dir(newsletter, "2021-12") / "email.html").is_file()


# -- typed HTML is shown as text ------------------------------------------------------------

HOSTILE = """\
subject: "<script>alert('subject')</script> November <b>news</b>"
preheader: "<script>alert('preheader')</script> and a preview long enough to show"
date: 2025-10-30
intro: |
  <script>alert('intro')</script> Welcome <b>everyone</b>.
sections:
  - type: news
    title: "<script>alert('title')</script> <img src=x onerror=alert(1)>"
    body: |
      <script>alert('body')</script>

      A paragraph with <b>raw</b> HTML, an <a href="https://evil.example">anchor</a>
      and [a script link](javascript:alert('link')).

      ![a tracking pixel](https://tracker.example/pixel.gif)
    image: {src: images/photo.png, alt: "<script>alert('alt')</script>\\" onload=\\"alert(1)"}
    links:
      - text: "<script>alert('link text')</script>"
        url: "https://example.org/?q=\\"><script>alert('url')</script>"
  - type: training
    title: Training
    booking_url: "https://example.org/book"
    booking_text: "<script>alert('booking')</script>"
    sessions:
      - date: 2025-12-03
        start: "09:30"
        end: "12:30"
        venue: "<script>alert('venue')</script>"
        note: "<i onmouseover=alert(1)>note</i>"
  - type: awareness
    title: "\\"><script>alert('awareness')</script>"
    date: 2025-11-05
"""

TYPED = [
    "<script>alert('subject')</script> November <b>news</b>",
    "<script>alert('intro')</script> Welcome <b>everyone</b>.",
    "<script>alert('title')</script> <img src=x onerror=alert(1)>",
    "<script>alert('body')</script>",
    "A paragraph with <b>raw</b> HTML",
    '<a href="https://evil.example">anchor</a>',
    "[a script link](javascript:alert('link'))",
    "<script>alert('link text')</script>",
    "<script>alert('booking')</script>",
    "<script>alert('venue')</script>",
    "<i onmouseover=alert(1)>note</i>",
    "\"><script>alert('awareness')</script>",
]


def test_html_typed_into_any_field_is_shown_as_text(newsletter: Path, cli: CLI) -> None:
    folder = newsletter / "issues/2025-12"
    (folder / "images").mkdir(parents=True)
    shutil.copy(newsletter / "issues/2021-12/images/ofsted.png", folder / "images/photo.png")
    (folder / "issue.yaml").write_text(HOSTILE, encoding="utf-8")
    assert cli("publish", "2025-12").exit_code == 0  # drafts are not in the archive
    result = cli("build", "--all")
    assert result.exit_code == 0, result.output

    pages = {
        name: lxml.html.document_fromstring((newsletter / "build/2025-12" / name).read_bytes())
        for name in ("email.html", "index.html")
    }
    pages["archive"] = lxml.html.document_fromstring((newsletter / "build/index.html").read_bytes())
    for name, doc in pages.items():
        assert doc.xpath("//script") == [], name
        handlers = [a for el in doc.iter() for a in getattr(el, "attrib", {}) if a.startswith("on")]
        assert handlers == [], name
        assert not doc.xpath("//a[starts-with(@href, 'javascript')]"), name
        assert not doc.xpath("//a[@href='https://evil.example']"), name
        # Pictures only come from image: keys, never from Markdown in a body.
        assert not doc.xpath("//img[contains(@src, 'tracker.example')]"), name
        # Nothing typed became a <b> or <i> element.
        assert not [el.text for el in doc.xpath("//b | //i")], name

    for name in ("email.html", "index.html"):
        doc = pages[name]
        text = doc.text_content()
        for typed in TYPED:
            # Prose gets typographic quotes (the subject line is kept as written).
            assert typed in text or smart_quotes(typed) in text, (name, typed)
        assert doc.xpath("//title")[0].text == TYPED[0]
        # The alt text and the link address stay inside their attributes.
        (img,) = doc.xpath("//img[contains(@src, 'photo.png')]")
        assert img.get("alt") == "<script>alert('alt')</script>\" onload=\"alert(1)"
        assert doc.xpath(
            "//a[@href=$u]", u="https://example.org/?q=\"><script>alert('url')</script>"
        )
    email_text = pages["email.html"].text_content()
    assert smart_quotes("<script>alert('preheader')</script> and a preview") in email_text
    assert TYPED[0] in pages["archive"].text_content()


# -- mailer new ------------------------------------------------------------------------------


def test_new_scaffolds_an_issue_that_builds(newsletter: Path, cli: CLI) -> None:
    result = cli("new", "2026-01", "--date", "2026-01-06")
    assert result.exit_code == 0, result.output
    path = newsletter / "issues/2026-01/issue.yaml"
    assert result.stdout == (
        "Created issues/2026-01/issue.yaml: edit it, then run: mailer build 2026-01\n"
    )
    text = path.read_text(encoding="utf-8")
    assert "date: 2026-01-06" in text
    assert "docs/content.md" in text
    # The template teaches by comments: every section type is shown.
    for kind in SECTION_TYPES:
        assert f"type: {kind}" in text

    result = cli("build", "2026-01")
    assert result.exit_code == 0, result.output
    html = (draft_dir(newsletter, "2026-01") / "email.html").read_text(encoding="utf-8")
    assert "Newsletter – January 2026" in html


def test_new_without_a_date_uses_today(newsletter: Path, cli: CLI) -> None:
    result = cli("new", "next")
    assert result.exit_code == 0, result.output
    assert cli("build", "next").exit_code == 0


def test_new_refuses_an_existing_slug(newsletter: Path, cli: CLI) -> None:
    before = (newsletter / ISSUE).read_bytes()
    result = cli("new", "2025-11")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == "issues/2025-11: already exists; choose another slug"
    assert "Traceback" not in result.output
    assert (newsletter / ISSUE).read_bytes() == before


@pytest.mark.parametrize("slug", ["Bad Slug", "../escape", "2026_01!", ".hidden"])
def test_new_refuses_an_invalid_slug(newsletter: Path, cli: CLI, slug: str) -> None:
    result = cli("new", slug)
    assert result.exit_code == 1
    assert "is not a valid slug" in result.stderr
    assert "Traceback" not in result.output
    assert sorted(p.name for p in (newsletter / "issues").iterdir()) == ["2021-12", "2025-11"]
    assert not (newsletter / "escape").exists()


def test_new_refuses_an_invalid_date(newsletter: Path, cli: CLI) -> None:
    result = cli("new", "2026-02", "--date", "2026-02-30")
    assert result.exit_code == 1
    assert "'2026-02-30' is not a valid date" in result.stderr
    assert not (newsletter / "issues/2026-02").exists()


def test_a_free_text_section_has_its_title_and_body_and_no_label(
    newsletter: Path, cli: CLI
) -> None:
    """A letter from the chair fits no kind of section: free text shows no kicker above its
    title, in the HTML part and in the plain-text part, and builds like any other."""
    folder = newsletter / "issues" / "2026-02"
    folder.mkdir(parents=True)
    (folder / "issue.yaml").write_text(
        'subject: "CSCP Newsletter – February 2026"\n'
        'preheader: "A letter from the chair and this month\'s news for practitioners"\n'
        "date: 2026-02-02\n"
        "sections:\n"
        "  - type: text\n"
        "    title: A message from the chair\n"
        "    body: |\n"
        "      Thank you for everything you do to keep children safe.\n"
        "  - type: news\n"
        "    title: Family Help changes\n"
        "    body: |\n"
        "      Cumberland is changing how Family Help is delivered.\n",
        encoding="utf-8",
    )
    result = cli("build", "2026-02")
    assert result.exit_code == 0, result.output
    out = draft_dir(newsletter, "2026-02")
    page = lxml.html.fromstring((out / "email.html").read_text(encoding="utf-8"))
    titles = page.xpath("//h2[@class='title']")
    assert [t.text_content() for t in titles] == ["A message from the chair", "Family Help changes"]
    # Only the news item has its kind named above its title.
    kickers = [k.text_content() for k in page.xpath("//p[@class='kicker']")]
    assert kickers == ["Partnership news"]
    assert "Thank you for everything you do" in page.text_content()
    text = (out / "email.txt").read_text(encoding="utf-8")
    assert "PARTNERSHIP NEWS\nFamily Help changes\n-------------------\n" in text
    (before,) = re.findall(r"(.*)\nA message from the chair\n-{24}\n", text)
    assert before == ""  # a blank line, no label, above the letter's title
    assert "FREE TEXT" not in text
