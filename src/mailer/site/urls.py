"""Every public URL mailer produces, in one place.

The links written into emails and the routes the web app serves are built by these
functions, so they cannot drift apart.
"""

from __future__ import annotations

from urllib.parse import quote

from mailer.config import Settings

# Per-recipient values are left in the compiled issue as these placeholders and filled by
# cheap byte substitution at send time (see mailer.sending.message). They are plain ASCII that
# survives MJML, premailer, HTML escaping and quoted-printable encoding unchanged.
UNSUBSCRIBE_PLACEHOLDER = "%%MAILER_UNSUBSCRIBE_URL%%"
PREFERENCES_PLACEHOLDER = "%%MAILER_PREFERENCES_URL%%"
PLACEHOLDERS = (UNSUBSCRIBE_PLACEHOLDER, PREFERENCES_PLACEHOLDER)


def archive_url(settings: Settings) -> str:
    return f"{settings.base_url}/"


def feed_url(settings: Settings) -> str:
    return f"{settings.base_url}/feed.xml"


def issue_url(settings: Settings, slug: str) -> str:
    """The shareable web version of an issue (no personal tokens)."""
    return f"{settings.base_url}/{quote(slug)}/"


def image_url(settings: Settings, slug: str, src: str) -> str:
    if src.startswith("https://"):
        return src
    return f"{settings.base_url}/{quote(slug)}/{quote(src)}"


def asset_url(settings: Settings, path: str) -> str:
    return f"{settings.base_url}/assets/{quote(path.rpartition('/')[2])}"


def unsubscribe_url(settings: Settings, token: str) -> str:
    """One-click unsubscribe (RFC 8058): GET shows a confirmation page, POST unsubscribes."""
    return f"{settings.base_url}/unsubscribe/{token}"


def preferences_url(settings: Settings, token: str) -> str:
    return f"{settings.base_url}/preferences/{token}"


def generic_unsubscribe_url(settings: Settings) -> str:
    """Used on the shareable web version, which must carry no personal token."""
    return f"{settings.base_url}/unsubscribe"


def signup_url(settings: Settings) -> str:
    return f"{settings.base_url}/subscribe"


def unsubscribe_mailto(settings: Settings, token: str) -> str:
    address = settings.sender.reply_to or settings.sender.from_address
    return f"mailto:{address}?subject=unsubscribe%20{token}"
