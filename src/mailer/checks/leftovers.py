"""Leftovers: placeholders, the untouched `mailer new` template, and contact details in text."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterator

from ruamel.yaml import YAML

from mailer.checks.registry import Context, Hit, Severity, check, quote
from mailer.content import phones
from mailer.content.scaffold import template_text

PLACEHOLDER = re.compile(r"\b(?:TODO|FIXME|TBC|TBA|TBD|TK|XXX+)\b|(?i:lorem ipsum|\[insert\b)")
_MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\([^)]*\)")
EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
# Template lines shorter than this are too ordinary to recognise ("A news item" is kept
# by equality below).
_PHRASE = 24


def _outside_links(text: str) -> str:
    """``text`` with Markdown links blanked out, keeping every character's offset."""
    return _MARKDOWN_LINK.sub(lambda m: " " * len(m.group()), text)


@check(
    "placeholder",
    Severity.ERROR,
    'A placeholder is left in: "TODO", "TBC", "TBA", "TK", "XXX", "lorem ipsum", "[insert".',
    "replace it with the real text, or remove it",
)
def no_placeholders(ctx: Context) -> Iterator[Hit]:
    for field in ctx.source.fields():
        for m in PLACEHOLDER.finditer(field.text):
            yield Hit(f"{quote(m.group())} in the {field.kind}", field.line_at(m.start()))
    for i, section in enumerate(ctx.issue.sections):
        urls = [link.url for link in section.links] + [section.booking_url or ""]
        for url in urls:
            if PLACEHOLDER.search(url):
                yield Hit(
                    f"{quote(url, 70)} is a placeholder address", ctx.source.line("sections", i)
                )


# A ``# REVIEW: ...`` comment that `mailer new --from` wrote on what it carried over.
REVIEW_MARK = re.compile(r"#\s*REVIEW\b:?\s*(?P<what>.*)")


@check(
    "review-mark",
    Severity.ERROR,
    "A line carried over by `mailer new --from` is still marked `# REVIEW`.",
    "check what the comment says, change the line if needed, then delete the comment",
)
def no_review_marks(ctx: Context) -> Iterator[Hit]:
    # Comments are not in the parsed issue, so read the lines; a mark inside a block of
    # text would be part of the text, and no `mailer new` writes one there.
    blocks = {
        (f.block_line, f.block_line + f.text.count("\n"))
        for f in ctx.source.fields()
        if f.block_line is not None
    }
    for number, line in enumerate(ctx.source.text.splitlines(), 1):
        m = REVIEW_MARK.search(line)
        if not m or any(first <= number <= last for first, last in blocks):
            continue
        what = m["what"].strip()
        yield Hit(
            f"still marked for review: {quote(what, 80) if what else 'a REVIEW comment'}", number
        )


@functools.cache
def _template_values(date_text: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """The text values of the `mailer new` template: whole values, and long lines of them."""
    data = YAML(typ="safe").load(template_text(dt.date.fromisoformat(date_text)))
    values: list[str] = []
    # The subject is recognised only whole: a real one often ends like the template's.
    subject = " ".join(str(data.pop("subject", "")).split())

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            values.append(" ".join(node.split()))

    walk(data)
    phrases = {
        line.strip(" -")
        for value in values
        for line in re.split(r"(?<=[.!?])\s+|\s+-\s+", value)
        if len(line.strip(" -")) >= _PHRASE
    }
    return frozenset([*values, subject]), tuple(sorted(phrases))


@check(
    "template-text",
    Severity.ERROR,
    "Text from the `mailer new` template is still there.",
    "write your own text in its place",
)
def template_replaced(ctx: Context) -> Iterator[Hit]:
    whole, phrases = _template_values(ctx.issue.date.isoformat())
    for field in ctx.source.fields():
        flat = " ".join(field.text.split())
        if flat in whole:
            yield Hit(f"the {field.kind} {quote(flat)} is the template's", field.key_line)
            continue
        for phrase in phrases:
            at = field.text.find(phrase.split()[0])
            if phrase in flat:
                yield Hit(
                    f"the {field.kind} still has the template's {quote(phrase)}",
                    field.line_at(max(at, 0)),
                )
                break


@check(
    "email-in-text",
    Severity.NOTE,
    "An email address is written in the text (often intended, such as a team's inbox).",
    "make it a link, e.g. [team@example.org](mailto:team@example.org), so readers can tap it",
)
def addresses_linked(ctx: Context) -> Iterator[Hit]:
    for field in ctx.source.fields():
        if field.kind in ("link text", "alt text"):
            continue
        for m in EMAIL.finditer(_outside_links(field.text)):
            yield Hit(f"{m.group()} in the {field.kind} is not a link", field.line_at(m.start()))


# Where a telephone number cannot become a link: the renderer links those in every other
# text (bodies, the intro, venues, notes), and link texts are links already.
_UNLINKED = ("subject", "preheader", "title", "booking text")


@check(
    "phone-in-text",
    Severity.NOTE,
    "A UK phone number is written where it cannot be a link: the subject, the preheader, a "
    "title or a button.",
    "say it in the text as well, where it becomes a tel: link phones can call",
)
def phones_linked(ctx: Context) -> Iterator[Hit]:
    for field in ctx.source.fields():
        if field.kind not in _UNLINKED:
            continue
        for m in phones.find(field.text):
            yield Hit(
                f"{m.group()} in the {field.kind} cannot be a tel: link", field.line_at(m.start())
            )
