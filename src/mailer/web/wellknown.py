"""What ``mailer serve`` answers about itself, and the key it signs with.

``/.well-known/mailer-challenge?nonce=…`` answers a nonce with a MAC under the folder's
signing key (:func:`mailer.tokens.answer_challenge`): ``mailer doctor --web`` and every
send ask it, so a static copy of the site, another folder's mailer or another key is told
apart from this one (:mod:`mailer.site.reach`). The answer proves who answers and changes
nothing.

:class:`KeyReload` lets a running server follow ``mailer key rotate``: before each request
it looks (one ``stat``) whether the key file was replaced, and reads the new key if so.
Links signed with the previous key keep working for the keyring's grace period.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from mailer import tokens, urls
from mailer.errors import BadToken
from mailer.store.keyring import Watch
from mailer.web.asgi import ASGIApp, Message, Scope
from mailer.web.render import SiteOf

# A nonce is what secrets.token_urlsafe makes: letters, digits, '-' and '_'.
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,128}")


router = APIRouter()


@router.get(urls.CHALLENGE_PATH)
def challenge(site: SiteOf, nonce: str = "") -> PlainTextResponse:
    if not _NONCE.fullmatch(nonce):
        raise BadToken("the nonce must be 16 to 128 letters, digits, '-' or '_'")
    answer = tokens.answer_challenge(site.settings.require_secret_key(), nonce)
    return PlainTextResponse(answer + "\n", headers={"cache-control": "no-store"})


class KeyReload:
    """ASGI middleware: reads the signing key again once ``mailer key rotate`` replaced it."""

    def __init__(self, app: ASGIApp, watch: Watch) -> None:
        self.app, self.watch = app, watch

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "http":
            self.watch.refresh()
        await self.app(scope, receive, send)
