"""``mailer edit``: an issue's editor in the browser, for the person at this machine.

An ASGI app made by :func:`create_editor`, served by uvicorn like ``mailer serve``, on
127.0.0.1 only. Every address starts with a random token made for this run, so another
user of the machine, or a web page open in the browser, cannot drive it; requests for any
other Host than its own are refused (a web page cannot reach it through a DNS name
rebound to 127.0.0.1), and so is a form posted from another origin.

The page is one plain HTML form that works without script: each button (add a section,
move it, upload a picture, save) posts the whole form, and the answer is the form again.
The form carries the draft (the document as edited so far, as YAML) and the text of
issue.yaml as it was opened, so saving can refuse to overwrite a change made on disk
meanwhile (:func:`mailer.content.document.save`). ``editor.js`` only improves it: it
asks for the preview again as you type.

Each answer validates the draft as ``mailer build`` does and runs the checks of ``mailer
check`` (except the slow spam score) on it, and shows each problem beside its field; the
email is shown at phone and desktop widths, compiled from the draft.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import getpass
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from ruamel.yaml.comments import CommentedMap
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from mailer import checks, urls
from mailer.config import Settings
from mailer.content import (
    ISSUE_FILE,
    SECTION_NAMES,
    SECTION_TYPES,
    all_slugs,
    document,
    scaffold,
)
from mailer.content.awareness import Occurrence, calendar
from mailer.content.load import check_image_file, parse_issue
from mailer.errors import ContentError, EditConflict, InvalidInput, MailerError
from mailer.formats import long_date
from mailer.render import CompiledIssue, compile_issue
from mailer.store import reviews
from mailer.store.database import open_db
from mailer.web.asgi import ASGIApp, Message, Scope

log = logging.getLogger("mailer.edit")


CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
    "frame-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'self'"
)
# The email shown in the preview frames: its own inline styles, never a script.
EMAIL_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
# The checks that take a second or more (SpamAssassin) wait for `mailer check`.
SLOW_CHECKS = ("spam-likely", "spam-score", "spam-not-checked")
# The most fields (and file fields) an issue's form may post.
MAX_FIELDS = 20_000
# How many compiled drafts are kept for the preview frames.
KEPT_DRAFTS = 16
# How far ahead of an issue's date the calendar's awareness days are offered.
CALENDAR_DAYS = 70


@dataclass
class Note:
    """A problem or a check finding, shown beside the field it concerns."""

    severity: str
    text: str
    hint: str = ""


@dataclass
class Evaluated:
    """A draft validated, compiled and checked."""

    notes: dict[str, list[Note]] = field(default_factory=dict)
    general: list[Note] = field(default_factory=list)
    preview: str = ""
    subject: str = ""
    content_hash: str = ""

    def add(self, where: str, note: Note) -> None:
        if where:
            self.notes.setdefault(where, []).append(note)
        else:
            self.general.append(note)

    @property
    def errors(self) -> int:
        every = [*self.general, *(n for notes in self.notes.values() for n in notes)]
        return sum(1 for n in every if n.severity == "error")


def field_id(name: str) -> str:
    """An HTML id for the field ``name`` (``sections[1].title`` -> ``f-sections-1-title``)."""
    return "f-" + "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")


class Editor:
    """What the routes share: the folder's settings, the address, the drafts compiled."""

    def __init__(self, settings: Settings, token: str, port: int) -> None:
        self.settings = settings
        self.prefix = f"/{token}"
        self.origin = f"http://127.0.0.1:{port}"
        self.site_url = f"{self.origin}{self.prefix}/site"
        self._drafts: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self.check_settings = dataclasses.replace(
            settings,
            checks=dataclasses.replace(
                settings.checks, ignore=tuple({*settings.checks.ignore, *SLOW_CHECKS})
            ),
        )
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("mailer.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.env.globals.update(
            settings=settings,
            prefix=self.prefix,
            field_id=field_id,
            labels=SECTION_NAMES,
            section_types=SECTION_TYPES,
            long_date=long_date,
        )

    def page(self, template: str, *, status: int = 200, **values: Any) -> HTMLResponse:
        text = self.env.get_template(template).render(**values)
        return HTMLResponse(text, status_code=status)

    def folder(self, slug: str) -> Path:
        if slug not in all_slugs(self.settings):
            raise InvalidInput(f"there is no issue {slug!r}")
        return self.settings.issues_dir / slug

    # -- drafts --------------------------------------------------------------------------------

    def keep(self, email_html: str) -> str:
        """Keep a compiled draft's email for the preview frames; its key."""
        # The email's links and pictures lead to this editor, which serves the issue
        # folder's pictures; each reader's own links lead nowhere in a preview.
        shown = email_html.replace(f"{self.settings.base_url}/", f"{self.site_url}/")
        for placeholder in urls.PLACEHOLDERS:
            shown = shown.replace(placeholder, "#")
        key = hashlib.sha256(shown.encode("utf-8")).hexdigest()[:20]
        with self._lock:
            self._drafts[key] = shown
            self._drafts.move_to_end(key)
            while len(self._drafts) > KEPT_DRAFTS:
                self._drafts.popitem(last=False)
        return key

    def kept(self, key: str) -> str | None:
        with self._lock:
            return self._drafts.get(key)

    def evaluate(self, slug: str, text: str, doc: CommentedMap | None = None) -> Evaluated:
        """Validate, compile and check the draft ``text`` of issue ``slug`` (``doc``: the
        text read already, with its lines)."""
        settings = self.settings
        folder = settings.issues_dir / slug
        shown = f"{settings.issues_dir.relative_to(settings.root)}/{slug}/{ISSUE_FILE}"
        found = Evaluated()
        try:
            issue = parse_issue(text, folder, slug, shown, settings.limits)
        except ContentError as exc:
            for problem in exc.problems:
                found.add(problem.field, Note("error", problem.message))
            return found
        try:
            compiled: CompiledIssue = compile_issue(settings, issue)
        except MailerError as exc:
            found.add("", Note("error", str(exc)))
            return found
        found.preview = self.keep(compiled.email_html)
        found.subject = issue.subject
        found.content_hash = compiled.content_hash
        send_date, _ = checks.planned_send_date(settings, issue)
        report = checks.run(self.check_settings, compiled, send_date, text=text)
        lines = document.field_lines(doc if doc is not None else document.read(text))
        for finding in report.findings:
            where = document.field_at(lines, finding.line) if finding.file == shown else ""
            # A finding about a session as a whole is shown beside its date.
            if where.rsplit(".", 1)[-1].startswith("sessions["):
                where += ".date"
            found.add(
                where,
                Note(str(finding.severity), f"{finding.message} ({finding.code})", finding.hint),
            )
        return found

    def record_save(self, slug: str, content_hash: str) -> None:
        """Put the save in the issue's history (`mailer history`)."""
        try:
            who = getpass.getuser()
        except (KeyError, OSError):
            who = ""
        with open_db(self.settings) as database, database.session(write=True) as session:
            reviews.add_save(session, slug, who, content_hash or None)


# -- the page of one issue --------------------------------------------------------------------


def _form_values(form: Any) -> dict[str, str]:
    return {key: value for key, value in form.multi_items() if isinstance(value, str)}


def carried(text: str) -> str:
    """Text the form carries back unchanged: a browser would turn its line ends into CRLF."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def uncarried(value: str) -> str:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
    except (ValueError, UnicodeError):
        raise InvalidInput("the form was damaged: open the issue again") from None


def _calendar_days(settings: Settings, day: str) -> list[Occurrence]:
    try:
        start = dt.date.fromisoformat(day)
    except ValueError:
        start = settings.today()  # the issue's date is not valid yet
    return calendar().between(
        start - dt.timedelta(days=7), start + dt.timedelta(days=CALENDAR_DAYS)
    )


def _occurrence_key(o: Occurrence) -> str:
    return f"{o.start.isoformat()}|{o.day.name}"


@dataclass
class EditOutcome:
    """What one press of a button did, for the page that answers it."""

    draft: str
    base: str
    message: str = ""
    problem: str = ""
    focus: str = ""
    conflict: list[str] = field(default_factory=list)
    mine: list[str] = field(default_factory=list)


def _act(
    editor: Editor, slug: str, values: dict[str, str], uploads: dict[str, UploadFile]
) -> EditOutcome:
    """Apply the form to the draft, then the button pressed."""
    folder = editor.folder(slug)
    base = uncarried(values.get("base", ""))
    draft = uncarried(values.get("draft", "")) or base
    doc = document.read(draft)
    document.apply(doc, values)
    action = values.get("action", "preview")
    verb, _, target = action.partition(":")
    outcome = EditOutcome(draft, base)
    try:
        if verb == "add":
            if target == "day":
                picked = values.get("pick", "")
                days = {
                    _occurrence_key(o): o
                    for o in _calendar_days(editor.settings, str(doc.get("date", "")))
                }
                if picked not in days:
                    raise InvalidInput("choose an awareness day from the list first")
                index = document.add_section(doc, "awareness", days[picked])
            else:
                index = document.add_section(doc, target)
            outcome.focus = f"sections[{index}].title"
            outcome.message = f"Section {index + 1} added."
        elif verb in ("up", "down"):
            index = int(target)
            to = document.move_section(doc, index, -1 if verb == "up" else 1)
            outcome.focus = f"sections[{to}].{verb}"
            outcome.message = f"Section {index + 1} is now section {to + 1}."
        elif verb == "remove":
            document.remove(doc, target)
            outcome.message = "Removed."
        elif verb == "session":
            index = int(target)
            j = document.add_session(doc, index)
            outcome.focus = f"sections[{index}].sessions[{j}].date"
            outcome.message = f"Session {j + 1} added to section {index + 1}."
        elif verb == "link":
            index = int(target)
            j = document.add_link(doc, index)
            outcome.focus = f"sections[{index}].links[{j}].text"
            outcome.message = f"Link {j + 1} added to section {index + 1}."
        elif verb == "upload":
            index = int(target)
            upload = uploads.get(f"sections[{index}].image.upload")
            data = upload.file.read() if upload is not None else b""
            name = upload.filename or "picture" if upload is not None else "picture"
            src = document.add_picture(folder, name, data, editor.settings.limits)
            document.apply(
                doc,
                {
                    f"sections[{index}].image.src": src,
                    f"sections[{index}].image.alt": values.get(f"sections[{index}].image.alt", ""),
                },
            )
            outcome.focus = f"sections[{index}].image.alt"
            outcome.message = f"The picture is saved as {src} in the issue folder."
    except (InvalidInput, ValueError) as exc:
        outcome.problem = str(exc)
    outcome.draft = document.write(doc, base or draft)
    if verb == "save":
        try:
            document.save(folder, base, outcome.draft)
        except EditConflict as exc:
            outcome.problem = str(exc)
            outcome.conflict = exc.diff
            outcome.mine = document.changes(base, outcome.draft, "as you opened it", "your edits")
            return outcome
        outcome.base = outcome.draft
        outcome.message = f"Saved {slug}/{ISSUE_FILE}."
    return outcome


def _issue_page(
    editor: Editor, slug: str, outcome: EditOutcome, *, status: int = 200
) -> HTMLResponse:
    doc = document.read(outcome.draft)
    evaluated = editor.evaluate(slug, outcome.draft, doc)
    if outcome.message.startswith("Saved"):
        editor.record_save(slug, evaluated.content_hash)
    values = document.view(doc)
    folder = editor.settings.issues_dir / slug
    return editor.page(
        "edit_issue.html.j2",
        status=status,
        title=f"Editing {slug}",
        slug=slug,
        values=values,
        draft=carried(outcome.draft),
        base=carried(outcome.base),
        unsaved=outcome.draft != outcome.base,
        evaluated=evaluated,
        message=outcome.message,
        problem=outcome.problem,
        conflict=outcome.conflict,
        mine=outcome.mine,
        focus=outcome.focus,
        pictures=list(document.pictures(folder)),
        days=[(_occurrence_key(o), o) for o in _calendar_days(editor.settings, values["date"])],
    )


# -- the app ----------------------------------------------------------------------------------


class Local:
    """ASGI middleware: only this run's token, only its own Host, forms only from itself;
    security headers on every answer."""

    def __init__(self, app: ASGIApp, editor: Editor, port: int, max_body: int) -> None:
        self.app, self.editor, self.max_body = app, editor, max_body
        self.hosts = {f"127.0.0.1:{port}".encode(), f"localhost:{port}".encode()}
        self.origins = {f"http://{h.decode()}".encode() for h in self.hosts}

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        path = str(scope.get("path", ""))
        refusal = None
        if headers.get(b"host", b"") not in self.hosts:
            refusal = (400, b"Unknown host.\n")
        elif path != self.editor.prefix and not path.startswith(self.editor.prefix + "/"):
            refusal = (404, b"Not found.\n")
        elif scope.get("method") not in ("GET", "HEAD"):
            origin = headers.get(b"origin")
            fetch_site = headers.get(b"sec-fetch-site")
            length = headers.get(b"content-length", b"0")
            # Browsers say where a request comes from in Sec-Fetch-Site, which no page can
            # change; an older one says it in Origin.
            if fetch_site is not None:
                foreign = fetch_site not in (b"same-origin", b"none")
            else:
                foreign = origin is not None and origin not in self.origins
            if foreign:
                refusal = (403, b"Forms are accepted only from the editor's own pages.\n")
            elif not length.isdigit() or int(length) > self.max_body:
                refusal = (413, b"Request too large: pictures must be smaller.\n")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    # Its own forms say their origin; other sites learn nothing of it.
                    (b"referrer-policy", b"same-origin"),
                    (b"cache-control", b"no-store"),
                    (b"x-robots-tag", b"noindex, nofollow"),
                ]
                names = {name.lower() for name, _ in message.get("headers", [])}
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", CSP.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        if refusal is not None:
            status, body = refusal
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send_with_headers({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send_with_headers)


router = APIRouter()
_STATIC = resources.files("mailer.web").joinpath("templates")


async def current_editor(request: Request) -> Editor:
    """The editor of the app serving this request: what every route depends on."""
    editor: Editor = request.app.state.editor
    return editor


EditorOf = Annotated[Editor, Depends(current_editor)]


@router.get("/")
def index(editor: EditorOf) -> HTMLResponse:
    return _index(editor)


@router.post("/new")
async def new(request: Request, editor: EditorOf) -> Response:
    form = await request.form()
    slug = str(form.get("slug", "")).strip()
    day_text = str(form.get("date", "")).strip()
    try:
        day = dt.date.fromisoformat(day_text) if day_text else editor.settings.today()
    except ValueError:
        return _index(editor, f"{day_text!r} is not a date: use YYYY-MM-DD", slug, day_text)
    try:
        await run_in_threadpool(scaffold.new_issue, editor.settings, slug, day)
    except ContentError as exc:
        message = "; ".join(problem.message for problem in exc.problems)
        return _index(editor, f"{slug}: {message}", slug, day_text)
    return RedirectResponse(f"{editor.prefix}/issue/{slug}", status_code=303)


@router.get("/issue/{slug}")
def open_issue(slug: str, editor: EditorOf) -> HTMLResponse:
    folder = editor.folder(slug)
    text = (folder / ISSUE_FILE).read_text(encoding="utf-8")
    return _issue_page(editor, slug, EditOutcome(text, text))


@router.post("/issue/{slug}")
async def post_issue(slug: str, request: Request, editor: EditorOf) -> HTMLResponse:
    # One field per value of the issue: a long issue has well over Starlette's 1,000.
    # The draft and the text as opened travel in two fields of up to 4/3 of the file.
    part = 2 * editor.settings.limits.issue_file_max_kb * 1024
    form = await request.form(
        max_files=MAX_FIELDS, max_fields=MAX_FIELDS, max_part_size=max(part, 1 << 20)
    )
    values = _form_values(form)
    uploads = {k: v for k, v in form.multi_items() if isinstance(v, UploadFile)}
    outcome = await run_in_threadpool(_act, editor, slug, values, uploads)
    status = 409 if outcome.conflict else 400 if outcome.problem else 200
    return await run_in_threadpool(_issue_page, editor, slug, outcome, status=status)


@router.get("/draft/{key}/email.html")
def draft_email(key: str, editor: EditorOf) -> Response:
    found = editor.kept(key)
    if found is None:
        return Response("This preview is out of date: update it.\n", status_code=404)
    return HTMLResponse(found, headers={"content-security-policy": EMAIL_CSP})


@router.get("/site/{slug}/{path:path}")
def picture(slug: str, path: str, editor: EditorOf) -> Response:
    folder = editor.folder(slug)
    file, wrong = check_image_file(folder, path, editor.settings.limits)
    if file is None:
        return Response(f"{wrong}\n", status_code=404)
    kind = {".png": "image/png", ".gif": "image/gif", ".webp": "image/webp"}.get(
        file.suffix.lower(), "image/jpeg"
    )
    return Response(file.read_bytes(), media_type=kind)


@router.get("/static/{name}")
def asset(name: str) -> Response:
    kinds = {"editor.js": "text/javascript", "editor.css": "text/css"}
    if name not in kinds:
        return Response("Not found.\n", status_code=404)
    return Response(_STATIC.joinpath(name).read_text(encoding="utf-8"), media_type=kinds[name])


def create_editor(settings: Settings, *, token: str, port: int) -> Local:
    """The editor of the newsletter folder ``settings`` describes, at
    ``http://127.0.0.1:PORT/TOKEN/``."""
    editor = Editor(settings, token, port)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.editor = editor
    app.include_router(router, prefix=editor.prefix)

    @app.exception_handler(InvalidInput)
    async def invalid(_request: Request, exc: InvalidInput) -> Response:
        return editor.page(
            "edit_problem.html.j2", status=400, title="This cannot be edited here", problem=str(exc)
        )

    body = settings.limits.image_max_kb * 1024 + 4 * settings.limits.issue_file_max_kb * 1024
    return Local(app, editor, port, body + 64 * 1024)


def _index(editor: Editor, problem: str = "", slug: str = "", day: str = "") -> HTMLResponse:
    slugs = list(reversed(all_slugs(editor.settings)))
    return editor.page(
        "edit_index.html.j2",
        status=400 if problem else 200,
        title="Issues",
        slugs=slugs,
        problem=problem,
        slug=slug,
        day=day or editor.settings.today().isoformat(),
    )
