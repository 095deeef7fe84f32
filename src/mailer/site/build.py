"""Write compiled issues: the email, its text part, the web page and images.

A published issue is written to ``build/SLUG/``, and ``build/`` is what gets published (a
static copy of it carries nothing else); a draft is written to the preview root,
``.mailer/preview/SLUG/``, outside it. :func:`output_dir` is where either goes. When an
issue is published (``mailer publish``, or its first send to a list) its pages move into
``build/`` (:func:`publish_pages`).

Every issue is validated before anything is written, and each issue's folder is written
to a temporary folder and swapped in, so a failed build leaves the previous one untouched.

The archive page and the feed list only published issues (:func:`publish`; an issue is
also published when its first send starts): nothing public links to a draft.
``mailer build --all`` skips a draft that does not load (:func:`buildable`) and builds the
rest. ``mailer serve`` renders its archive and feed with the same functions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

from mailer import urls
from mailer.config import Settings
from mailer.content import Issue, all_slugs, load_issues
from mailer.errors import ContentError, InvalidInput, Problem, StateError
from mailer.files import private_folder
from mailer.formats import long_date
from mailer.render import CompiledIssue, compile_issue
from mailer.render.compile import environment, require_size, signup_open
from mailer.site import training
from mailer.store import publications
from mailer.store.database import exists, open_db
from mailer.store.status import PublishedBy

ATOM = "http://www.w3.org/2005/Atom"


@dataclass(frozen=True)
class BuiltFile:
    path: Path
    size: int
    warning: str = ""


def build(
    settings: Settings,
    slugs: Iterable[str],
    *,
    archive: bool = False,
    today: dt.date | None = None,
) -> list[BuiltFile]:
    """Build the named issues (and, with ``archive``, the archive page, the feed, and the
    training calendar of the sessions from ``today`` on: by default the real today)."""
    issues = load_issues(settings, slugs)
    signup = signup_open(settings)
    compiled = [
        require_size(settings, compile_issue(settings, issue, signup=signup)) for issue in issues
    ]
    with_sessions = any(s.sessions for issue in issues for s in issue.sections)
    published = published_issues(settings, issues) if archive or with_sessions else []
    public = published_slugs(settings)
    out = _folder(settings.build_dir)
    written: list[BuiltFile] = []
    warn_at = settings.limits.html_warn_kb * 1024
    for item in compiled:
        slug = item.issue.slug
        calendars = training.issue_calendars(settings, item.issue, published)
        if slug not in public and not settings.state_dir.exists():
            private_folder(settings.state_dir)
        target = output_dir(settings, slug, published=slug in public)
        files = _write_issue(_folder(target.parent), item, calendars)
        # The other place holds an older build: a draft's (published since) or, from a
        # version that built drafts into build/, a draft's that must not be published.
        shutil.rmtree(output_dir(settings, slug, published=slug not in public), ignore_errors=True)
        if files and files[0].size > warn_at:
            files[0] = dataclasses.replace(
                files[0],
                warning=f"{slug}: the email is {files[0].size / 1024:.0f} KB; Gmail "
                f"clips messages over 102 KB, so keep it under {settings.limits.html_warn_kb} KB",
            )
        written += files
    if settings.brand.logo:
        written += _copy(settings.root / settings.brand.logo, out / "assets")
    if archive:
        shown = newest_first(published)
        day = today or settings.today()
        written.append(_write_text(out / "index.html", archive_html(settings, shown)))
        written.append(_write_text(out / "feed.xml", feed_xml(settings, shown)))
        written.append(
            _write_text(
                out / "training.ics",
                training.feed_text(settings, published, day),
                exact_newlines=True,
            )
        )
        (out / "training").mkdir(exist_ok=True)
        written.append(
            _write_text(
                out / "training" / "index.html", training.page_html(settings, published, day)
            )
        )
    return written


def output_dir(settings: Settings, slug: str, *, published: bool) -> Path:
    """Where an issue is built: ``build/SLUG/`` once it is published, else the preview
    root's ``.mailer/preview/SLUG/``, so that a copy of build/ never carries a draft."""
    return (settings.build_dir if published else settings.preview_dir) / slug


def built_dir(settings: Settings, slug: str) -> Path:
    """Where the issue's pages are now: :func:`output_dir` for its state in the database."""
    return output_dir(settings, slug, published=slug in published_slugs(settings))


def _folder(path: Path) -> Path:
    """``path`` as a folder, created if need be; one clear line if a file is in the way."""
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"{path} is a file, not a folder: move it away so mailer can build")
    path.mkdir(parents=True, exist_ok=True)
    return path


def buildable(settings: Settings, slugs: Iterable[str]) -> tuple[list[str], list[Problem]]:
    """The slugs whose issue loads, and the first problem of each draft that does not.

    ``mailer build --all`` builds the rest and reports these: one half-written draft must
    not keep the archive behind. A published issue that does not load is not skipped
    (the archive would lose it), so it stops the build with all its problems.
    """
    public = published_slugs(settings)
    good: list[str] = []
    broken: list[Problem] = []
    for slug in slugs:
        try:
            load_issues(settings, [slug])
        except ContentError as exc:
            if slug in public:
                raise
            broken.append(exc.problems[0])
        else:
            good.append(slug)
    return good, broken


def published_slugs(settings: Settings) -> set[str]:
    if not exists(settings):
        return set()
    with open_db(settings) as db, db.session() as session:
        return set(publications.published(session))


def published_only(settings: Settings, issues: Iterable[Issue]) -> list[Issue]:
    """The issues that are published; drafts never reach the archive or the feed."""
    slugs = published_slugs(settings)
    return [i for i in issues if i.slug in slugs]


def published_issues(settings: Settings, loaded: Iterable[Issue] = ()) -> list[Issue]:
    """Every published issue that has a folder, loaded (reusing those in ``loaded``)."""
    have = {i.slug: i for i in loaded}
    slugs = sorted(published_slugs(settings) & set(all_slugs(settings)))
    missing = load_issues(settings, [s for s in slugs if s not in have])
    have.update((i.slug, i) for i in missing)
    return [have[s] for s in slugs]


def newest_first(issues: Iterable[Issue]) -> list[Issue]:
    return sorted(issues, key=lambda i: (i.date, i.slug), reverse=True)


def publish(settings: Settings, slug: str) -> bool:
    """Put an issue in the archive and the feed (``mailer publish``); False if it was already.

    The issue must load and validate, so a broken draft is never published. Its pages
    are built into build/ at once (and its preview removed).
    """
    load_issues(settings, [slug])
    with open_db(settings) as db, db.session(write=True) as session:
        new = publications.publish(session, slug, PublishedBy.COMMAND)[1]
    build(settings, [slug])
    return new


def publish_pages(settings: Settings, slug: str) -> None:
    """Move a published issue's pages from the preview root into build/ (its first send
    does this once the publication is stored); nothing for a draft, or without a preview.

    The send checked the preview against the issue as it compiles now (:func:`require_built`),
    so the pages are moved as they are, not built again.
    """
    source = output_dir(settings, slug, published=False)
    if not source.is_dir() or slug not in published_slugs(settings):
        return
    out = _folder(settings.build_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{slug}-", dir=out))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        staging.chmod(0o755)
        _swap_in(out, slug, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(source, ignore_errors=True)


def require_built(
    settings: Settings, compiled: CompiledIssue, *, published: bool | None = None
) -> None:
    """Refuse (StateError) an issue whose build is missing or older than its content.

    The build is looked for where :func:`output_dir` puts it (``published``: whether the
    issue is; looked up when not given).

    A send's "view in browser" link and its images point at the pages `mailer build` writes:
    sending an issue that was never built, or was built before its last change, mails
    links to pages that do not exist or say something else. The build is compared with
    what the issue compiles to now, so any change (issue.yaml, an image, a template,
    mailer.toml) counts, whatever the files' times say.
    """
    slug = compiled.issue.slug
    if published is None:
        published = slug in published_slugs(settings)
    folder = output_dir(settings, slug, published=published)
    if not (folder / "email.html").is_file():
        raise StateError(
            f"{slug} has not been built, so its web version and images are not published: "
            f"run mailer build {slug}"
        )
    stale = f"{_shown(settings, folder)} is older than the issue"
    again = f": run mailer build {slug}"
    for name, want in (("email.html", compiled.email_html), ("index.html", compiled.web_html)):
        try:
            built = (folder / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            built = None
        if built != want:
            raise StateError(f"{stale} (it changed since mailer build){again}")
    for image in compiled.issue.images:
        copy = folder / image.relative_to(compiled.issue.folder)
        if not copy.is_file() or copy.read_bytes() != image.read_bytes():
            raise StateError(f"{stale} (the image {copy.name} changed since mailer build){again}")
    if settings.brand.logo:
        logo = settings.root / settings.brand.logo
        copy = settings.build_dir / "assets" / logo.name
        if not copy.is_file() or copy.read_bytes() != logo.read_bytes():
            raise StateError(f"{stale} (the logo changed since mailer build){again}")


def _write_issue(out: Path, item: CompiledIssue, calendars: dict[str, str]) -> list[BuiltFile]:
    slug = item.issue.slug
    staging = Path(tempfile.mkdtemp(prefix=f".{slug}-", dir=out))
    try:
        (staging / "email.html").write_text(item.email_html, encoding="utf-8")
        (staging / "email.txt").write_text(item.email_text, encoding="utf-8")
        (staging / "index.html").write_text(item.web_html, encoding="utf-8")
        for name, text in calendars.items():
            # iCalendar lines end in CRLF, whatever the platform writes by default.
            (staging / name).write_text(text, encoding="utf-8", newline="")
        for image in item.issue.images:
            target = staging / image.relative_to(item.issue.folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(image, target)
        staging.chmod(0o755)
        final = _swap_in(out, slug, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(p for p in final.rglob("*") if p.is_file())
    order = {"email.html": 0, "email.txt": 1, "index.html": 2}
    files.sort(key=lambda p: (order.get(p.name, 3), str(p)))
    return [BuiltFile(p, p.stat().st_size) for p in files]


def _swap_in(out: Path, slug: str, staging: Path) -> Path:
    """Put the finished ``staging`` folder in place as ``out/SLUG``, replacing any."""
    final = out / slug
    old = out / f".{slug}-old"
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _shown(settings: Settings, path: Path) -> str:
    """``path`` as a message shows it: relative to the newsletter folder when inside it."""
    return str(path.relative_to(settings.root) if path.is_relative_to(settings.root) else path)


def _copy(source: Path, folder: Path) -> list[BuiltFile]:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    shutil.copy2(source, target)
    return [BuiltFile(target, target.stat().st_size)]


def _write_text(path: Path, text: str, *, exact_newlines: bool = False) -> BuiltFile:
    """Write ``path`` in one step; ``exact_newlines`` keeps CRLF as CRLF (iCalendar)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="" if exact_newlines else None)
    os.replace(tmp, path)
    return BuiltFile(path, path.stat().st_size)


def archive_html(settings: Settings, issues: list[Issue]) -> str:
    """The archive page: ``issues`` newest first, with their dates and section titles."""
    env = environment(settings)
    template = env.get_template("archive.html.j2")
    entries = [
        {"issue": i, "url": urls.issue_url(settings, i.slug), "date": long_date(i.date)}
        for i in issues
    ]
    return template.render(
        settings=settings,
        entries=entries,
        feed_url=urls.feed_url(settings),
        training_url=urls.training_url(settings),
        logo_url=urls.asset_url(settings, settings.brand.logo) if settings.brand.logo else None,
        signup_url=urls.signup_url(settings) if signup_open(settings) else None,
        privacy_url=settings.footer.privacy_url,
        manage_url=urls.manage_url(settings),
        accessibility_url=urls.accessibility_url(settings),
    )


def feed_xml(settings: Settings, issues: list[Issue]) -> str:
    """The Atom feed of ``issues`` (newest first)."""
    ET.register_namespace("", ATOM)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            el.text = text
        return el

    def stamp(day: dt.date) -> str:
        return dt.datetime.combine(day, dt.time(9), tzinfo=settings.tz).isoformat()

    feed = ET.Element(f"{{{ATOM}}}feed")
    sub(feed, "id", urls.archive_url(settings))
    sub(feed, "title", settings.name)
    sub(feed, "subtitle", settings.organisation)
    sub(feed, "link", href=urls.archive_url(settings))
    sub(feed, "link", rel="self", href=urls.feed_url(settings))
    sub(feed, "updated", stamp(issues[0].date) if issues else stamp(dt.date(2000, 1, 1)))
    author = sub(feed, "author")
    sub(author, "name", settings.organisation)
    for issue in issues:
        entry = sub(feed, "entry")
        link = urls.issue_url(settings, issue.slug)
        sub(entry, "id", link)
        sub(entry, "title", issue.subject)
        sub(entry, "link", href=link)
        sub(entry, "updated", stamp(issue.date))
        summary = issue.preheader or ", ".join(s.title for s in issue.sections)
        sub(entry, "summary", summary)
    ET.indent(feed)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(feed, encoding="unicode") + "\n"
