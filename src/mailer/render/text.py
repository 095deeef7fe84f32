"""The plain-text part, written from the content itself (never scraped from the HTML).

Lines are wrapped at 78 characters; URLs are never broken, so a long URL may stand on a
line of its own that is longer.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from markdown_it.token import Token

from mailer.content.model import KICKERS
from mailer.formats import awareness_when, day_month_year, long_date, session_line
from mailer.render.markdown import parser, smart_quotes
from mailer.render.typography import TEL_META

if TYPE_CHECKING:
    from collections.abc import Callable

    from mailer.config import Settings
    from mailer.content import Issue, Section, Session

    SessionURL = Callable[[Section, Session], str]

WIDTH = 78


def wrap(text: str, indent: str = "", first: str | None = None, width: int = WIDTH) -> str:
    return textwrap.fill(
        " ".join(text.split()),
        width=width,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _inline(token: Token) -> str:
    """Flatten an inline token: links become ``text (url)``, emphasis is dropped."""
    out: list[str] = []
    href: str | None = None
    link_text: list[str] = []
    for child in token.children or []:
        if child.type == "link_open":
            # A telephone number the renderer linked is the number itself in plain text.
            href = "" if child.meta.get(TEL_META) else str(child.attrGet("href") or "")
            link_text = []
        elif child.type == "link_close":
            label = "".join(link_text).strip()
            if href and label and label != href and href != f"mailto:{label}":
                out.append(f"{label} ({href})")
            else:
                out.append(href.removeprefix("mailto:") if href else label)
            href = None
        elif child.type in ("text", "code_inline"):
            (link_text if href is not None else out).append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            (link_text if href is not None else out).append(" ")
    return "".join(out)


def markdown_to_text(source: str, width: int = WIDTH) -> str:
    """Markdown as readable plain text: paragraphs, bullets with '-', numbered items,
    wrapped at ``width`` characters."""
    blocks: list[tuple[bool, str]] = []  # (is a list item, wrapped text)
    stack: list[list[int]] = []  # for each open list: [is ordered, next number]
    item_first = False
    for token in parser().parse(source or ""):
        if token.type in ("bullet_list_open", "ordered_list_open"):
            stack.append([token.type == "ordered_list_open", int(token.attrGet("start") or 1)])
        elif token.type in ("bullet_list_close", "ordered_list_close"):
            stack.pop()
        elif token.type == "list_item_open":
            item_first = True
        elif token.type == "inline":
            text = _inline(token)
            if not stack:
                blocks.append((False, wrap(text, width=width)))
                continue
            depth = "  " * (len(stack) - 1)
            ordered, number = stack[-1]
            marker = f"{number}. " if ordered else "- "
            hang = depth + " " * len(marker)
            if item_first:
                stack[-1][1] += 1
                blocks.append((True, wrap(text, hang, depth + marker, width)))
                item_first = False
            else:
                blocks.append((True, wrap(text, hang, width=width)))
        elif token.type in ("fence", "code_block"):
            blocks.append((False, token.content.rstrip()))
    # List items sit on adjacent lines; every other block is a paragraph of its own.
    out: list[str] = []
    previous_item = False
    for is_item, text in blocks:
        if out and not (is_item and previous_item):
            out.append("")
        out.append(text)
        previous_item = is_item
    return "\n".join(out)


def _labelled(label: str, value: str, indent: str = "") -> str:
    """``label: value`` on one line when it fits; otherwise the value (a URL) on its own line."""
    return wrap(f"{label}: {value}", indent)


def _section_text(section: Section, session_url: SessionURL) -> list[str]:
    title = wrap(smart_quotes(section.title))
    rule = "-" * max(len(line) for line in title.splitlines())
    kicker = KICKERS[section.type]
    parts = [*([kicker.upper()] if kicker else []), title, rule]
    when = awareness_when(section)
    if when:
        parts += ["", wrap(when)]
    if section.body:
        parts += ["", markdown_to_text(section.body)]
    if section.sessions:
        parts += ["", "Date:" if len(section.sessions) == 1 else "Dates:"]
        for s in section.sessions:
            parts.append(wrap(smart_quotes(session_line(s)), "    ", "  - "))
            if s.url:
                parts.append(_labelled("Join online", s.url, "    "))
            if s.note:
                parts.append(wrap(smart_quotes(s.note), "    "))
            parts.append(_labelled("Add to calendar", session_url(section, s), "    "))
    if section.booking_url:
        booking = smart_quotes(section.booking_text)
        parts += ["", _labelled(booking, section.booking_url.removeprefix("mailto:"))]
    if section.closes:
        parts += ["", f"Closes {long_date(section.closes)}."]
    for link in section.links:
        parts += ["", wrap(f"{smart_quotes(link.text)}:"), link.url.removeprefix("mailto:")]
    return parts


def render_text(
    settings: Settings,
    issue: Issue,
    *,
    web_url: str,
    unsubscribe_url: str,
    preferences_url: str,
    session_url: SessionURL,
    training_url: str,
    signup_url: str | None = None,
) -> str:
    rule = "=" * WIDTH
    lines = [
        wrap(issue.subject),
        wrap(f"{settings.organisation} · {day_month_year(issue.date)}"),
        "",
        "View this email in your browser:",
        web_url,
    ]
    if issue.intro:
        lines += ["", markdown_to_text(issue.intro)]
    lines += ["", "IN THIS ISSUE"]
    lines += [wrap(smart_quotes(s.title), "    ", "  - ") for s in issue.sections]
    if any(s.sessions for s in issue.sections):
        lines += [
            "",
            wrap(
                "Every upcoming course is also in the training calendar, which your calendar "
                "app can subscribe to:"
            ),
            training_url,
        ]
    for section in issue.sections:
        lines += ["", rule, ""]
        lines += _section_text(section, session_url)
    lines += ["", rule, ""]
    # The postal address usually begins with the organisation's name; do not say it twice.
    if not settings.footer.postal_address.startswith(settings.organisation):
        lines += [wrap(settings.organisation)]
    lines += [wrap(settings.footer.postal_address), ""]
    lines += [wrap(settings.footer.why)]
    if settings.footer.contact:
        lines += ["", wrap(settings.footer.contact)]
    if signup_url:
        lines += ["", "Forwarded to you? Sign up to get it yourself:", signup_url]
    lines += [
        "",
        "Manage your subscription:",
        preferences_url,
        "Unsubscribe:",
        unsubscribe_url,
    ]
    if settings.footer.privacy_url:
        lines += ["Privacy notice:", settings.footer.privacy_url]
    lines.append("")
    return "\n".join(lines)
