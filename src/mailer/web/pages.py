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
from mailer.web.render import Site, SiteOf

router = APIRouter()


def _published(site: Site, slug: str) -> None:
    if slug not in site.published():
        raise NotFound(f"no published issue {slug}")


@router.get(urls.HEALTH_PATH)
def healthz(site: SiteOf) -> PlainTextResponse:
    with site.db.session() as session:
        publications.is_published(session, "")
    return PlainTextResponse("ok\n")


@router.get(urls.STYLESHEET_PATH)
def stylesheet(site: SiteOf) -> Response:
    return Response(
        site.stylesheet,
        media_type="text/css",
        headers={"cache-control": "public, max-age=3600"},
    )


@router.get(urls.ACCESSIBILITY_PATH)
def accessibility(site: SiteOf) -> HTMLResponse:
    ran = checks.last_run(site.settings)
    covered = [checks.CHECKS[code].summary for code in (ran.codes if ran else ())]
    return site.page(
        "accessibility.html.j2",
        title="Accessibility statement",
        ran=ran,
        covered=covered,
        version=__version__,
    )


@router.get(urls.ARCHIVE_PATH)
def archive(site: SiteOf) -> HTMLResponse:
    return HTMLResponse(site.archive()[0])


@router.get(urls.FEED_PATH)
def feed(site: SiteOf) -> Response:
    return Response(site.archive()[1], media_type="application/atom+xml")


@router.get(urls.TRAINING_PATH)
def training_page(site: SiteOf) -> HTMLResponse:
    return HTMLResponse(site.training()[0])


@router.get(urls.TRAINING_FEED_PATH)
def training_feed(site: SiteOf) -> Response:
    return Response(
        site.training()[1],
        media_type=MEDIA_TYPE,
        headers={"cache-control": "public, max-age=3600"},
    )


@router.get(urls.ASSET_PATH)
def asset(name: str, site: SiteOf) -> FileResponse:
    logo = site.settings.brand.logo
    if not logo or name != logo.rpartition("/")[2]:
        raise NotFound("no such file")
    return FileResponse(site.settings.root / logo)


@router.get(urls.ISSUES_ALIAS_PATH)
def issue_alias(slug: str, site: SiteOf) -> RedirectResponse:
    _published(site, slug)
    return RedirectResponse(urls.issue_url(site.settings, slug), status_code=308)


@router.get(urls.ISSUE_PATH)
def issue(slug: str, site: SiteOf) -> HTMLResponse:
    _published(site, slug)
    return HTMLResponse(site.web_html(slug))


@router.get(urls.ISSUE_FILE_PATH)
def issue_file(slug: str, path: str, site: SiteOf) -> Response:
    _published(site, slug)
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


@router.get(urls.NO_SLASH_PATH)
def without_slash(slug: str, site: SiteOf) -> RedirectResponse:
    if slug == urls.TRAINING_PATH.strip("/"):
        return RedirectResponse(urls.training_url(site.settings), status_code=308)
    _published(site, slug)
    return RedirectResponse(urls.issue_url(site.settings, slug), status_code=308)


def archive_without_slash(site: SiteOf) -> RedirectResponse:
    """base_url's own path without its slash ("/newsletter"): to the archive. Added by
    the app only when base_url has a path (a route's path may not be empty otherwise)."""
    return RedirectResponse(urls.archive_url(site.settings), status_code=308)
