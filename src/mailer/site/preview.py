"""``mailer preview``: the issue as readers will see it, rebuilt as you write it.

A small local web server (the standard library's: it starts at once and needs nothing
else) that shows an issue's email at phone and desktop widths, its text part and its web
version. The issue is compiled with the server's own address as ``base_url``, so the
images and the "view in browser" link come from the issue folder, not from a web site
that does not have them yet. A watcher notices when ``issue.yaml``, an image, a template
or ``mailer.toml`` changes, compiles again, and the page (which asks the server for news
with one long-polling request) reloads itself. A mistake in the issue is shown in the
page, with its line, until it is fixed.

It only ever answers GET and HEAD, listens on the loopback address by default, refuses
requests whose Host is not its own (so no other web page can read it through DNS
rebinding), and serves only the files an issue names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import logging
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from mailer import config, urls
from mailer.config import CONFIG_NAME, Settings
from mailer.content import ISSUE_FILE, all_slugs, load_issue
from mailer.errors import ContentError, MailerError
from mailer.formats import human_size, long_date
from mailer.render import CompiledIssue, compile_issue

log = logging.getLogger("mailer.preview")
PREFIX = "/_preview"
# How long a page's request for news waits before it is answered "no change".
LONG_POLL = 25.0
CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; frame-src 'self'; "
    "img-src 'self' https: data:; style-src 'self' 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'"
)
# The page asks for news and reloads when there is some; on a failed request it waits a
# moment (the server may be restarting) and asks again.
RELOAD_JS = """\
(function () {
  var seen = document.documentElement.getAttribute("data-version");
  function ask() {
    fetch("PREFIX/changes?seen=" + seen, {cache: "no-store"})
      .then(function (r) { return r.json(); })
      .then(function (news) {
        if (news.version !== seen) { location.reload(); } else { ask(); }
      })
      .catch(function () { setTimeout(ask, 1000); });
  }
  ask();
})();
""".replace("PREFIX", PREFIX)


@dataclass
class Built:
    """One issue as last compiled, or why it could not be."""

    compiled: CompiledIssue | None
    problems: list[str]


class Preview:
    """What the server shows: every issue, compiled on demand and again after a change."""

    def __init__(self, root: Path, poll: float = 0.3) -> None:
        self.root = root
        self.poll = poll
        self.base_url = ""
        self.version = "0"
        self._fingerprint = ""
        self._built: dict[str, Built] = {}
        self._settings: Settings | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- what changed -----------------------------------------------------------------

    def _files(self) -> Iterator[Path]:
        yield self.root / CONFIG_NAME
        for folder in (self.root / "issues", self.root / "templates"):
            if folder.is_dir():
                yield from (p for p in folder.rglob("*") if p.is_file())
        settings = self._settings
        if settings is not None and settings.brand.logo:
            yield self.root / settings.brand.logo

    def fingerprint(self) -> str:
        """Changes whenever a file the issues are made from changes, even within one tick of
        the file system's clock: small text files count by their content."""
        digest = hashlib.sha256()
        for path in sorted(self._files()):
            try:
                info = path.stat()
                digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
                if path.suffix in (".yaml", ".toml", ".j2") and info.st_size < 1 << 20:
                    digest.update(path.read_bytes())
            except OSError:
                digest.update(f"{path}\0gone".encode())
        return digest.hexdigest()[:16]

    def refresh(self) -> bool:
        """Forget what was compiled if a file changed; True if it did."""
        now = self.fingerprint()
        with self._cond:
            if now == self._fingerprint:
                return False
            self._fingerprint = now
            self._built.clear()
            self._settings = None
            self.version = now
            self._cond.notify_all()
        return True

    def wait(self, seen: str, timeout: float = LONG_POLL) -> str:
        """The version, once it is not ``seen`` (or when ``timeout`` is up)."""
        with self._cond:
            self._cond.wait_for(lambda: self.version != seen or self._stop.is_set(), timeout)
            return self.version

    def watch(self) -> None:
        self.refresh()

        def loop() -> None:
            while not self._stop.wait(self.poll):
                if self.refresh():
                    log.info("a file changed: the preview reloads")

        self._watcher = threading.Thread(target=loop, name="preview-watcher", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    # -- compiling ----------------------------------------------------------------------

    def settings(self) -> Settings:
        with self._cond:
            if self._settings is None:
                loaded = config.load(self.root)
                # Links and images point at this server; counted links would lead nowhere.
                self._settings = dataclasses.replace(
                    loaded,
                    base_url=self.base_url,
                    web=dataclasses.replace(loaded.web, track_clicks=False),
                )
            return self._settings

    def slugs(self) -> list[str]:
        return all_slugs(self.settings())

    def built(self, slug: str) -> Built:
        with self._cond:
            found = self._built.get(slug)
            version = self.version
        if found is not None:
            return found
        try:
            settings = self.settings()
            issue = load_issue(settings.issues_dir, slug, settings.root, settings.limits)
            found = Built(compile_issue(settings, issue), [])
        except ContentError as exc:
            found = Built(None, [str(p) for p in exc.problems])
        except MailerError as exc:
            found = Built(None, [str(exc)])
        with self._cond:
            # A file that changed while this compiled makes the result stale: keep it out.
            if self.version == version:
                self._built[slug] = found
        return found


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.command, format % args)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        preview = self.server.preview
        if self.headers.get("Host", "") not in self.server.hosts:
            self._send(HTTPStatus.BAD_REQUEST, "text/plain", b"Unknown host.\n")
            return
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        try:
            if path == "/":
                self._page(index_page(preview))
            elif path == f"{PREFIX}/reload.js":
                self._send(HTTPStatus.OK, "text/javascript", RELOAD_JS.encode())
            elif path == f"{PREFIX}/changes":
                seen = parse_qs(parts.query).get("seen", [""])[0]
                body = f'{{"version": "{preview.wait(seen)}"}}'
                self._send(HTTPStatus.OK, "application/json", body.encode())
            elif path == f"{PREFIX}/personal":
                self._page(_PERSONAL)
            elif path.startswith(f"{PREFIX}/"):
                self._preview(path.removeprefix(f"{PREFIX}/"))
            else:
                self._published(path)
        except (ContentError, MailerError) as exc:
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain", f"{exc}\n".encode())

    def _preview(self, rest: str) -> None:
        slug, _, part = rest.partition("/")
        preview = self.server.preview
        if slug not in preview.slugs():
            self._not_found()
            return
        built = preview.built(slug)
        if part == "":
            self._page(issue_page(preview, slug, built))
        elif built.compiled is None:
            self._not_found()
        elif part == "email.html":
            self._page(personal_links(built.compiled.email_html), csp=False)
        elif part == "email.txt":
            text = personal_links(built.compiled.email_text)
            self._send(HTTPStatus.OK, "text/plain; charset=utf-8", text.encode())
        else:
            self._not_found()

    def _published(self, path: str) -> None:
        """What base_url serves: each issue's web version, its images, and the logo."""
        preview = self.server.preview
        settings = preview.settings()
        if settings.brand.logo and path == f"/assets/{settings.brand.logo.rpartition('/')[2]}":
            self._file(settings.root / settings.brand.logo)
            return
        slug, _, rest = path.strip("/").partition("/")
        if slug not in preview.slugs():
            self._not_found()
            return
        built = preview.built(slug)
        if built.compiled is None:
            self._page(issue_page(preview, slug, built))
            return
        if rest == "":
            self._page(built.compiled.web_html, csp=False)
            return
        issue = built.compiled.issue
        for image in issue.images:
            if image.relative_to(issue.folder).as_posix() == rest:
                self._file(image)
                return
        self._not_found()

    def _file(self, path: Path) -> None:
        kind = {".png": "image/png", ".gif": "image/gif", ".webp": "image/webp"}.get(
            path.suffix.lower(), "image/jpeg"
        )
        self._send(HTTPStatus.OK, kind, path.read_bytes())

    def _not_found(self) -> None:
        self._send(HTTPStatus.NOT_FOUND, "text/plain", b"Not found.\n")

    def _page(self, text: str, csp: bool = True) -> None:
        self._send(HTTPStatus.OK, "text/html; charset=utf-8", text.encode(), csp=csp)

    def _send(self, status: HTTPStatus, kind: str, body: bytes, csp: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        # The email and the web version carry no script; the preview pages only their own.
        self.send_header(
            "Content-Security-Policy", CSP if csp else CSP.replace("script-src 'self'", "")
        )
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    preview: Preview
    hosts: set[str]

    def handle_error(self, request: object, client_address: object) -> None:
        """One line in the log, never a traceback on the terminal: a browser that closes a
        tab mid-answer (BrokenPipeError, ConnectionResetError) is not even worth that."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            log.debug("the browser went away: %s", exc)
            return
        log.error("preview: %s: %s", type(exc).__name__, exc)


def serve(root: Path, host: str = "127.0.0.1", port: int = 8100) -> tuple[_Server, Preview]:
    """A started preview server (call ``serve_forever`` on it) and its Preview."""
    preview = Preview(root)
    server = _Server((host, port), _Handler)
    server.preview = preview
    bound = server.server_address[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    preview.base_url = f"http://{shown}:{bound}"
    server.hosts = {f"{shown}:{bound}", f"localhost:{bound}", f"127.0.0.1:{bound}"}
    preview.settings()  # a broken mailer.toml is refused now, not on the first request
    preview.watch()
    return server, preview


# -- the pages -------------------------------------------------------------------------------


_PERSONAL = (
    "<!doctype html><html lang='en'><meta charset='utf-8'><title>A personal link</title>"
    "<p>In the email each reader receives, this link is their own: to unsubscribe, or to "
    "change their preferences. The preview has no reader, so it leads here.</p></html>"
)


def personal_links(text: str) -> str:
    """The compiled email with each reader's own links pointing at an explanation."""
    for placeholder in urls.PLACEHOLDERS:
        text = text.replace(placeholder, f"{PREFIX}/personal")
    return text


def _frame(preview: Preview, body: str, title: str) -> str:
    return (
        f"<!doctype html><html lang='en' data-version='{html.escape(preview.version)}'>"
        f"<head><meta charset='utf-8'><title>{html.escape(title)} – preview</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:0;background:#eef0f3;color:#1f2933}"
        "header{background:#1f2933;color:#fff;padding:10px 20px}header a{color:#fff}"
        "main{padding:16px 20px}.panes{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}"
        ".pane h2{font-size:14px;margin:0 0 6px}iframe{border:1px solid #c5ccd3;background:#fff}"
        "pre{background:#fff;border:1px solid #c5ccd3;padding:12px;max-width:80ch;"
        "white-space:pre-wrap}.problems{background:#fde8e8;border-left:6px solid #b42318;"
        "padding:12px 16px}</style>"
        f"<script src='{PREFIX}/reload.js' defer></script></head><body>"
        f"<header><a href='/'>All issues</a> · preview of {html.escape(title)} · reloads "
        f"when you save</header><main>{body}</main></body></html>"
    )


def index_page(preview: Preview) -> str:
    items = "".join(
        f"<li><a href='{PREFIX}/{quote(slug)}/'>{html.escape(slug)}</a></li>"
        for slug in reversed(preview.slugs())
    )
    return _frame(preview, f"<h1>Issues</h1><ul>{items}</ul>", "all issues")


def issue_page(preview: Preview, slug: str, built: Built) -> str:
    if built.compiled is None:
        problems = "".join(f"<li>{html.escape(p)}</li>" for p in built.problems)
        body = (
            f"<div class='problems'><h1>{html.escape(slug)} cannot be shown yet</h1>"
            f"<ul>{problems}</ul><p>Fix issues/{html.escape(slug)}/{ISSUE_FILE} and save: "
            "this page reloads.</p></div>"
        )
        return _frame(preview, body, slug)
    compiled = built.compiled
    issue = compiled.issue
    email = f"{PREFIX}/{quote(slug)}/email.html"
    size = human_size(len(compiled.email_html.encode()))
    web = urls.issue_url(preview.settings(), slug)
    body = (
        f"<h1>{html.escape(issue.subject)}</h1>"
        f"<p>{html.escape(issue.preheader)}</p>"
        f"<p>{long_date(issue.date)} · email {size} · "
        f"<a href='{html.escape(web)}'>the web version</a> · "
        f"<a href='{email}'>the email alone</a></p>"
        "<div class='panes'>"
        f"<div class='pane'><h2>Phone (375 px)</h2><iframe title='The email on a phone' "
        f"src='{email}' width='375' height='800'></iframe></div>"
        f"<div class='pane'><h2>Desktop (700 px)</h2><iframe title='The email on a desktop' "
        f"src='{email}' width='700' height='800'></iframe></div>"
        "</div>"
        f"<h2>Text part</h2><pre>{html.escape(personal_links(compiled.email_text))}</pre>"
    )
    return _frame(preview, body, slug)
