"""The compiled example issues checked against what an email must satisfy.

The two real example issues are built once per module (Jinja, MJML, premailer and the text
part all run for real) and every point of the acceptance criteria is checked on the files a
user would send or publish.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import cssutils
import lxml.html
import pytest
import typer.main

from conftest import EXAMPLE, Result, draft_dir
from mailer import __version__, config, formats, urls
from mailer.cli import app
from mailer.config import Settings
from mailer.content import Issue, all_slugs, load_issues, phones
from mailer.content.overrides import issue_settings
from mailer.formats import human_size
from mailer.render.compile import environment, mjml_html
from mailer.render.markdown import parser, smart_quotes
from mailer.render.text import WIDTH
from mailer.site import build as builder

SLUGS = ("2025-11", "2021-12")
GMAIL_CLIP = 102 * 1000  # Gmail clips messages above about 102 KB; stay clear of it.
ATOM = "{http://www.w3.org/2005/Atom}"
# Conditional comments for Outlook: <!--[if mso | IE]>, <!--[if lte mso 11]> and so on.
MSO_BLOCK = re.compile(r"<!--\[if (?!!)[^\]]*mso[^\]]*\]>.*?<!\[endif\]-->", re.DOTALL)
STYLE = re.compile(r"<style[^>]*>(.*?)</style>", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Built:
    settings: Settings
    issues: dict[str, Issue]
    seconds: float

    def path(self, *parts: str) -> Path:
        return self.settings.build_dir.joinpath(*parts)

    def text(self, *parts: str) -> str:
        return self.path(*parts).read_text(encoding="utf-8")

    def mjml_output(self, slug: str, *, web: bool = False) -> str:
        """What the MJML compiler wrote for the issue, before premailer inlined the CSS."""
        settings = self.settings
        return mjml_html(settings, self.issues[slug], environment(settings), web=web)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The example newsletter folder copied once and built with --all."""
    root = tmp_path_factory.mktemp("render") / "newsletter"
    root.mkdir()
    shutil.copytree(EXAMPLE, root, dirs_exist_ok=True)
    settings = config.load(
        root, env={"MAILER_SECRET_KEY": "test-secret-key-with-at-least-32-bytes"}
    )
    for slug in SLUGS:  # drafts are left out of the archive and the feed
        builder.publish(settings, slug)
    started = time.perf_counter()
    builder.build(settings, all_slugs(settings), archive=True)
    seconds = time.perf_counter() - started
    issues = {i.slug: i for i in load_issues(settings, SLUGS)}
    return Built(settings, issues, seconds)


def parse(html: str) -> Any:
    return lxml.html.document_fromstring(html.encode("utf-8"))


# -- the HTML email --------------------------------------------------------------------------


@pytest.mark.parametrize("slug", SLUGS)
def test_standards_mode_language_and_colour_scheme(built: Built, slug: str) -> None:
    html = built.text(slug, "email.html")
    assert html.startswith("<!doctype html>\n")
    assert re.search(r"^<html lang=\"en\"", html, re.MULTILINE)
    assert '<meta name="color-scheme" content="light dark">' in html


@pytest.mark.parametrize("slug", SLUGS)
def test_every_table_is_a_layout_table(built: Built, slug: str) -> None:
    html = built.text(slug, "email.html")
    # Count in the raw text so the tables inside Outlook's conditional comments count too.
    tables = re.findall(r"<table\b[^>]*>", html, re.IGNORECASE)
    assert len(tables) > 10
    assert [t for t in tables if 'role="presentation"' not in t] == []


@pytest.mark.parametrize("slug", SLUGS)
def test_every_image_has_alt_text(built: Built, slug: str) -> None:
    doc = parse(built.text(slug, "email.html"))
    images = doc.xpath("//img")
    expected = {
        urls.image_url(built.settings, slug, s.image.src): s.image.alt
        for s in built.issues[slug].sections
        if s.image
    }
    assert len(images) == len(expected)
    for img in images:
        # Every image in the newsletter carries information, so none may have an empty alt.
        assert img.get("alt"), lxml.html.tostring(img)
        assert img.get("alt") == expected[img.get("src")]
    if slug == "2021-12":
        assert len(images) == 4


@pytest.mark.parametrize("slug", SLUGS)
def test_exactly_one_hidden_preheader(built: Built, slug: str) -> None:
    doc = parse(built.text(slug, "email.html"))
    hidden = doc.xpath("//body//*[contains(translate(@style, ' ', ''), 'display:none')]")
    assert len(hidden) == 1
    preview = hidden[0].text_content()
    assert preview == smart_quotes(built.issues[slug].preheader)
    # Hidden in Gmail and Apple Mail (display, height, overflow) and Outlook (mso-hide),
    # without the font colour equal to the background that SpamAssassin scores.
    style = hidden[0].get("style").replace(" ", "")
    assert {"display:none", "max-height:0", "overflow:hidden", "mso-hide:all"} <= set(
        style.split(";")
    )
    assert "color" not in style and "font-size" not in style
    assert 40 <= len(preview) <= 130
    assert preview != built.issues[slug].subject


@pytest.mark.parametrize("slug", SLUGS)
def test_media_queries_and_important_survive_inlining(built: Built, slug: str) -> None:
    before = built.mjml_output(slug)
    after = built.text(slug, "email.html")
    assert "@media (prefers-color-scheme: dark)" in after
    assert "@media only screen and (max-width: 480px)" in after
    assert after.count("!important") >= 10
    # Every stylesheet except the one marked for inlining comes through byte for byte.
    kept = [css for css in STYLE.findall(before) if "/* mailer:inline */" not in css]
    assert len(kept) >= 3
    final_styles = STYLE.findall(after)
    for css in kept:
        assert css in final_styles
    assert sum(css.count("!important") for css in kept) == sum(
        css.count("!important") for css in final_styles
    )


@pytest.mark.parametrize("slug", SLUGS)
def test_only_our_styles_are_inlined(built: Built, slug: str) -> None:
    html = built.text(slug, "email.html")
    assert "mailer:inline" not in html
    assert "data-premailer" not in html
    # MJML's base styles stay in <head> rather than being copied onto every cell.
    assert "#outlook a { padding: 0; }" in html
    doc = parse(html)
    for title in doc.xpath("//h2[contains(@class, 'title')]"):
        assert "font-size:22px" in title.get("style").replace(" ", "")


@pytest.mark.parametrize("slug", SLUGS)
def test_outlook_conditional_comments_are_byte_identical(built: Built, slug: str) -> None:
    before = MSO_BLOCK.findall(built.mjml_output(slug))
    after = MSO_BLOCK.findall(built.text(slug, "email.html"))
    assert len(before) >= 20
    assert after == before


@pytest.mark.parametrize("slug", SLUGS)
def test_image_widths_are_the_ones_mjml_computed(built: Built, slug: str) -> None:
    def widths(html: str) -> list[tuple[str | None, str | None]]:
        return [(img.get("src"), img.get("width")) for img in parse(html).xpath("//img")]

    before = widths(built.mjml_output(slug))
    assert widths(built.text(slug, "email.html")) == before
    if slug == "2021-12":
        # 600px images in a 640px column with 24px padding each side.
        assert {w for _, w in before} == {"592"}


def test_the_november_email_is_well_under_gmails_clipping_size(built: Built) -> None:
    size = built.path("2025-11", "email.html").stat().st_size
    print(f"\nbuild/2025-11/email.html: {size} bytes ({size / 1024:.1f} KiB)")
    print(f"building both example issues took {built.seconds:.2f} s")
    assert size < GMAIL_CLIP
    assert size < 50_000, "the aim is below 50 KB"


def test_the_email_keeps_per_recipient_placeholders_and_the_web_page_does_not(
    built: Built,
) -> None:
    for slug in SLUGS:
        email = built.text(slug, "email.html")
        web = built.text(slug, "index.html")
        for placeholder in urls.PLACEHOLDERS:
            assert placeholder in email
        assert "%%MAILER_" not in web
        assert "View this email in your browser" in email
        assert "View this email in your browser" not in web
        doc = parse(email)
        (view,) = doc.xpath("//a[normalize-space()='View this email in your browser']")
        assert view.get("href") == urls.issue_url(built.settings, slug)
        assert doc.xpath("//a[normalize-space()='Unsubscribe']/@href") == [
            urls.UNSUBSCRIBE_PLACEHOLDER
        ]
        web_doc = parse(web)
        assert web_doc.xpath("//a[normalize-space()='Unsubscribe']/@href") == [
            urls.generic_unsubscribe_url(built.settings)
        ]
        # The web page is the same newsletter: every section title is there.
        for section in built.issues[slug].sections:
            assert web_doc.xpath("//h2[normalize-space()=$t]", t=smart_quotes(section.title))


@pytest.mark.parametrize("slug", SLUGS)
def test_the_footer_says_who_where_and_why(built: Built, slug: str) -> None:
    # The 2021-12 example has its own organisation and footer (per-issue settings).
    s = issue_settings(built.settings, built.issues[slug])
    for page in ("email.html", "index.html"):
        text = " ".join(parse(built.text(slug, page)).text_content().split())
        assert s.organisation in text
        assert s.footer.postal_address in text
        assert f"{s.organisation}, {s.organisation}" not in text  # named once, not twice
        assert s.footer.why in text
        assert "Manage your subscription" in text
        assert "Unsubscribe" in text


def test_training_sessions_show_weekday_date_time_venue_and_a_booking_button(
    built: Built,
) -> None:
    doc = parse(built.text("2025-11", "email.html"))
    for br in doc.iter("br"):
        br.tail = " " + (br.tail or "")
    text = " ".join(doc.text_content().split())
    for section in built.issues["2025-11"].sections:
        for s in section.sessions:
            expected = f"{formats.long_date(s.date)} {formats.time_range(s)} · {s.venue}"
            assert expected in text
        if section.booking_url:
            assert doc.xpath(
                "//a[@href=$u and normalize-space()=$t]",
                u=section.booking_url,
                t=section.booking_text,
            )
    assert "Microsoft Teams Online" in text


# -- the plain-text part ---------------------------------------------------------------------


def markdown_urls(source: str) -> list[str]:
    found = []
    for token in parser().parse(source):
        for child in token.children or []:
            if child.type == "link_open":
                found.append(str(child.attrGet("href")))
    return found


def issue_urls(issue: Issue) -> list[str]:
    """Every address a reader can follow in the issue, taken from the content itself."""
    found = markdown_urls(issue.intro)
    for section in issue.sections:
        found += markdown_urls(section.body)
        found += [link.url for link in section.links]
        found += [section.booking_url] if section.booking_url else []
        found += [s.url for s in section.sessions if s.url]
    return found


@pytest.mark.parametrize("slug", SLUGS)
def test_the_text_part_carries_everything_a_reader_needs(built: Built, slug: str) -> None:
    issue = built.issues[slug]
    text = built.text(slug, "email.txt")
    flat = " ".join(text.split())
    addresses = issue_urls(issue)
    assert len(addresses) >= (20 if slug == "2025-11" else 10)
    numbers = {phones.tel_href(m.group()): m.group() for m in phones.find(text)}
    for url in addresses:
        # A telephone link is the number as written; every other address is in full.
        assert numbers.get(url, url.removeprefix("mailto:")) in text, url
    sessions = [s for section in issue.sections for s in section.sessions]
    assert len(sessions) == (31 if slug == "2025-11" else 0)
    for s in sessions:
        assert f"{formats.long_date(s.date)}, {formats.time_range(s)}, {s.venue}" in flat
    for section in issue.sections:
        if section.closes:
            assert f"Closes {formats.long_date(section.closes)}" in flat
        if section.type == "awareness":
            assert formats.awareness_when(section) in flat
    lines = text.splitlines()
    assert urls.issue_url(built.settings, slug) in lines
    assert issue_settings(built.settings, issue).footer.postal_address in flat
    assert urls.UNSUBSCRIBE_PLACEHOLDER in lines
    assert urls.PREFERENCES_PLACEHOLDER in lines
    assert "<" not in text  # nothing was scraped from the HTML


def long_lines(text: str) -> list[str]:
    """Lines over the limit that are not a single unbreakable address."""
    return [
        line
        for line in text.splitlines()
        if len(line) > WIDTH
        and not (len(line.split()) == 1 and re.search(r"https?://|mailto:|@", line))
    ]


@pytest.mark.parametrize("slug", SLUGS)
def test_the_text_part_is_wrapped_at_78_characters(built: Built, slug: str) -> None:
    text = built.text(slug, "email.txt")
    assert WIDTH == 78
    assert long_lines(text) == []
    widths = sorted(len(line) for line in text.splitlines())
    print(
        f"\n{slug}/email.txt: {len(widths)} lines, longest {widths[-1]}, "
        f"{sum(w > WIDTH for w in widths)} over {WIDTH} (single URLs)"
    )


# -- archive and feed ------------------------------------------------------------------------


def test_the_archive_lists_every_issue_newest_first(built: Built) -> None:
    doc = parse(built.text("index.html"))
    links = [(a.get("href"), a.text_content()) for a in doc.xpath("//main//ol//a")]
    assert doc.xpath("//main//a/@href")[0] == urls.training_url(built.settings)
    assert links == [
        (urls.issue_url(built.settings, slug), built.issues[slug].subject) for slug in SLUGS
    ]
    assert doc.xpath("//link[@type='application/atom+xml']/@href") == [
        urls.feed_url(built.settings)
    ]


def test_the_feed_is_valid_atom_newest_first(built: Built) -> None:
    feed = ET.fromstring(built.path("feed.xml").read_bytes())
    assert feed.tag == f"{ATOM}feed"
    for tag in ("id", "title", "updated", "author"):
        assert feed.find(f"{ATOM}{tag}") is not None, tag
    assert feed.find(f"{ATOM}link[@rel='self']").get("href") == urls.feed_url(built.settings)
    entries = feed.findall(f"{ATOM}entry")
    assert len(entries) == len(SLUGS)
    for entry, slug in zip(entries, SLUGS, strict=True):
        issue = built.issues[slug]
        assert entry.findtext(f"{ATOM}title") == issue.subject
        assert entry.findtext(f"{ATOM}id") == urls.issue_url(built.settings, slug)
        assert entry.find(f"{ATOM}link").get("href") == urls.issue_url(built.settings, slug)
        assert entry.findtext(f"{ATOM}updated", "").startswith(issue.date.isoformat())
        assert entry.findtext(f"{ATOM}summary") == issue.preheader
    updated = [e.findtext(f"{ATOM}updated") for e in entries]
    assert updated == sorted(updated, reverse=True)
    assert feed.findtext(f"{ATOM}updated") == updated[0]


# -- no network, no noise --------------------------------------------------------------------


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Make every attempt to reach another machine fail, and record the attempts."""
    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args))
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield attempts


def test_the_build_makes_no_network_connection_and_prints_no_css_warnings(
    newsletter: Path,
    cli: Callable[..., Result],
    no_network: list[str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    recorder = _Recorder()
    cssutils_logger = logging.getLogger("CSSUTILS")
    cssutils_logger.addHandler(recorder)
    previous = cssutils_logger.level
    # Start from a chatty level, so only our pinned options can quieten cssutils.
    cssutils.log.setLevel(logging.INFO)
    try:
        result = cli("build", "--all")
    finally:
        cssutils_logger.removeHandler(recorder)
        cssutils.log.setLevel(previous)
    assert result.exit_code == 0, result.output
    assert no_network == []
    assert [r.getMessage() for r in recorder.records if r.levelno >= logging.WARNING] == []
    out, err = capfd.readouterr()
    assert "WARNING" not in out + err + result.stderr
    assert result.stderr == ""


# -- the command line ------------------------------------------------------------------------


def test_build_prints_each_file_and_its_size(newsletter: Path, cli: Callable[..., Result]) -> None:
    result = cli("build", "2021-12")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    folder = draft_dir(newsletter, "2021-12")  # a draft: built outside build/
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert len(files) == 7  # email.html, email.txt, index.html and four images
    for path in files:
        rel = str(path.relative_to(newsletter))
        (line,) = [line for line in lines if line.split()[0] == rel]
        assert line.endswith(human_size(path.stat().st_size))
    assert lines[:3] == [
        line
        for line in lines
        if line.split()[0].endswith(("email.html", "email.txt", "index.html"))
    ]
    assert lines[-1] == "Built 1 draft into .mailer/preview/"


def test_build_all_prints_the_archive_and_feed_too(
    newsletter: Path, cli: Callable[..., Result]
) -> None:
    result = cli("build", "--all")
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.stdout.splitlines()[:-1]]
    assert "build/index.html" in names
    assert "build/feed.xml" in names
    assert ".mailer/preview/2025-11/email.html" in names
    assert result.stdout.splitlines()[-1] == "Built 2 drafts into .mailer/preview/"
    assert cli("publish", "2025-11").exit_code == 0
    result = cli("build", "--all")
    assert "build/2025-11/email.html" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        "Built 1 issue into build/ and 1 draft into .mailer/preview/"
    )


def test_build_without_arguments_explains_itself(
    newsletter: Path, cli: Callable[..., Result]
) -> None:
    result = cli("build")
    assert result.exit_code == 1
    assert "name at least one issue to build" in result.stderr
    assert "or use --all" in result.stderr


def test_version(cli: Callable[..., Result]) -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout == f"mailer {__version__}\n"


def command_paths() -> list[tuple[str, ...]]:
    root = typer.main.get_command(app)
    found: list[tuple[str, ...]] = [()]

    def walk(command: Any, path: tuple[str, ...]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            found.append((*path, name))
            walk(sub, (*path, name))

    walk(root, ())
    return found


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(("mailer", *p)))
def test_every_help_shows_an_example(cli: Callable[..., Result], path: tuple[str, ...]) -> None:
    result = cli(*path, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert re.search(rf"^\s+mailer {' '.join(path)}", result.stdout, re.MULTILINE)


def test_a_template_added_or_edited_in_the_folder_is_used_by_the_next_build_in_the_same_process(
    settings: Settings,
) -> None:
    # The preview server and the worker build many times in one process: the templates
    # they parsed once must not hide the comms officer's later changes.
    from mailer.render.compile import LAYOUT, compile_slug

    slug = all_slugs(settings)[0]
    assert "Made in this folder" not in compile_slug(settings, slug).email_html
    shipped = (Path(config.__file__).parent / "render/templates" / LAYOUT).read_text()
    override = settings.templates_dir / LAYOUT
    override.parent.mkdir(parents=True, exist_ok=True)
    marked = shipped.replace("</mj-body>", "<mj-raw><p>Made in this folder</p></mj-raw></mj-body>")
    assert marked != shipped
    override.write_text(marked)
    assert "Made in this folder" in compile_slug(settings, slug).email_html
    override.write_text(marked.replace("Made in this folder", "Edited in this folder"))
    html = compile_slug(settings, slug).email_html
    assert "Edited in this folder" in html and "Made in this folder" not in html
