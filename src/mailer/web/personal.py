"""The pages a personal link or a form leads to.

A GET never changes anything: link scanners (Microsoft 365 Safe Links, corporate
gateways) open every link in a message before its reader does. Unsubscribing and
confirming happen on POST, from a button on the page or, for unsubscribing, from the mail
program's one-click button (RFC 8058: a POST with ``List-Unsubscribe=One-Click``, no
cookie, answered 200 without a redirect, harmless when repeated).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from mailer import tokens, urls
from mailer.errors import BadToken, InvalidInput
from mailer.render.counted_links import read_link_token
from mailer.store import clicks
from mailer.store.models import UnsubscribeMethod
from mailer.subscribers import selfservice
from mailer.subscribers.selfservice import SignupRequest
from mailer.web import origin
from mailer.web.render import Site, SiteOf

ONE_CLICK = ("List-Unsubscribe", "One-Click")
# How long a one-click unsubscribe (and a sign-up or "manage" form) waits for a database
# another writer holds before it is answered 503 (each try itself waits the busy timeout).
ONE_CLICK_PATIENCE = 15.0
T = TypeVar("T")
router = APIRouter()


def _ip(request: Request) -> str:
    # Behind a reverse proxy, uvicorn puts the forwarded address here when the proxy is
    # trusted (mailer serve --forwarded-allow-ips).
    return request.client.host if request.client else ""


# -- unsubscribe ---------------------------------------------------------------------------


@router.get(urls.GENERIC_UNSUBSCRIBE_PATH)
def unsubscribe_help(site: SiteOf) -> HTMLResponse:
    return site.page("unsubscribe_help.html.j2", title="Unsubscribe")


@router.get(urls.UNSUBSCRIBE_PATH)
def unsubscribe_form(token: str, site: SiteOf) -> HTMLResponse:
    view = selfservice.unsubscribe_page(site.db, token)
    return site.page("unsubscribe.html.j2", title="Unsubscribe", view=view, done=False)


async def _same_origin_form(site: Site, request: Request) -> FormData:
    form = await request.form()
    origin.check(site.settings, request.headers, str(form.get(origin.FIELD, "")), now=site.clock())
    return form


@router.post(urls.UNSUBSCRIBE_PATH)
async def unsubscribe(token: str, request: Request, site: SiteOf) -> HTMLResponse:
    form = await request.form()
    one_click = form.get(ONE_CLICK[0]) == ONE_CLICK[1]
    if not one_click:
        form = await _same_origin_form(site, request)
    everything = not one_click and form.get("scope") == "all"
    method = UnsubscribeMethod.ONE_CLICK if one_click else UnsubscribeMethod.WEB_PAGE
    # Answered only once the change is committed; a database another writer holds is
    # waited out (ONE_CLICK_PATIENCE, the writer's patience) rather than answered 503,
    # so that no mail provider's one-click POST is lost in a burst; a burst is committed
    # together, by one writer (store/grouped.py).
    change = selfservice.unsubscribe_change(
        site.settings, token, everything=everything, method=method
    )
    view = await site.writer.run_async(change)
    return site.page(
        "unsubscribe.html.j2",
        title="You are unsubscribed",
        view=view,
        done=True,
        everything=everything,
    )


# -- preferences ---------------------------------------------------------------------------


def _preferences_page(
    site: Site, token: str, view: selfservice.Preferences, note: str = ""
) -> HTMLResponse:
    return site.page(
        "preferences.html.j2",
        title="Your subscription",
        view=view,
        note=note,
        data_path=site.path(urls.PREFERENCES_DATA_PATH, token=token) if view.fresh else "",
        fresh_hours=selfservice.FRESH_LINK_HOURS,
    )


@router.get(urls.PREFERENCES_PATH)
def preferences(token: str, site: SiteOf) -> HTMLResponse:
    return _preferences_page(site, token, selfservice.preferences(site.db, token, now=site.clock()))


@router.post(urls.PREFERENCES_PATH)
async def save_preferences(token: str, request: Request, site: SiteOf) -> HTMLResponse:
    form = await _same_origin_form(site, request)
    now = site.clock()
    if form.get("action") == "unsubscribe-all":
        view = await _threaded(lambda: selfservice.unsubscribe_everything(site.db, token, now=now))
        return _preferences_page(site, token, view, "You are unsubscribed from everything.")
    chosen = {str(v) for v in form.getlist("lists")}
    view = await _threaded(
        lambda: selfservice.save_preferences(
            site.db,
            token,
            name=str(form.get("name", "")),
            organisation=str(form.get("organisation", "")),
            chosen=chosen,
            now=now,
        )
    )
    return _preferences_page(site, token, view, "Your choices are saved.")


@router.get(urls.PREFERENCES_DATA_PATH)
def held_data(token: str, site: SiteOf) -> JSONResponse:
    return JSONResponse(
        selfservice.held_data(site.db, token, now=site.clock()),
        headers={"content-disposition": 'attachment; filename="what-we-hold-about-you.json"'},
    )


# -- sign-up -------------------------------------------------------------------------------


def _signup_page(
    site: Site, status: int = 200, error: str = "", values: dict[str, object] | None = None
) -> HTMLResponse:
    return site.page(
        "subscribe.html.j2",
        status=status,
        title=f"Sign up to {site.settings.name}",
        lists=selfservice.signup_lists(site.db),
        error=error,
        values=values or {},
    )


@router.get(urls.SIGNUP_PATH)
def signup_form(site: SiteOf) -> HTMLResponse:
    return _signup_page(site)


@router.post(urls.SIGNUP_PATH)
async def signup(request: Request, site: SiteOf) -> HTMLResponse:
    form = await _same_origin_form(site, request)
    values: dict[str, object] = {
        "email": str(form.get("email", ""))[:320],
        "name": str(form.get("name", ""))[:200],
        "organisation": str(form.get("organisation", ""))[:200],
        "lists": [str(v) for v in form.getlist("lists")][:50],
        "consent": form.get("consent") == "yes",
    }
    signup_request = SignupRequest(
        email=str(values["email"]),
        name=str(values["name"]),
        organisation=str(values["organisation"]),
        lists=[str(v) for v in form.getlist("lists")][:50],
        consent=bool(values["consent"]),
        honeypot=str(form.get("website", "")),
        ip=_ip(request),
    )
    try:
        change = selfservice.signup_change(site.settings, signup_request, now=site.clock())
        await site.writer.run_async(change)
    except InvalidInput as exc:
        return _signup_page(site, 400, str(exc), values)
    return site.page("check_email.html.j2", title="Check your email", kind="signup")


@router.get(urls.CONFIRM_PATH)
def confirm_form(token: str, site: SiteOf) -> HTMLResponse:
    view = selfservice.confirmation(site.db, token, now=site.clock())
    return site.page("confirm.html.j2", title="Confirm your subscription", view=view)


@router.post(urls.CONFIRM_PATH)
async def confirm(token: str, request: Request, site: SiteOf) -> HTMLResponse:
    await _same_origin_form(site, request)
    ip = _ip(request)
    view = await _threaded(lambda: selfservice.confirm(site.db, token, ip=ip, now=site.clock()))
    preferences_path = (
        site.path(urls.PREFERENCES_PATH, token=view.preferences_token)
        if view.preferences_token
        else ""
    )
    return site.page(
        "confirmed.html.j2",
        title="You are subscribed",
        view=view,
        preferences_path=preferences_path,
    )


# -- manage by email -----------------------------------------------------------------------


@router.get(urls.MANAGE_PATH)
def manage_form(site: SiteOf) -> HTMLResponse:
    return site.page("manage.html.j2", title="Manage your subscription", error="", email="")


@router.post(urls.MANAGE_PATH)
async def manage(request: Request, site: SiteOf) -> HTMLResponse:
    form = await _same_origin_form(site, request)
    email = str(form.get("email", ""))[:320]
    honeypot = str(form.get("website", ""))
    ip = _ip(request)
    try:
        change = selfservice.manage_link_change(
            site.settings, email, honeypot=honeypot, ip=ip, now=site.clock()
        )
        await site.writer.run_async(change)
    except InvalidInput as exc:
        return site.page(
            "manage.html.j2",
            status=400,
            title="Manage your subscription",
            error=str(exc),
            email=email,
        )
    return site.page("check_email.html.j2", title="Check your email", kind="manage")


# -- counted links -------------------------------------------------------------------------


@router.get(urls.CLICK_PATH)
def click(token: str, site: SiteOf) -> Response:
    slug, url = read_link_token(tokens.keys_of(site.settings), token)
    if not url.startswith(("https://", "http://")):
        raise BadToken("this link is not valid")
    if site.settings.web.track_clicks:
        with site.db.session(write=True) as session:
            clicks.record_click(session, slug, url)
    return RedirectResponse(url, status_code=302)


async def _threaded(work: Callable[[], T]) -> T:
    """Run blocking database and mail work off the event loop."""
    return await run_in_threadpool(work)
