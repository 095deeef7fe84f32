"""Compile one issue, once, into everything that is sent or published.

Nothing here runs per recipient: the email HTML and text keep the per-recipient links as
placeholders (:data:`mailer.urls.PLACEHOLDERS`) that :mod:`mailer.sending.message`
fills by substitution at send time.

Templates come from the newsletter folder's ``templates/`` where it has them, file by
file, and otherwise from the defaults shipped in this package (``render/templates/``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import jinja2
import mjml

from mailer import formats, urls
from mailer.config import Settings
from mailer.content import KICKERS, Issue, Section, Session, load_issues
from mailer.content.overrides import issue_settings
from mailer.errors import RenderError
from mailer.render.counted_links import count_clicks
from mailer.render.inline import inline_css
from mailer.render.markdown import prose, to_html, typo
from mailer.render.text import render_text
from mailer.store import optouts
from mailer.store.database import exists, open_db

LAYOUT = "newsletter.mjml.j2"
_TABLE_WITHOUT_ROLE = re.compile(r"<table(?![^>]*\brole=)", re.IGNORECASE)


@dataclass(frozen=True)
class CompiledIssue:
    """An issue compiled once: what is mailed (with placeholders) and what is published."""

    issue: Issue
    email_html: str
    email_text: str
    web_html: str
    # Everything else a recipient receives: the sender's headers, the list's name, and a
    # digest of each image's bytes (pictures are fetched from the web, not in the HTML).
    envelope: dict[str, str] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        """Identifies exactly what recipients receive; approvals are bound to it."""
        digest = hashlib.sha256()
        for part in (self.issue.subject, self.email_html, self.email_text):
            digest.update(part.encode("utf-8"))
            digest.update(b"\0")
        digest.update(json.dumps(self.envelope, sort_keys=True).encode("utf-8"))
        return digest.hexdigest()[:16]


def envelope_of(settings: Settings, issue: Issue) -> dict[str, str]:
    """What a recipient receives besides the two parts, for the approval to cover."""
    sender = settings.sender
    found = {
        "From": f"{sender.from_name} <{sender.from_address}>",
        "Reply-To": sender.reply_to or "",
        "List-Id name": settings.name,
        "organisation": settings.organisation,
    }
    for path in issue.images:
        name = (
            str(path.relative_to(issue.folder)) if path.is_relative_to(issue.folder) else path.name
        )
        found[f"image {name}"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    if settings.brand.logo:
        logo = settings.root / settings.brand.logo
        found["logo"] = hashlib.sha256(logo.read_bytes()).hexdigest()[:16]
    return found


# One Jinja environment per templates folder and set of files in it, so a process that
# builds again (the preview server, the worker, a build of several issues) parses each
# template once. Jinja reloads a template whose file changed; a file added to the
# folder, which overrides a shipped template of the same name, makes a new environment.
_ENVIRONMENTS: dict[tuple[str, tuple[str, ...]], jinja2.Environment] = {}


def _folder_files(folder: Path) -> tuple[str, ...]:
    try:
        return tuple(sorted(str(p.relative_to(folder)) for p in folder.rglob("*")))
    except OSError:
        return ()


def environment(settings: Settings) -> jinja2.Environment:
    """Jinja with the folder's own templates first, then the ones mailer ships."""
    folder = settings.templates_dir
    key = (str(folder), _folder_files(folder))
    found = _ENVIRONMENTS.get(key)
    if found is None:
        found = _ENVIRONMENTS[key] = _new_environment(folder)
    return found


def _new_environment(folder: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [
                jinja2.FileSystemLoader(folder),
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
        typo=typo,
        prose=prose,
        long_date=formats.long_date,
        month_year=formats.month_year,
        day_month_year=formats.day_month_year,
        time_range=formats.time_range,
        awareness_when=formats.awareness_when,
    )
    return env


def _session_ics(settings: Settings, slug: str, section: Section, session: Session) -> str:
    return urls.session_calendar_url(settings, slug, section.course_id, session.key)


def signup_open(settings: Settings) -> bool:
    """Whether anyone can sign up: a public list exists. Only then do footers offer the
    sign-up form ("Forwarded to you? Sign up"), so no link leads to a closed form."""
    if not exists(settings):
        return False
    with open_db(settings) as database, database.session() as session:
        return bool(optouts.public_lists(session))


def mjml_html(
    settings: Settings,
    issue: Issue,
    env: jinja2.Environment,
    *,
    web: bool,
    signup: bool = False,
) -> str:
    """The HTML the MJML compiler writes, before CSS inlining (tests compare the two)."""
    links: dict[str, Any] = {
        "signup": urls.signup_url(settings) if signup else None,
        "web": urls.issue_url(settings, issue.slug),
        "archive": urls.archive_url(settings),
        "image": partial(urls.image_url, settings, issue.slug),
        "logo": urls.asset_url(settings, settings.brand.logo) if settings.brand.logo else None,
        "unsubscribe": urls.generic_unsubscribe_url(settings)
        if web
        else urls.UNSUBSCRIBE_PLACEHOLDER,
        "preferences": urls.manage_url(settings) if web else urls.PREFERENCES_PLACEHOLDER,
        "training": urls.training_url(settings),
        "session_ics": partial(_session_ics, settings, issue.slug),
    }
    try:
        source = env.get_template(LAYOUT).render(
            settings=settings, issue=issue, web=web, urls=links, labels=KICKERS
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


def _mjml(
    settings: Settings, issue: Issue, env: jinja2.Environment, *, web: bool, signup: bool
) -> str:
    return inline_css(mjml_html(settings, issue, env, web=web, signup=signup))


def _check_placeholders(email_html: str, email_text: str) -> None:
    """Per-recipient values go only where the templates mark them: as a whole attribute
    value in the HTML, as a whole line in the text. Content can never make one (it is
    refused when read); this is the second line of defence."""
    for placeholder in urls.PLACEHOLDERS:
        if email_html.count(placeholder) != email_html.count(f'"{placeholder}"'):
            raise RenderError(
                f"{placeholder} appears in the email HTML outside a link the template "
                "marks: only templates may use it"
            )
        if email_text.count(placeholder) != email_text.count(f"\n{placeholder}\n"):
            raise RenderError(
                f"{placeholder} appears in the text part outside a line of its own: only "
                "templates may use it"
            )


def compile_issue(settings: Settings, issue: Issue, *, signup: bool | None = None) -> CompiledIssue:
    """``signup``: whether the footer offers the sign-up form; by default, whether a
    public list exists (:func:`signup_open`)."""
    if signup is None:
        signup = signup_open(settings)
    # The issue's own settings (organisation, sender's name, footer, brand) win.
    settings = issue_settings(settings, issue)
    env = environment(settings)
    email_html = _mjml(settings, issue, env, web=False, signup=signup)
    if settings.web.track_clicks:
        email_html = count_clicks(settings, issue.slug, email_html)
    web_html = _mjml(settings, issue, env, web=True, signup=signup)
    email_text = render_text(
        settings,
        issue,
        web_url=urls.issue_url(settings, issue.slug),
        unsubscribe_url=urls.UNSUBSCRIBE_PLACEHOLDER,
        preferences_url=urls.PREFERENCES_PLACEHOLDER,
        session_url=partial(_session_ics, settings, issue.slug),
        training_url=urls.training_url(settings),
        signup_url=urls.signup_url(settings) if signup else None,
    )
    _check_placeholders(email_html, email_text)
    return CompiledIssue(
        issue=issue,
        email_html=email_html,
        email_text=email_text,
        web_html=web_html,
        envelope=envelope_of(settings, issue),
    )


def require_size(settings: Settings, compiled: CompiledIssue) -> CompiledIssue:
    """``compiled``, if its email is within ``[limits] html_max_kb``; RenderError if not.

    Build and send refuse a larger email; `mailer check` reports it as a finding instead.
    """
    size = len(compiled.email_html.encode("utf-8"))
    if size > settings.limits.html_max_kb * 1024:
        raise RenderError(
            f"issues/{compiled.issue.slug}/issue.yaml: the email's HTML is {size / 1024:.0f} KB, "
            f"over the {settings.limits.html_max_kb} KB limit: Gmail would clip it and hide the "
            "unsubscribe link; shorten the issue or move sections to another one"
        )
    return compiled


def compile_slug(settings: Settings, slug: str, *, limits: bool = True) -> CompiledIssue:
    """Load, validate and compile one issue of the newsletter folder, refusing an email over
    the size limit unless ``limits`` is False (for the preflight checks, which report it)."""
    (issue,) = load_issues(settings, [slug])
    compiled = compile_issue(settings, issue)
    return require_size(settings, compiled) if limits else compiled
