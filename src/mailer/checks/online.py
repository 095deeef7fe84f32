"""``mailer check --online``: fetch every link, and the web version and images at base_url.

At most :data:`PARALLEL` requests at once, each with a timeout, under a user agent that
says who is asking. Redirects are followed by hand so each hop can be reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from mailer import __version__
from mailer.checks.links import links
from mailer.checks.registry import Context, Hit, Severity, check, quote
from mailer.site import urls

if TYPE_CHECKING:
    import httpx

PARALLEL = 8
TIMEOUT = 15.0
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Fetched:
    url: str
    status: int | None
    final: str
    redirected: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and self.status < 400


def user_agent(ctx: Context) -> str:
    return f"mailer/{__version__} (newsletter link check; +{ctx.settings.base_url}/)"


def _fetch(client: httpx.Client, url: str) -> Fetched:
    import httpx

    current, redirected = url, False
    try:
        for _ in range(MAX_REDIRECTS + 1):
            # A GET, not a HEAD: many servers answer HEAD wrongly. The body is not read.
            with client.stream("GET", current) as response:
                status = response.status_code
                location = response.headers.get("location")
            if status in (301, 302, 303, 307, 308) and location:
                current, redirected = urljoin(current, location), True
                continue
            return Fetched(url, status, current, redirected)
        return Fetched(url, None, current, redirected, f"more than {MAX_REDIRECTS} redirects")
    except httpx.HTTPError as exc:
        return Fetched(
            url,
            None,
            current,
            redirected,
            f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
        )


def fetch_all(ctx: Context, targets: list[str]) -> dict[str, Fetched]:
    import httpx

    found: dict[str, Fetched] = ctx.memo.setdefault("fetched", {})
    todo = [u for u in dict.fromkeys(targets) if u not in found]
    if not todo:
        return found
    headers = {"User-Agent": user_agent(ctx)}
    limits = httpx.Limits(max_connections=PARALLEL)
    with (
        httpx.Client(
            headers=headers, timeout=TIMEOUT, limits=limits, follow_redirects=False
        ) as client,
        ThreadPoolExecutor(max_workers=PARALLEL) as pool,
    ):
        for result in pool.map(lambda u: _fetch(client, u), todo):
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
