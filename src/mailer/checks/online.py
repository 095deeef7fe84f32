"""``mailer check --online``: fetch every link, and the web version and images at base_url.

At most :data:`PARALLEL` requests at once, under a user agent that says who is asking,
from the public internet only and within limits of time and bytes per URL
(:mod:`mailer.checks.fetch`). Redirects are followed by hand so each hop can be reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from mailer import __version__, urls
from mailer.checks.links import links
from mailer.checks.registry import Context, Hit, Severity, check, quote

if TYPE_CHECKING:
    from mailer.checks.fetch import Fetched

PARALLEL = 8


def user_agent(ctx: Context) -> str:
    return f"mailer/{__version__} (newsletter link check; +{ctx.settings.base_url}/)"


def fetch_all(ctx: Context, targets: list[str]) -> dict[str, Fetched]:
    """Each URL fetched once per run, at most PARALLEL at a time, each within its limits
    and from the public internet only (:mod:`mailer.checks.fetch`)."""
    from mailer.checks.fetch import fetch

    found: dict[str, Fetched] = ctx.memo.setdefault("fetched", {})
    todo = [u for u in dict.fromkeys(targets) if u not in found]
    if not todo:
        return found
    agent = user_agent(ctx)

    def one(url: str) -> Fetched:
        return fetch(url, user_agent=agent, network=ctx.network, limits=ctx.fetch_limits)

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        for result in pool.map(one, todo):
            found[result.url] = result
    return found


def _web_links(ctx: Context) -> dict[str, int | None]:
    return {
        link.url: link.line
        for link in links(ctx)
        if link.url.lower().startswith(("http://", "https://"))
    }


@check(
    "link-broken",
    Severity.ERROR,
    "A link does not work (--online): an error status, or no answer.",
    "open the link in a browser and correct it",
    online=True,
)
def links_work(ctx: Context) -> Iterator[Hit]:
    targets = _web_links(ctx)
    fetched = fetch_all(ctx, list(targets))
    for url, line in targets.items():
        result = fetched[url]
        if not result.ok:
            why = result.error or f"HTTP {result.status}"
            yield Hit(f"{quote(url, 70)}: {why}", line)


@check(
    "link-redirect",
    Severity.NOTE,
    "A link redirects elsewhere (--online).",
    "link to the final address, so the link keeps working if the redirect goes",
    online=True,
)
def links_direct(ctx: Context) -> Iterator[Hit]:
    targets = _web_links(ctx)
    fetched = fetch_all(ctx, list(targets))
    for url, line in targets.items():
        result = fetched[url]
        if result.ok and result.redirected and result.final != url:
            yield Hit(f"{quote(url, 60)} redirects to {quote(result.final, 60)}", line)


@check(
    "web-version-missing",
    Severity.ERROR,
    "The web version or an image is not live at base_url (--online).",
    "publish build/ (mailer build --all) to base_url before sending",
    online=True,
)
def published(ctx: Context) -> Iterator[Hit]:
    issue = ctx.issue
    wanted = {urls.issue_url(ctx.settings, issue.slug): "the web version"}
    for section in issue.sections:
        if section.image and section.image.path is not None:
            wanted[urls.image_url(ctx.settings, issue.slug, section.image.src)] = "the image"
    if ctx.settings.brand.logo:
        wanted[urls.asset_url(ctx.settings, ctx.settings.brand.logo)] = "the logo"
    fetched = fetch_all(ctx, list(wanted))
    for url, what in wanted.items():
        result = fetched[url]
        if not result.ok:
            why = result.error or f"HTTP {result.status}"
            yield Hit(f"{what} {quote(url, 70)} is not live: {why}")
