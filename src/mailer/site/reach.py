"""Does ``base_url`` answer as this folder's ``mailer serve``? Asked before every send.

Every email promises links that work: unsubscribe (a page, and the one-click POST of RFC
8058), preferences, sign-up. A static copy of ``build/`` answers the archive but leaves all
of them dead, and nothing else would notice. So before a send, and in ``mailer doctor
--web``, two requests go to ``base_url``:

1. the challenge: a random nonce to ``/.well-known/mailer-challenge``, which ``mailer
   serve`` answers with a MAC of the nonce under the folder's signing key, bound to its own
   purpose (:func:`mailer.tokens.answer_challenge`). A static host, another folder's
   mailer or a mailer with another key cannot answer it;
2. a one-click POST with a token that is not valid, which mailer answers with its own 400
   ("This link does not work"): a 404, 405 or 501 there means the web server in front
   does not pass ``/unsubscribe/`` to mailer.

The outbox transport sends nothing, so it needs neither (:func:`require_answering`).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailer import __version__, tokens, urls
from mailer.config import Settings
from mailer.errors import WebCheckFailed

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("mailer.web.reach")

TIMEOUT = 15.0
FIX = "run mailer serve behind your web server as docs/deploy/ shows, then: mailer doctor --web"
# A token of the unsubscribe form that no key signed: mailer answers it with its 400 page.
_INVALID_TOKEN = "0.AAAAAAAAAAAAAAAA"


@dataclass(frozen=True)
class Answer:
    """What base_url said: ``problem`` is empty when it is this folder's mailer."""

    what: str
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


def _client(transport: httpx.BaseTransport | None) -> httpx.Client:
    import httpx

    return httpx.Client(
        timeout=TIMEOUT,
        follow_redirects=True,
        transport=transport,
        headers={"user-agent": f"mailer/{__version__} (web check)"},
    )


def _challenge(settings: Settings, client: httpx.Client) -> Answer:
    import httpx

    url = urls.challenge_url(settings)
    nonce = secrets.token_urlsafe(24)
    try:
        response = client.get(url, params={"nonce": nonce})
    except httpx.HTTPError as exc:
        return Answer("challenge", f"{url} cannot be reached ({_reason(exc)})")
    if response.status_code != 200:
        return Answer(
            "challenge",
            f"{url} answered {response.status_code}: no mailer serve answers at base_url",
        )
    given = response.text.strip()
    expected = tokens.answer_challenge(settings.require_secret_key(), nonce)
    if hmac.compare_digest(given.encode(), expected.encode()):
        return Answer("challenge", "")
    previous = settings.previous_secret_key()
    if previous is not None and hmac.compare_digest(
        given.encode(), tokens.answer_challenge(previous, nonce).encode()
    ):
        return Answer(
            "challenge",
            f"{url} answers with the previous signing key: the server there runs with another "
            "copy of this folder's key",
        )
    return Answer(
        "challenge",
        f"{url} is answered by another newsletter folder or another signing key, not this one",
    )


def _one_click(settings: Settings, client: httpx.Client) -> Answer:
    import httpx

    url = urls.unsubscribe_url(settings, _INVALID_TOKEN)
    try:
        response = client.post(url, data={"List-Unsubscribe": "One-Click"})
    except httpx.HTTPError as exc:
        return Answer("one-click", f"{url} cannot be reached ({_reason(exc)})")
    if response.status_code != 400:
        return Answer(
            "one-click",
            f"a one-click unsubscribe POST to {urls.base_path(settings)}/unsubscribe/… answered "
            f"{response.status_code}, not mailer's 400 for a link that does not work: the web "
            "server does not pass /unsubscribe/ to mailer serve",
        )
    return Answer("one-click", "")


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def ask(settings: Settings, *, transport: httpx.BaseTransport | None = None) -> list[Answer]:
    """The challenge, then (if it passed) the one-click POST; each with what went wrong."""
    with _client(transport) as client:
        found = [_challenge(settings, client)]
        if found[0].ok:
            found.append(_one_click(settings, client))
    return found


def require_answering(settings: Settings, skip_reason: str | None = None) -> None:
    """WebCheckFailed, in one line with the fix, unless base_url answers as this folder's
    mailer; not asked with the outbox transport, with ``[checks] enforce = false``, or
    with a ``--skip-checks`` reason (which the send records)."""
    if settings.transport.name == "outbox" or not settings.checks.enforce:
        return
    problems = [a.problem for a in ask(settings) if not a.ok]
    if not problems:
        return
    if skip_reason is not None:
        log.info("going ahead although %s: %s", problems[0], skip_reason)
        return
    raise WebCheckFailed(
        f"refusing to send: {problems[0]}, so the unsubscribe links of this send would not "
        f'work; {FIX} (or, if you are sure, add --skip-checks "why")'
    )
