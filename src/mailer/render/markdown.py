"""Markdown (CommonMark, raw HTML off) to HTML for email bodies, with the newsletter's
typography (:mod:`mailer.render.typography`): typographic quotes and ``tel:`` links."""

from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt
from markupsafe import Markup

from mailer.render import typography


@lru_cache(maxsize=1)
def parser() -> MarkdownIt:
    # "commonmark" with html=False shows any typed HTML (including <script>) as text.
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.validateLink = _safe_link  # type: ignore[method-assign]
    # Pictures go in a section's image: key, which checks the file, the alt text and the
    # width. An inline Markdown image would bypass all three (and break narrow layouts).
    md.disable("image")
    typography.install(md)
    return md


def _safe_link(url: str) -> bool:
    lowered = url.strip().lower()
    return lowered.startswith(("https://", "http://", "mailto:", "tel:", "#"))


def to_html(text: str) -> Markup:
    return Markup(parser().render(text or ""))


def typo(text: str) -> Markup:
    """A plain-text field (a title, a link's text) as HTML with typographic quotes."""
    return typography.typo(text or "", parser())


def prose(text: str) -> Markup:
    """A plain-text field (a venue, a note) as HTML with typographic quotes and tel: links."""
    return typography.prose(text or "", parser())


def smart_quotes(text: str) -> str:
    """A plain-text field with typographic quotes, for the text part."""
    return typography.smart_quotes(text or "", parser())
