"""The public pages: the archive, each published issue's web version, images and calendar
files, the feed, the training calendar (page and feed), the stylesheet, the accessibility
statement and the health check.

Every redirect leads to an address built from base_url, never from the request's Host
header (the framework's own slash redirects, which would, are off).

Drafts are never served: an issue that is not published answers 404 like one that does
not exist. Images are served only if the issue names them, so no other file of the
newsletter folder can be reached.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)

from mailer import __version__, checks, urls
from mailer.errors import NotFound
from mailer.render.ical import MEDIA_TYPE
from mailer.store import publications
from mailer.web.render import Site


def router(site: Site) -> APIRouter:
    settings = site.settings
    api = APIRouter()

    def published(slug: str) -> None:
        if slug not in site.published():
            raise NotFound(f"no published issue {slug}")

    @api.get(urls.HEALTH_PATH)
    def healthz() -> PlainTextResponse:
        with site.db.session() as session:
            publications.is_published(session, "")
        return PlainTextResponse("ok\n")

    @api.get(urls.STYLESHEET_PATH)
    def stylesheet() -> Response:
        return Response(
            site.stylesheet,
            media_type="text/css",
            headers={"cache-control": "public, max-age=3600"},
        )

    @api.get(urls.ACCESSIBILITY_PATH)
    def accessibility() -> HTMLResponse:
        ran = checks.last_run(settings)
        covered = [checks.CHECKS[code].summary for code in (ran.codes if ran else ())]
        return site.page(
            "accessibility.html.j2",
            title="Accessibility statement",
            ran=ran,
            covered=covered,
            version=__version__,
        )

    @api.get(urls.ARCHIVE_PATH)
    def archive() -> HTMLResponse:
        return HTMLResponse(site.archive()[0])

    @api.get(urls.FEED_PATH)
    def feed() -> Response:
        return Response(site.archive()[1], media_type="application/atom+xml")

    @api.get(urls.TRAINING_PATH)
    def training_page() -> HTMLResponse:
        return HTMLResponse(site.training()[0])

    @api.get(urls.TRAINING_FEED_PATH)
    def training_feed() -> Response:
        return Response(
            site.training()[1],
            media_type=MEDIA_TYPE,
            headers={"cache-control": "public, max-age=3600"},
        )

    @api.get(urls.ASSET_PATH)
    def asset(name: str) -> FileResponse:
        logo = settings.brand.logo
        if not logo or name != logo.rpartition("/")[2]:
            raise NotFound("no such file")
        return FileResponse(settings.root / logo)

    @api.get(urls.ISSUES_ALIAS_PATH)
    def issue_alias(slug: str) -> RedirectResponse:
        published(slug)
        return RedirectResponse(urls.issue_url(settings, slug), status_code=308)

    @api.get(urls.ISSUE_PATH)
    def issue(slug: str) -> HTMLResponse:
        published(slug)
        return HTMLResponse(site.web_html(slug))

    @api.get(urls.ISSUE_FILE_PATH)
    def issue_file(slug: str, path: str) -> Response:
        published(slug)
        if path.endswith(".ics") and "/" not in path:
            text = site.calendar_file(slug, path)
            if text is None:
                raise NotFound("no such file")
            return Response(text, media_type=MEDIA_TYPE)
        found = site.issue(slug)
        for image in found.images:
            if image.relative_to(found.folder).as_posix() == path:
                return FileResponse(image, headers={"cache-control": "public, max-age=86400"})
        raise NotFound("no such file")

    if site.prefix:
        # base_url's own path without its slash ("/newsletter"): to the archive.
        @api.get("")
        def archive_without_slash() -> RedirectResponse:
            return RedirectResponse(urls.archive_url(settings), status_code=308)

    @api.get(urls.NO_SLASH_PATH)
    def without_slash(slug: str) -> RedirectResponse:
        if slug == urls.TRAINING_PATH.strip("/"):
            return RedirectResponse(urls.training_url(settings), status_code=308)
        published(slug)
        return RedirectResponse(urls.issue_url(settings, slug), status_code=308)

    return api
