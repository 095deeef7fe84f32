"""Compile one issue, once, into everything that is sent or published.

Nothing here runs per recipient: the email HTML and text keep the per-recipient links as
placeholders (:data:`mailer.site.urls.PLACEHOLDERS`) that :mod:`mailer.sending.message`
fills by substitution at send time.

Templates come from the newsletter folder's ``templates/`` where it has them, file by
file, and otherwise from the defaults shipped in this package (``render/templates/``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import partial
from typing import Any

import jinja2
import mjml

from mailer import formats
from mailer.config import Settings
from mailer.content import Issue, load_issues
from mailer.errors import RenderError
from mailer.render.inline import inline_css
from mailer.render.links import count_clicks
from mailer.render.markdown import to_html
from mailer.render.text import LABELS, render_text
from mailer.site import urls

LAYOUT = "newsletter.mjml.j2"
_TABLE_WITHOUT_ROLE = re.compile(r"<table(?![^>]*\brole=)", re.IGNORECASE)


@dataclass(frozen=True)
class CompiledIssue:
    """An issue compiled once: what is mailed (with placeholders) and what is published."""

    issue: Issue
    email_html: str
    email_text: str
    web_html: str

    @property
    def content_hash(self) -> str:
        """Identifies exactly what recipients receive; approvals are bound to it."""
        digest = hashlib.sha256()
        for part in (self.issue.subject, self.email_html, self.email_text):
            digest.update(part.encode("utf-8"))
            digest.update(b"\0")
        return digest.hexdigest()[:16]


def environment(settings: Settings) -> jinja2.Environment:
    """Jinja with the folder's own templates first, then the ones mailer ships."""
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [
                jinja2.FileSystemLoader(settings.templates_dir),
                jinja2.PackageLoader("mailer.render", "templates"),
            ]
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        keep_trailing_newline=True,
    )
    env.filters.update(
        md=to_html,
        long_date=formats.long_date,
        month_year=formats.month_year,
        day_month_year=formats.day_month_year,
        time_range=formats.time_range,
        awareness_when=formats.awareness_when,
    )
    return env


def mjml_html(settings: Settings, issue: Issue, env: jinja2.Environment, *, web: bool) -> str:
    """The HTML the MJML compiler writes, before CSS inlining (tests compare the two)."""
    links: dict[str, Any] = {
        "web": urls.issue_url(settings, issue.slug),
        "archive": urls.archive_url(settings),
        "image": partial(urls.image_url, settings, issue.slug),
        "logo": urls.asset_url(settings, settings.brand.logo) if settings.brand.logo else None,
        "unsubscribe": urls.generic_unsubscribe_url(settings)
        if web
        else urls.UNSUBSCRIBE_PLACEHOLDER,
        "preferences": urls.manage_url(settings) if web else urls.PREFERENCES_PLACEHOLDER,
    }
    try:
        source = env.get_template(LAYOUT).render(
            settings=settings, issue=issue, web=web, urls=links, labels=LABELS
        )
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"{exc.filename}:{exc.lineno}: template error: {exc.message}") from exc
    except jinja2.TemplateError as exc:
        raise RenderError(f"template error in {LAYOUT}: {exc}") from exc
    try:
        # No web fonts and no third-party icon host: the email must not phone anyone.
        html = str(mjml.mjml2html(source, fonts={}, social_icon_origin=settings.base_url))
    except Exception as exc:  # mjml-python raises ValueError with MRML's message
        raise RenderError(f"MJML compile failed: {exc}") from exc
    # MRML leaves a few layout tables without a role; screen readers must skip them all.
    return _TABLE_WITHOUT_ROLE.sub('<table role="presentation"', html)


def _mjml(settings: Settings, issue: Issue, env: jinja2.Environment, *, web: bool) -> str:
    return inline_css(mjml_html(settings, issue, env, web=web))


def compile_issue(settings: Settings, issue: Issue) -> CompiledIssue:
    env = environment(settings)
    email_html = _mjml(settings, issue, env, web=False)
    if settings.web.track_clicks:
        email_html = count_clicks(settings, issue.slug, email_html)
    web_html = _mjml(settings, issue, env, web=True)
    email_text = render_text(
        settings,
        issue,
        web_url=urls.issue_url(settings, issue.slug),
        unsubscribe_url=urls.UNSUBSCRIBE_PLACEHOLDER,
        preferences_url=urls.PREFERENCES_PLACEHOLDER,
    )
    return CompiledIssue(
        issue=issue, email_html=email_html, email_text=email_text, web_html=web_html
    )


def compile_slug(settings: Settings, slug: str) -> CompiledIssue:
    """Load, validate and compile one issue of the newsletter folder."""
    (issue,) = load_issues(settings, [slug])
    return compile_issue(settings, issue)
