"""The page behind an approval link: the content an approver is asked to approve, its hash,
what changed since the last approved version, and two buttons.

A GET only shows: link scanners open every link in a message. Approving, or asking for
changes with a reason, is a POST from this page (a form posted from another site is
refused), and works once, for the approver the link was mailed to and only while the
issue is the content they were sent (:mod:`mailer.operations.signoff`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from mailer import urls
from mailer.errors import CrossSite, ExpiredToken, InvalidInput
from mailer.operations import signoff
from mailer.web import origin
from mailer.web.render import Site, SiteOf

# What every answer of these pages carries: they are personal, never kept or indexed.
PRIVATE = {"x-robots-tag": "noindex, nofollow", "cache-control": "no-store"}


router = APIRouter()


def _page(
    site: Site, view: signoff.Review | None, *, status: int = 200, **values: object
) -> HTMLResponse:
    title = "Approve this issue" if view is None or view.state == "open" else "Approval"
    response = site.page(
        "approve.html.j2",
        status=status,
        title=values.pop("title", title),
        view=view,
        days=site.settings.approval.link_days,
        **values,
    )
    response.headers.update(PRIVATE)
    return response


def _expired(site: Site) -> HTMLResponse:
    return _page(site, None, status=410, title="This approval link has expired", expired=True)


@router.get(urls.APPROVAL_PATH)
def approval_page(token: str, site: SiteOf) -> HTMLResponse:
    try:
        view = signoff.review(site.settings, site.db, token, site.clock())
    except ExpiredToken:
        return _expired(site)
    return _page(site, view, status=200 if view.state == "open" else 409)


@router.post(urls.APPROVAL_PATH)
async def approval_decision(token: str, request: Request, site: SiteOf) -> HTMLResponse:
    settings = site.settings
    form = await request.form()
    try:
        token_given = str(form.get(origin.FIELD, ""))
        origin.check(settings, request.headers, token_given, now=site.clock())
    except CrossSite:
        return _page(
            site, None, status=403, title="Not allowed", problem="Use the buttons on the page."
        )
    approve = form.get("decision") == "approve"
    reason = str(form.get("reason", ""))[: signoff.REASON_MAX * 2]
    now = site.clock()
    try:
        view = await run_in_threadpool(
            lambda: signoff.decide(settings, site.db, token, now, approve=approve, reason=reason)
        )
    except ExpiredToken:
        return _expired(site)
    except InvalidInput as exc:
        view = signoff.review(settings, site.db, token, now)
        return _page(site, view, status=400, problem=str(exc), reason=reason)
    return _page(site, view, status=200 if view.state == "decided" else 409)
