"""Counted links for ``track_clicks``: the email's links rewritten through ``mailer serve``.

Each ``https://`` (or ``http://``) link in the email HTML becomes ``BASE/c/TOKEN``, where
TOKEN carries the issue's slug and the original URL, signed with ``MAILER_SECRET_KEY`` for
the click purpose. The redirect follows only a genuine token, so it can only ever lead to
a URL that was in the issue (never an open redirect), and the token says nothing about
who clicked: every recipient gets the same link. Only the email HTML is rewritten; the
web version and the plain-text part keep the real URLs.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from mailer import tokens, urls
from mailer.config import Settings

_HREF = re.compile(r'href="(https?://[^"]+)"', re.IGNORECASE)


def link_token(key: bytes, slug: str, url: str) -> str:
    return tokens.sign_text(key, tokens.CLICK, f"{slug}\n{url}")


def read_link_token(key: bytes | Sequence[bytes], token: str) -> tuple[str, str]:
    """``(slug, url)`` of a genuine click token; :class:`~mailer.errors.BadToken` otherwise."""
    slug, _, url = tokens.read_text(key, tokens.CLICK, token).partition("\n")
    return slug, url


def count_clicks(settings: Settings, slug: str, email_html: str) -> str:
    """``email_html`` with every web link sent through the click counter."""
    key = settings.require_secret_key()
    counter = urls.click_url(settings, "")

    def swap(match: re.Match[str]) -> str:
        url = html.unescape(match.group(1))
        if url.startswith(counter):
            return match.group(0)
        return f'href="{html.escape(urls.click_url(settings, link_token(key, slug, url)))}"'

    return _HREF.sub(swap, email_html)
