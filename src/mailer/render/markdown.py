"""Markdown (CommonMark, raw HTML off) to HTML for email bodies."""

from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt
from markupsafe import Markup


@lru_cache(maxsize=1)
def parser() -> MarkdownIt:
    # "commonmark" with html=False shows any typed HTML (including <script>) as text.
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.validateLink = _safe_link  # type: ignore[method-assign]
    # Pictures go in a section's image: key, which checks the file, the alt text and the
    # width. An inline Markdown image would bypass all three (and break narrow layouts).
    md.disable("image")
    return md


def _safe_link(url: str) -> bool:
    lowered = url.strip().lower()
    return lowered.startswith(("https://", "http://", "mailto:", "tel:", "#"))


def to_html(text: str) -> Markup:
    return Markup(parser().render(text or ""))
