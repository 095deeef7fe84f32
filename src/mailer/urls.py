"""Every public URL mailer produces, in one place.

The links written into emails and the routes the web app serves are built by these
functions, so they cannot drift apart.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from mailer.config import Settings

# Per-recipient values are left in the compiled issue as these placeholders and filled by
# cheap byte substitution at send time (see mailer.sending.message). They are plain ASCII that
# survives MJML, premailer, HTML escaping and quoted-printable encoding unchanged.
UNSUBSCRIBE_PLACEHOLDER = "%%MAILER_UNSUBSCRIBE_URL%%"
PREFERENCES_PLACEHOLDER = "%%MAILER_PREFERENCES_URL%%"
PLACEHOLDERS = (UNSUBSCRIBE_PLACEHOLDER, PREFERENCES_PLACEHOLDER)


# The paths ``mailer serve`` answers, below base_url's own path. The web app's routes are
# declared with these, and the functions below build the links in emails from them.
ARCHIVE_PATH = "/"
FEED_PATH = "/feed.xml"
ISSUE_PATH = "/{slug}/"
ISSUE_FILE_PATH = "/{slug}/{path:path}"
ISSUES_ALIAS_PATH = "/issues/{slug}/"
# An issue's (or the training page's) address typed without its final slash: redirected
# to base_url's address of the page, never to the request's Host.
NO_SLASH_PATH = "/{slug}"
ASSET_PATH = "/assets/{name}"
UNSUBSCRIBE_PATH = "/unsubscribe/{token}"
GENERIC_UNSUBSCRIBE_PATH = "/unsubscribe"
# The subject of the List-Unsubscribe mailto: (mailer bounces reads it back from the email).
UNSUBSCRIBE_SUBJECT = "unsubscribe {token}"
PREFERENCES_PATH = "/preferences/{token}"
PREFERENCES_DATA_PATH = "/preferences/{token}/data.json"
# A relay's bounce and complaint events (mailer.web.webhooks), one path per provider.
WEBHOOK_PATH = "/webhooks/{provider}"
SIGNUP_PATH = "/subscribe"
CONFIRM_PATH = "/confirm/{token}"
MANAGE_PATH = "/manage"
CLICK_PATH = "/c/{token}"
APPROVAL_PATH = "/approve/{token}"
ACCESSIBILITY_PATH = "/accessibility"
# Every upcoming training session of the published issues: a page, and a calendar feed.
TRAINING_PATH = "/training/"
TRAINING_FEED_PATH = "/training.ics"
STYLESHEET_PATH = "/site.css"
HEALTH_PATH = "/healthz"
# `mailer doctor --web` and every send ask base_url to answer a nonce with this folder's key.
CHALLENGE_PATH = "/.well-known/mailer-challenge"
# Issue slugs that would be shadowed by a page of mailer serve.
RESERVED_SLUGS = frozenset(
    {
        "unsubscribe",
        "preferences",
        "subscribe",
        "confirm",
        "manage",
        "c",
        "approve",
        "accessibility",
        "assets",
        "issues",
        "healthz",
        "feed.xml",
        "site.css",
        "training",
        "training.ics",
    }
)


def base_path(settings: Settings) -> str:
    """The path part of base_url ("" or "/newsletter"), under which every page is served."""
    return urlsplit(settings.base_url).path.rstrip("/")


def webhook_url(settings: Settings, provider: str) -> str:
    """Where a relay posts its events: the URL to give on the provider's side."""
    return settings.base_url + WEBHOOK_PATH.format(provider=provider)


def archive_url(settings: Settings) -> str:
    return f"{settings.base_url}/"


def feed_url(settings: Settings) -> str:
    return f"{settings.base_url}{FEED_PATH}"


def issue_url(settings: Settings, slug: str) -> str:
    """The shareable web version of an issue (no personal tokens)."""
    return f"{settings.base_url}/{quote(slug)}/"


def image_url(settings: Settings, slug: str, src: str) -> str:
    if src.startswith("https://"):
        return src
    return f"{settings.base_url}/{quote(slug)}/{quote(src)}"


def asset_url(settings: Settings, path: str) -> str:
    return f"{settings.base_url}/assets/{quote(path.rpartition('/')[2])}"


def session_file(course_id: str, session_id: str) -> str:
    """The name of a session's calendar file in ``build/SLUG/``: ``COURSE_SESSION.ics``.

    Ids are lower-case letters, digits and dashes, so the underscore keeps the two apart.
    """
    return f"{course_id}_{session_id}.ics"


def session_calendar_url(settings: Settings, slug: str, course_id: str, session_id: str) -> str:
    """A session's "Add to calendar" file, published beside the issue's web version."""
    return f"{settings.base_url}/{quote(slug)}/{session_file(course_id, session_id)}"


def training_url(settings: Settings) -> str:
    """The page listing every upcoming training session."""
    return f"{settings.base_url}{TRAINING_PATH}"


def training_feed_url(settings: Settings) -> str:
    """The calendar feed of every upcoming training session, to subscribe to."""
    return f"{settings.base_url}{TRAINING_FEED_PATH}"


def training_webcal_url(settings: Settings) -> str:
    """The feed as a ``webcal:`` link, which calendar apps open as a subscription."""
    return "webcal://" + training_feed_url(settings).split("://", 1)[1]


def calendar_host(settings: Settings) -> str:
    """What follows the ``@`` of every calendar UID: the site's host and path."""
    parts = urlsplit(settings.base_url)
    return f"{parts.netloc}{parts.path.rstrip('/')}"


def unsubscribe_url(settings: Settings, token: str) -> str:
    """One-click unsubscribe (RFC 8058): GET shows a confirmation page, POST unsubscribes."""
    return f"{settings.base_url}{UNSUBSCRIBE_PATH.format(token=token)}"


def preferences_url(settings: Settings, token: str) -> str:
    return f"{settings.base_url}{PREFERENCES_PATH.format(token=token)}"


def generic_unsubscribe_url(settings: Settings) -> str:
    """Used on the shareable web version, which must carry no personal token."""
    return f"{settings.base_url}{GENERIC_UNSUBSCRIBE_PATH}"


def signup_url(settings: Settings) -> str:
    return f"{settings.base_url}{SIGNUP_PATH}"


def confirm_url(settings: Settings, token: str) -> str:
    """The link in a confirmation email: GET shows a button, only its POST confirms."""
    return f"{settings.base_url}{CONFIRM_PATH.format(token=token)}"


def manage_url(settings: Settings) -> str:
    """Where someone types their address to be sent a link to their preferences."""
    return f"{settings.base_url}{MANAGE_PATH}"


def click_url(settings: Settings, token: str) -> str:
    """A counted link (``track_clicks``): redirects to the URL the signed token names."""
    return f"{settings.base_url}{CLICK_PATH.format(token=token)}"


def approval_url(settings: Settings, token: str) -> str:
    """The link mailed to an approver: GET shows the content and two buttons, which POST."""
    return f"{settings.base_url}{APPROVAL_PATH.format(token=token)}"


def accessibility_url(settings: Settings) -> str:
    return f"{settings.base_url}{ACCESSIBILITY_PATH}"


def preferences_data_url(settings: Settings, token: str) -> str:
    return f"{settings.base_url}{PREFERENCES_DATA_PATH.format(token=token)}"


def challenge_url(settings: Settings) -> str:
    return f"{settings.base_url}{CHALLENGE_PATH}"


def stylesheet_url(settings: Settings) -> str:
    return f"{settings.base_url}{STYLESHEET_PATH}"


def unsubscribe_mailto(settings: Settings, token: str) -> str:
    address = settings.sender.reply_to or settings.sender.from_address
    subject = UNSUBSCRIBE_SUBJECT.format(token=token).replace(" ", "%20")
    return f"mailto:{address}?subject={subject}"
