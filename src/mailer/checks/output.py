"""The built email: its size, subject, preheader, text part and years."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from html.parser import HTMLParser

from mailer import urls
from mailer.checks.registry import Context, Hit, Severity, check, quote
from mailer.config import CONFIG_NAME
from mailer.content import phones
from mailer.formats import human_size

KB = 1024
# Gmail clips an HTML part over about 102 KB and hides the rest, unsubscribe link included.
CLIPPED = 102 * KB
LARGE = 90 * KB
SUBJECT = (10, 78)
PREHEADER = (40, 130)
_COPYRIGHT = re.compile(
    r"(?:©|\(c\)|copyright)\s*(?:©\s*)?((?:19|20)\d{2})(?:\s*[–-]\s*((?:19|20)\d{2}))?",
    re.IGNORECASE,
)
_YEAR = re.compile(r"\b(?:19|20)\d{2}\b")


def sent_size(ctx: Context) -> int:
    """The HTML part's size as a reader receives it, with a typical personal link in place."""
    sample = urls.unsubscribe_url(ctx.settings, "x" * 60)
    body = ctx.compiled.email_html
    for placeholder in urls.PLACEHOLDERS:
        body = body.replace(placeholder, sample)
    return len(body.encode("utf-8"))


@check(
    "html-clipped",
    Severity.ERROR,
    "The email's HTML is over 102 KB: Gmail clips it and hides the rest, unsubscribe link "
    "included.",
    "shorten the issue: move long text to the website and link to it",
)
def not_clipped(ctx: Context) -> Iterator[Hit]:
    size = sent_size(ctx)
    if size > CLIPPED:
        yield Hit(f"the email's HTML is {human_size(size)}, over Gmail's {human_size(CLIPPED)}")


@check(
    "html-large",
    Severity.WARNING,
    "The email's HTML is over 90 KB, close to Gmail's 102 KB clipping limit.",
    "shorten the issue before it grows past 102 KB",
)
def not_too_large(ctx: Context) -> Iterator[Hit]:
    size = sent_size(ctx)
    if LARGE < size <= CLIPPED:
        yield Hit(f"the email's HTML is {human_size(size)}")


@check(
    "subject-length",
    Severity.WARNING,
    f"The subject is shorter than {SUBJECT[0]} or longer than {SUBJECT[1]} characters.",
    f"write a subject of {SUBJECT[0]} to {SUBJECT[1]} characters: inboxes cut long ones",
)
def subject_fits(ctx: Context) -> Iterator[Hit]:
    n = len(ctx.issue.subject)
    if not SUBJECT[0] <= n <= SUBJECT[1]:
        yield Hit(f"the subject is {n} characters long", ctx.source.line("subject"))


@check(
    "preheader-length",
    Severity.WARNING,
    f"The preheader is missing, or shorter than {PREHEADER[0]} or longer than {PREHEADER[1]} "
    "characters.",
    f"write a preheader of {PREHEADER[0]} to {PREHEADER[1]} characters: the line inboxes show "
    "after the subject",
)
def preheader_fits(ctx: Context) -> Iterator[Hit]:
    n = len(ctx.issue.preheader)
    if n == 0:
        yield Hit("there is no preheader", ctx.source.line("preheader"))
    elif not PREHEADER[0] <= n <= PREHEADER[1]:
        yield Hit(f"the preheader is {n} characters long", ctx.source.line("preheader"))


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(html.unescape(href))


@check(
    "text-missing-link",
    Severity.ERROR,
    "A link in the HTML part is missing from the plain-text part.",
    "a template override links something the text part leaves out: add it to both",
)
def text_has_every_link(ctx: Context) -> Iterator[Hit]:
    found = _Links()
    found.feed(ctx.compiled.email_html)
    text = ctx.compiled.email_text
    # A number the renderer linked is in the text part as it was written.
    numbers = {phones.tel_href(m.group()) for m in phones.find(text)}
    for href in dict.fromkeys(found.hrefs):
        if href.startswith("#") or href in numbers:
            continue
        target = href
        for prefix in ("mailto:", "tel:"):
            if href.lower().startswith(prefix):
                target = href[len(prefix) :].partition("?")[0]
        if target not in text and href not in text:
            yield Hit(f"{quote(href, 70)} is in the HTML but not in the text part")


def _stale(ctx: Context, text: str) -> Iterator[str]:
    year = ctx.issue.date.year
    for m in _COPYRIGHT.finditer(text):
        last = int(m[2] or m[1])
        if last != year:
            yield f"{quote(m.group())} is not {year}, the issue's year"
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        if "this year" in sentence.lower():
            for y in _YEAR.findall(sentence):
                if int(y) != year:
                    yield f'{quote(sentence, 70)} says "this year" beside {y}'
                    break


@check(
    "year-stale",
    Severity.WARNING,
    'A copyright year, or a year beside "this year", is not the issue\'s year.',
    "update the year",
)
def years_current(ctx: Context) -> Iterator[Hit]:
    for field in ctx.source.fields():
        for message in _stale(ctx, field.text):
            yield Hit(f"{message} (in the {field.kind})", field.key_line)
    footer = ctx.settings.footer
    for text in (footer.postal_address, footer.contact, footer.why):
        for message in _stale(ctx, text):
            yield Hit(f"{message} (in the footer)", file=CONFIG_NAME)
    # A template override can carry its own year.
    shown = re.sub(r"<[^>]+>", " ", html.unescape(ctx.compiled.email_html))
    written = " ".join(f.text for f in ctx.source.fields()) + " ".join(
        (footer.postal_address, footer.contact, footer.why)
    )
    for m in _COPYRIGHT.finditer(shown):
        if m.group() not in written and int(m[2] or m[1]) != ctx.issue.date.year:
            yield Hit(
                f"{quote(m.group())} in the templates is not {ctx.issue.date.year}",
                file="templates/",
            )
