"""The app factory: ``create_app(settings)`` -> a FastAPI app serving the newsletter's site.

Every response carries security headers (a Content-Security-Policy that allows no script
at all, ``nosniff``, ``Referrer-Policy: no-referrer``); personal pages add ``X-Robots-Tag:
noindex`` and ``Cache-Control: no-store``. The access log names the route pattern, never
the path, so no token or address ever reaches a log.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException

from mailer import urls
from mailer.clock import SystemClock
from mailer.config import Settings
from mailer.errors import (
    BadToken,
    CrossSite,
    ExpiredToken,
    NotFound,
    StoreError,
    TooManyRequests,
)
from mailer.store.database import open_db
from mailer.store.keyring import Watch
from mailer.subscribers.posting import Postman
from mailer.web import approvals, origin, pages, personal, webhooks, wellknown
from mailer.web.asgi import ASGIApp, Message, Scope
from mailer.web.limits import BodyLimit
from mailer.web.render import Site

log = logging.getLogger("mailer.web")
access = logging.getLogger("mailer.web.access")


# Pages a personal link or a form leads to: never indexed, never cached.
PERSONAL = ("/unsubscribe", "/preferences", "/subscribe", "/confirm", "/manage", "/c/")
PERSONAL_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
# The archive and the issues' web versions carry the newsletter's inline styles and may
# show images from elsewhere over https; still no script.
PUBLIC_CSP = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' https: data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


class Guard:
    """ASGI middleware: security headers on every response, and the access log."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app, self.prefix = app, prefix

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))[len(self.prefix) :]
        personal_page = path.startswith(PERSONAL)
        started = time.perf_counter()
        status = [0]
        # HEAD is answered as GET without the body (RFC 9110), on every GET route; a GET
        # never changes state, so neither does a HEAD.
        head = scope.get("method") == "HEAD"
        if head:
            scope = {**scope, "method": "GET"}

        async def send_with_headers(message: Message) -> None:
            if head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                headers = list(message.get("headers", []))
                headers += [
                    (
                        b"content-security-policy",
                        (PERSONAL_CSP if personal_page else PUBLIC_CSP).encode(),
                    ),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                if personal_page:
                    headers += [
                        (b"x-robots-tag", b"noindex, nofollow"),
                        (b"cache-control", b"no-store"),
                    ]
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            pattern = getattr(route, "path", None) or "(no route)"
            access.info(
                "%s %s %d %.1fms",
                scope.get("method", "-"),
                pattern,
                status[0],
                (time.perf_counter() - started) * 1000,
            )


def create_app(
    settings: Settings, *, clock: Callable[[], float] | None = None, send_mail: bool = False
) -> FastAPI:
    """The web app for the newsletter folder ``settings`` describes.

    ``clock`` (epoch seconds) decides when confirmation links expire; tests pass their own.
    ``send_mail`` runs the sender of the queued web mail on a thread while the app runs
    (``mailer serve`` does; tests send the queue themselves).
    """
    settings.require_secret_key()
    prefix = urls.base_path(settings)
    database = open_db(settings)
    site = Site(
        settings, database, clock or SystemClock().time, patience=personal.ONE_CLICK_PATIENCE
    )
    site.env.globals["form_token"] = lambda: origin.form_token(settings, site.clock())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        postman = Postman(settings, database) if send_mail else None
        if postman is not None:
            postman.start()
        try:
            yield
        finally:
            if postman is not None:
                postman.stop()
            site.writer.close()
            database.close()

    app = FastAPI(
        title=settings.name,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        # Starlette's slash redirects build their Location from the Host header; pages.py
        # redirects from base_url instead.
        redirect_slashes=False,
    )
    app.state.site = site
    # The routes are module-level functions; each finds this app's site through the
    # SiteOf dependency (web/render.py).
    setattr(app.state, webhooks.KEYS_STATE, webhooks.keys_from(os.environ))
    for module in (personal, approvals, webhooks, wellknown, pages):
        app.include_router(module.router, prefix=prefix)
    if prefix:
        app.add_api_route(prefix, pages.archive_without_slash, methods=["GET"])

    def page(status: int, title: str, message: str) -> HTMLResponse:
        return site.page("problem.html.j2", status=status, title=title, message=message)

    @app.exception_handler(ExpiredToken)
    async def expired(_request: Request, exc: ExpiredToken) -> Response:
        return page(400, "This link has expired", f"Sorry: {exc}.")

    @app.exception_handler(BadToken)
    async def bad_token(_request: Request, exc: BadToken) -> Response:
        return page(400, "This link does not work", f"Sorry: {exc}. Nothing was changed.")

    @app.exception_handler(NotFound)
    async def not_found(_request: Request, exc: NotFound) -> Response:
        return page(404, "Page not found", "There is no page at this address.")

    @app.exception_handler(TooManyRequests)
    async def too_many(_request: Request, exc: TooManyRequests) -> Response:
        return page(429, "Please try again later", f"Sorry: {exc}.")

    @app.exception_handler(CrossSite)
    async def cross_site(_request: Request, exc: CrossSite) -> Response:
        return page(
            403,
            "This form was sent from another website",
            f"Sorry: {exc}, so nothing was changed. To use it, open the page on "
            f"{settings.base_url}/ and send the form from there.",
        )

    @app.exception_handler(StoreError)
    async def store_error(_request: Request, exc: StoreError) -> Response:
        log.error("database error: %s", exc)
        return page(503, "Please try again shortly", "The site is busy. Nothing was changed.")

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return page(404, "Page not found", "There is no page at this address.")
        if exc.status_code == 405:
            return page(405, "Not allowed", "This page cannot be used that way.")
        return page(exc.status_code, "Something went wrong", str(exc.detail))

    # Added first, so it runs inside Guard: a 413 gets the security headers too.
    app.add_middleware(
        BodyLimit, prefix=prefix, larger=((webhooks.PATH_PREFIX, webhooks.MAX_BODY),)
    )
    app.add_middleware(wellknown.KeyReload, watch=Watch(settings))
    app.add_middleware(Guard, prefix=prefix)
    return app
