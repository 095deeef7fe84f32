"""What every route shares: the settings, the database, the page templates, and compiled
issues kept in memory until their files change.

Issues are compiled with the same code as ``mailer build``, so a served web version is the
built one byte for byte. A compiled issue is kept until any file in its folder (or in the
newsletter's ``templates/``) changes, so a stream of requests costs a few ``stat`` calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from mailer import urls
from mailer.config import Settings
from mailer.content import Issue, all_slugs, load_issues
from mailer.formats import long_date
from mailer.render import compile_issue
from mailer.site import build, training
from mailer.store import optouts, publications
from mailer.store.database import Database
from mailer.store.grouped import GroupedWriter

Signature = tuple[tuple[str, int], ...]


def _signature(*folders: Path) -> Signature:
    found: list[tuple[str, int]] = []
    for folder in folders:
        if folder.is_dir():
            found += [(str(p), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()]
    return tuple(sorted(found))


@dataclass(frozen=True)
class _Entry:
    signature: Signature
    issue: Issue
    web_html: str | None


class Site:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        clock: Callable[[], float],
        *,
        patience: float,
    ) -> None:
        self.settings, self.db, self.clock = settings, database, clock
        # One-click unsubscribes arrive in bursts: one writer commits them together.
        self.writer = GroupedWriter(database, patience=patience)
        self.prefix = urls.base_path(settings)
        self._lock = threading.Lock()
        self._issues: dict[str, _Entry] = {}
        self._archive: tuple[Any, str, str] | None = None
        self._training: tuple[Any, str, str] | None = None
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("mailer.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            # The templates are the package's own: no need to look at their files again
            # on every page.
            auto_reload=False,
        )
        self.env.globals.update(
            settings=settings, path=self.path, long_date=long_date, signup_open=self.signup_open
        )
        self.stylesheet = self.env.get_template("site.css.j2").render()

    def path(self, template: str, **values: str) -> str:
        """A path on this site (below base_url's path), for links between the site's pages."""
        return self.prefix + template.format(**values)

    def signup_open(self) -> bool:
        """Whether a public list exists, so the pages may link to the sign-up form."""
        with self.db.session() as session:
            return bool(optouts.public_lists(session))

    def page(self, template: str, *, status: int = 200, **values: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(**values)
        return HTMLResponse(html, status_code=status)

    # -- issues -------------------------------------------------------------------------------

    def published(self) -> set[str]:
        """Published slugs that have an issue folder."""
        with self.db.session() as session:
            slugs = set(publications.published(session))
        return slugs & set(all_slugs(self.settings))

    def _entry(self, slug: str, *, compiled: bool) -> _Entry:
        signature = _signature(self.settings.issues_dir / slug, self.settings.templates_dir)
        with self._lock:
            entry = self._issues.get(slug)
        if entry is None or entry.signature != signature or (compiled and entry.web_html is None):
            (issue,) = load_issues(self.settings, [slug])
            web_html = (
                compile_issue(self.settings, issue, signup=self.signup_open()).web_html
                if compiled
                else None
            )
            entry = _Entry(signature, issue, web_html)
            with self._lock:
                self._issues[slug] = entry
        return entry

    def issue(self, slug: str) -> Issue:
        return self._entry(slug, compiled=False).issue

    def web_html(self, slug: str) -> str:
        html = self._entry(slug, compiled=True).web_html
        assert html is not None
        return html

    def archive(self) -> tuple[str, str]:
        """The archive page and the feed of the published issues, rebuilt when they change."""
        entries = [self._entry(slug, compiled=False) for slug in sorted(self.published())]
        issues = build.newest_first(e.issue for e in entries)
        key = tuple(e.signature for e in entries)
        with self._lock:
            cached = self._archive
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        pair = (build.archive_html(self.settings, issues), build.feed_xml(self.settings, issues))
        with self._lock:
            self._archive = (key, *pair)
        return pair

    def _published_entries(self) -> list[_Entry]:
        return [self._entry(slug, compiled=False) for slug in sorted(self.published())]

    def training(self) -> tuple[str, str]:
        """The training page and calendar feed of the published issues, from today on."""
        entries = self._published_entries()
        day = self.settings.today()
        key = (day, tuple(e.signature for e in entries))
        with self._lock:
            cached = self._training
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        issues = [e.issue for e in entries]
        pair = (
            training.page_html(self.settings, issues, day),
            training.feed_text(self.settings, issues, day),
        )
        with self._lock:
            self._training = (key, *pair)
        return pair

    def calendar_file(self, slug: str, name: str) -> str | None:
        """A published issue's session calendar file ``name``, as `mailer build` writes it."""
        issues = [e.issue for e in self._published_entries()]
        found = training.issue_calendars(self.settings, self.issue(slug), issues)
        return found.get(name)


async def current_site(request: Request) -> Site:
    """The site of the app serving this request: what every route depends on."""
    site: Site = request.app.state.site
    return site


# A route's parameter ``site: SiteOf`` is the site of the app serving the request.
SiteOf = Annotated[Site, Depends(current_site)]
