"""CSS inlining with premailer, every option pinned here and nowhere else.

premailer's defaults break MJML output (see docs/rendering.md): they fetch fonts over the
network, strip ``!important`` from the dark-mode rules, drop the lowercase doctype,
overwrite image ``width`` attributes and log a cssutils warning per ``mso-`` property.
"""

from __future__ import annotations

import logging
import re
import warnings

from premailer import Premailer

from mailer.errors import RenderError

DOCTYPE = "<!doctype html>"
# Only the template's <mj-style inline="inline"> block, which starts with this comment, is
# inlined. MJML's own base styles stay in <head> where MJML put them: inlining them would
# copy the same declarations onto every table cell and nearly double the message size.
INLINE_MARKER = "/* mailer:inline */"
_COMMENT = re.compile(r"(<!--.*?-->)", re.DOTALL)
_STYLE = re.compile(r"<style([^>]*)>(\s*)", re.IGNORECASE)

PREMAILER_OPTIONS: dict[str, object] = {
    "allow_network": False,
    "strip_important": False,
    "remove_classes": False,
    "keep_style_tags": False,
    "disable_basic_attributes": ["width", "height"],
    "disable_validation": True,
    "cssutils_logging_level": logging.CRITICAL,
    "base_url": None,
}


def inline_css(html: str) -> str:
    """Inline the <style> rules into style attributes, keeping media queries and MSO blocks."""
    html = _mark_ignored_styles(html)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = str(Premailer(html, **PREMAILER_OPTIONS).transform())
    except Exception as exc:  # premailer raises bare lxml/cssutils errors
        raise RenderError(f"inlining CSS failed: {exc}") from exc
    # premailer consumes the marker on the <style> blocks it skips, except media-scoped ones.
    out = out.replace(' data-premailer="ignore"', "")
    out = _compact_styles(out)
    if not out.lstrip().lower().startswith("<!doctype"):
        out = f"{DOCTYPE}\n{out}"
    return out


_STYLE_ATTRIBUTE = re.compile(r'style="([^"]*)"')


def _compact(declarations: str) -> str:
    parts = (d.strip() for d in declarations.split(";"))
    return ";".join(
        f"{name.strip()}:{value.strip()}"
        for name, _, value in (d.partition(":") for d in parts if d)
    )


def _compact_styles(html: str) -> str:
    """Style attributes without the spaces premailer writes ("margin:0; padding:0" costs a
    byte per declaration on every element). Outlook's conditional comments are untouched."""

    def compact(match: re.Match[str]) -> str:
        return f'style="{_compact(match.group(1))}"'

    parts = _COMMENT.split(html)
    for i in range(0, len(parts), 2):
        parts[i] = _STYLE_ATTRIBUTE.sub(compact, parts[i])
    return "".join(parts)


def _mark_ignored_styles(html: str) -> str:
    """Tell premailer to leave alone every <style> except ours (comments untouched)."""

    def mark(match: re.Match[str]) -> str:
        rest = html_part[match.end() : match.end() + len(INLINE_MARKER)]
        if rest == INLINE_MARKER:
            return match.group(0)
        return f'<style data-premailer="ignore"{match.group(1)}>{match.group(2)}'

    parts = _COMMENT.split(html)
    for i in range(0, len(parts), 2):
        html_part = parts[i]
        parts[i] = _STYLE.sub(mark, html_part)
    return "".join(parts)
