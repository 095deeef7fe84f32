"""Forms that only this site can post: a page elsewhere must not make its visitors sign up,
ask for manage links, change preferences or unsubscribe from their own browsers.

A state-changing form POST is accepted when

1. the browser's ``Sec-Fetch-Site`` (which no page can set) says ``same-origin`` or
   ``none`` (typed or bookmarked); any other value is refused;
2. else, when the browser sent no Fetch metadata, its ``Origin`` is base_url's;
3. else, when it sent neither (an old browser, ``Origin: null`` under our Referrer-Policy),
   the form carries a valid :data:`FIELD`: a token signed for this purpose that every
   form of the site embeds, good for a day.

Anything else is :class:`~mailer.errors.CrossSite` (a 403 page). One-click unsubscribe
POSTs (RFC 8058) are exempt: mail providers send them from their servers, with no Origin
and no cookie, and the link's own token is the proof.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from mailer import tokens
from mailer.config import Settings
from mailer.errors import BadToken, CrossSite

FIELD = "form_token"
MAX_AGE = 86400.0
_DEFAULT_PORTS = {"https": 443, "http": 80}


def _origin(url: str) -> str:
    parts = urlsplit(url.strip().lower())
    port = parts.port
    host = parts.hostname or ""
    shown = host if port in (None, _DEFAULT_PORTS.get(parts.scheme)) else f"{host}:{port}"
    return f"{parts.scheme}://{shown}"


def form_token(settings: Settings, now: float) -> str:
    """The hidden field's value for a form shown now."""
    return tokens.make_expiring(settings.require_secret_key(), tokens.FORM, now)


def check(settings: Settings, headers: Mapping[str, str], token: str, *, now: float) -> None:
    """Raise :class:`CrossSite` unless a form POST came from this site (see the module)."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        if fetch_site.strip().lower() in ("same-origin", "none"):
            return
        raise CrossSite("this form was sent from another website")
    origin = headers.get("origin")
    if origin is not None and origin.strip().lower() != "null":
        if _origin(origin) == _origin(settings.base_url):
            return
        raise CrossSite("this form was sent from another website")
    try:
        tokens.read_expiring(
            tokens.keys_of(settings), tokens.FORM, token, now=now, max_age_seconds=MAX_AGE
        )
    except BadToken:
        raise CrossSite("this form did not come from this website's own page") from None
