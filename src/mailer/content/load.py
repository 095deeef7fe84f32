"""Issue folders (``issues/<slug>/issue.yaml``) read and validated into :class:`Issue` objects.

The YAML format is the contract comms officers write; it is documented in docs/content.md
and must stay backward compatible. Validation collects every problem in one pass, each
located by file, line and field path, so a user fixes everything in one go.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import html
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError

from mailer.config import Limits
from mailer.content import hints, overrides
from mailer.content.model import ID, SECTION_NAMES, Image, Issue, Link, Section, Session
from mailer.errors import ContentError, Problem
from mailer.images import image_kind
from mailer.typed import TypedValueError, read_date, read_time

if TYPE_CHECKING:
    from mailer.config import Settings

ISSUE_FILE = "issue.yaml"
SECTION_TYPES = tuple(SECTION_NAMES)
SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

_ISSUE_KEYS = {"subject", "preheader", "date", "intro", "sections", "settings"}
_COMMON_KEYS = {"type", "title", "body", "image", "links", "closes"}
_EXTRA_KEYS = {
    "news": set(),
    "nspcc": set(),
    "text": set(),
    "awareness": {"date", "start", "end"},
    "training": {"booking_url", "booking_text", "sessions", "id"},
}
_SESSION_KEYS = {"date", "start", "end", "venue", "online", "url", "note", "id"}
_IMAGE_KEYS = {"src", "alt", "width"}
_LINK_KEYS = {"text", "url"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")
# Keys whose text is one line (Markdown bodies and the intro may hold line breaks).
_MULTILINE = {"body", "intro"}
# The start of mailer's per-recipient placeholders: typed into content, such a string could
# send every reader's personal unsubscribe link to wherever the content points.
PLACEHOLDER_MARK = "%%MAILER_"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_LINE_BREAK = re.compile(r"[\r\n]")


def _count_nodes(data: Any, budget: int) -> int:
    """How many nodes ``data`` has once aliases are expanded, counting no further than
    ``budget`` (a few aliases can otherwise stand for millions of nodes)."""
    seen = 0
    stack = [data]
    while stack and seen <= budget:
        node = stack.pop()
        seen += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return seen


class _Constructor(RoundTripConstructor):
    """Keeps YAML timestamps as text so an impossible date becomes our error, not a crash."""


_Constructor.add_constructor(
    "tag:yaml.org,2002:timestamp",
    lambda self, node: str(self.construct_scalar(node)),
)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    yaml.allow_duplicate_keys = False
    return yaml


def issue_dirs(issues_dir: Path) -> list[Path]:
    """Every issue folder, sorted by slug."""
    if not issues_dir.is_dir():
        return []
    return sorted(p for p in issues_dir.iterdir() if (p / ISSUE_FILE).is_file())


def load_issue(
    issues_dir: Path,
    slug: str,
    display_root: Path | None = None,
    limits: Limits | None = None,
) -> Issue:
    """Read and validate one issue; raise ContentError listing every problem."""
    limits = limits or Limits()
    folder = issues_dir / slug
    path = folder / ISSUE_FILE
    shown = _display(path, display_root)
    if not SLUG.fullmatch(slug):
        raise ContentError([Problem(shown, None, "", f"{slug!r} is not a valid issue slug")])
    if not path.is_file():
        names = [p.name for p in issue_dirs(issues_dir)]
        close = difflib.get_close_matches(slug, names, n=1, cutoff=0.6)
        if close:
            message = f"no issue {slug!r}: did you mean {close[0]!r}?"
        else:
            known = ", ".join(names[-12:]) or "none yet (start one with: mailer new SLUG)"
            message = f"no issue {slug!r} (known issues: {known})"
        raise ContentError([Problem(shown, None, "", message)])
    size = path.stat().st_size
    if size > limits.issue_file_max_kb * 1024:
        raise ContentError(
            [
                Problem(
                    shown,
                    None,
                    "",
                    f"the file is {size // 1024:,} KB, over the {limits.issue_file_max_kb:,} KB "
                    "limit ([limits] issue_file_max_kb in mailer.toml)",
                )
            ]
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        bad_line, message = hints.not_utf8(path.read_bytes(), exc.start)
        raise ContentError([Problem(shown, bad_line, "", message)]) from None
    return parse_issue(text, folder, slug, shown, limits)


def parse_issue(text: str, folder: Path, slug: str, shown: str, limits: Limits) -> Issue:
    """Validate the text of an issue.yaml (read from ``folder``, named ``shown`` in
    problems); ContentError listing every problem. ``mailer edit`` checks its drafts here."""
    try:
        data = _yaml().load(text)
    except MarkedYAMLError as exc:
        line, message = hints.yaml_error(exc, text)
        raise ContentError([Problem(shown, line, "", message)]) from None
    if _count_nodes(data, limits.yaml_max_nodes) > limits.yaml_max_nodes:
        raise ContentError(
            [
                Problem(
                    shown,
                    None,
                    "",
                    f"the file expands to more than {limits.yaml_max_nodes:,} values (through "
                    "YAML anchors and aliases): write each section out in full",
                )
            ]
        )
    checker = _Checker(shown, folder, limits)
    issue = checker.issue(slug, data)
    if checker.problems:
        # In file order, so a user can fix them from the top down.
        raise ContentError(sorted(checker.problems, key=lambda p: p.line or 0))
    assert issue is not None
    return issue


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


class _Checker:
    """Walks the parsed YAML, building typed objects and collecting located problems."""

    def __init__(self, file: str, folder: Path, limits: Limits | None = None) -> None:
        self.file = file
        self.folder = folder
        self.limits = limits or Limits()
        self.problems: list[Problem] = []

    # -- reporting -------------------------------------------------------------------------

    def add(self, line: int | None, path: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, path, message))

    @staticmethod
    def key_line(node: Any, key: str) -> int | None:
        if isinstance(node, CommentedMap) and key in node:
            return int(node.lc.key(key)[0]) + 1
        return _line(node)

    # -- scalars ---------------------------------------------------------------------------

    def text(self, node: Any, key: str, path: str, required: bool = False) -> str | None:
        if key not in node or node[key] is None:
            if required:
                self.add(_line(node), path, "is required")
            return None
        value = node[key]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.add(self.key_line(node, key), path, "must be text")
            return None
        value = str(value).strip()
        if required and not value:
            self.add(self.key_line(node, key), path, "must not be empty")
            return None
        line = self.key_line(node, key)
        if _CONTROL.search(value):
            self.add(line, path, "contains a control character: retype it")
            return None
        if key not in _MULTILINE and _LINE_BREAK.search(value):
            self.add(line, path, "must be one line (use quotes, not | or >)")
            return None
        if PLACEHOLDER_MARK in html.unescape(unquote(value)).upper():
            self.add(line, path, f"must not contain {PLACEHOLDER_MARK}...%%: it is reserved")
            return None
        return value

    def date(self, node: Any, key: str, path: str, required: bool = False) -> dt.date | None:
        raw = self.text(node, key, path, required)
        if raw is None:
            return None
        reason = "use YYYY-MM-DD"
        if _DATE.match(raw):
            try:
                return dt.date.fromisoformat(raw)
            except ValueError:
                pass
        else:
            try:
                # The UK forms people type: 7/12/2026, 7 Dec 2026, 7th December 2026.
                return read_date(raw, need_year=True)
            except TypedValueError as exc:
                reason = str(exc)
        hint = hints.curly_quotes(raw) or (
            "use YYYY-MM-DD" if reason.startswith("write a date") else reason
        )
        self.add(self.key_line(node, key), path, f"{raw!r} is not a valid date ({hint})")
        return None

    def time(self, node: Any, key: str, path: str, required: bool = True) -> dt.time | None:
        raw = self.text(node, key, path, required=required)
        if raw is None:
            return None
        m = _TIME.match(raw)
        if m and int(m[1]) < 24 and int(m[2]) < 60:
            return dt.time(int(m[1]), int(m[2]))
        # The forms people type: 9.30, 9.30am, 2pm, 12 noon.
        found = read_time(raw)
        if found is not None and found[2] == 0:
            return dt.time(found[0], found[1])
        hint = hints.curly_quotes(raw) or "use HH:MM, 24-hour, or 9.30am"
        self.add(self.key_line(node, key), path, f"{raw!r} is not a valid time ({hint})")
        return None

    def ident(self, node: Any, path: str) -> str | None:
        """An ``id:`` (a course's or a session's): lower-case letters, digits and dashes."""
        raw = self.text(node, "id", f"{path}.id")
        if raw is None:
            return None
        if not ID.fullmatch(raw):
            self.add(
                self.key_line(node, "id"),
                f"{path}.id",
                f"{raw!r} is not an id: use lower-case letters, digits and dashes (at most 64), "
                "like further-awareness",
            )
            return None
        return raw

    def url(self, node: Any, key: str, path: str, mailto: bool = False) -> str | None:
        raw = self.text(node, key, path, required=True)
        if raw is None:
            return None
        schemes = ("https://", "http://", "mailto:") if mailto else ("https://", "http://")
        if not raw.startswith(schemes) or " " in raw or len(raw) < 10:
            allowed = "an https:// or mailto: URL" if mailto else "an https:// URL"
            quotes = hints.curly_quotes(raw)
            self.add(
                self.key_line(node, key),
                path,
                f"{raw!r} is not {allowed}" + (f": {quotes}" if quotes else ""),
            )
            return None
        return raw

    def mapping(self, node: Any, path: str, allowed: set[str], parent_line: int | None) -> bool:
        if not isinstance(node, dict):
            self.add(_line(node) or parent_line, path, "must be a mapping of key: value")
            return False
        keys = list(node)
        for i, key in enumerate(keys):
            if key not in allowed:
                hint = _suggest(str(key), allowed)
                message = "unknown key" + (f" (did you mean {hint!r}?)" if hint else "")
                if node[key] is None and _flow(node) and not hint:
                    before = keys[i - 1] if i else None
                    message = hints.comma_in_braces(
                        before, node[before] if before is not None else "", str(key)
                    )
                self.add(self.key_line(node, key), f"{path}.{key}" if path else str(key), message)
        return True

    # -- structure -------------------------------------------------------------------------

    def issue(self, slug: str, data: Any) -> Issue | None:
        if data is None:
            self.add(1, "", "the file is empty")
            return None
        if not self.mapping(data, "", _ISSUE_KEYS, 1):
            return None
        subject = self.text(data, "subject", "subject", required=True)
        date = self.date(data, "date", "date", required=True)
        preheader = self.text(data, "preheader", "preheader") or ""
        intro = self.text(data, "intro", "intro") or ""
        sections: list[Section] = []
        raw_sections = data.get("sections")
        if raw_sections is None:
            self.add(_line(data), "sections", "is required (a list of at least one section)")
        elif not isinstance(raw_sections, list) or not raw_sections:
            self.add(self.key_line(data, "sections"), "sections", "must be a list of sections")
        else:
            for i, node in enumerate(raw_sections):
                section = self.section(node, f"sections[{i}]", _item_line(raw_sections, i))
                if section is not None:
                    sections.append(section)
        if not self.problems and sections:
            sections = self.identities(sections, raw_sections)
        images = tuple(
            s.image.path for s in sections if s.image is not None and s.image.path is not None
        )
        overrides = self.overrides(data)
        if subject is None or date is None or self.problems:
            return None
        return Issue(
            slug=slug,
            folder=self.folder,
            subject=subject,
            date=date,
            sections=tuple(sections),
            preheader=preheader,
            intro=intro,
            images=images,
            overrides=overrides,
        )

    def overrides(self, data: Any) -> tuple[tuple[str, str], ...]:
        """``settings:``: what this issue says differently from mailer.toml."""
        if "settings" not in data:
            return ()
        node = data["settings"]
        line = self.key_line(data, "settings")
        found: list[tuple[str, str]] = []
        tables = {name for name in overrides.KEYS if name}
        if not self.mapping(node, "settings", set(overrides.KEYS[""]) | tables, line):
            return ()
        for table in ["", *sorted(tables)]:
            where = f"settings.{table}" if table else "settings"
            inner = node.get(table) if table else node
            if inner is None:
                continue
            if table and not self.mapping(
                inner, where, set(overrides.KEYS[table]), self.key_line(node, table)
            ):
                continue
            for name in overrides.KEYS[table]:
                value = self.text(inner, name, f"{where}.{name}")
                if value is None:
                    continue
                key = f"{table}.{name}" if table else name
                wrong = overrides.problem(key, value)
                if wrong:
                    self.add(self.key_line(inner, name), f"{where}.{name}", wrong)
                else:
                    found.append((key, value))
        return tuple(found)

    def section(self, node: Any, path: str, line: int | None) -> Section | None:
        if not isinstance(node, dict):
            self.add(line, path, "must be a mapping with at least type: and title:")
            return None
        kind = self.text(node, "type", f"{path}.type", required=True)
        if kind is not None and kind not in SECTION_TYPES:
            self.add(
                self.key_line(node, "type"),
                f"{path}.type",
                f"unknown section type {kind!r} (use one of: {', '.join(SECTION_TYPES)})",
            )
            kind = None
        allowed = _COMMON_KEYS | (_EXTRA_KEYS[kind] if kind else set().union(*_EXTRA_KEYS.values()))
        self.mapping(node, path, allowed, line)
        title = self.text(node, "title", f"{path}.title", required=True)
        body = self.text(node, "body", f"{path}.body") or ""
        closes = self.date(node, "closes", f"{path}.closes")
        image = self.image(node, f"{path}.image")
        links = self.links(node, f"{path}.links")
        extra: dict[str, Any] = {}
        if kind == "awareness":
            extra.update(self.awareness(node, path))
        elif kind == "training":
            extra.update(self.training(node, path))
        if kind is None or title is None:
            return None
        return Section(
            type=kind, title=title, body=body, image=image, links=links, closes=closes, **extra
        )

    def identities(self, sections: list[Section], raw: list[Any]) -> list[Section]:
        """Every course and session of the issue with an id of its own.

        An ``id:`` written twice is an error. Two courses or sessions whose derived ids
        meet (the same title; the same date and start) are told apart by ``-2``, ``-3``, as
        they always were allowed to exist; only those get their ``id`` set here, so an
        ``id`` is otherwise one the author wrote.
        """
        out: list[Section] = []
        courses: set[str] = set()
        for i, (section, node) in enumerate(zip(sections, raw, strict=True)):
            if section.type != "training":
                out.append(section)
                continue
            if section.id and section.id in courses:
                self.add(
                    self.key_line(node, "id"),
                    f"sections[{i}].id",
                    f"{section.id!r} is the id of an earlier course: give each its own",
                )
            course = _unique(section.course_id, courses)
            keys: set[str] = set()
            sessions = []
            for j, (session, item) in enumerate(
                zip(section.sessions, node.get("sessions") or [], strict=True)
            ):
                if session.id and session.id in keys:
                    self.add(
                        self.key_line(item, "id"),
                        f"sections[{i}].sessions[{j}].id",
                        f"{session.id!r} is the id of an earlier session of this course: "
                        "give each its own",
                    )
                key = _unique(session.key, keys)
                sessions.append(
                    session if key == session.key else dataclasses.replace(session, id=key)
                )
            if course != section.course_id:
                section = dataclasses.replace(section, id=course)
            out.append(dataclasses.replace(section, sessions=tuple(sessions)))
        return out

    def awareness(self, node: Any, path: str) -> dict[str, Any]:
        day = self.date(node, "date", f"{path}.date")
        start = self.date(node, "start", f"{path}.start")
        end = self.date(node, "end", f"{path}.end")
        if day and (start or end):
            self.add(
                self.key_line(node, "date"), f"{path}.date", "give either date: or start: and end:"
            )
        if "start" in node and "end" not in node:
            self.add(self.key_line(node, "start"), f"{path}.end", "is required with start:")
        if "end" in node and "start" not in node:
            self.add(self.key_line(node, "end"), f"{path}.start", "is required with end:")
        if start and end and end < start:
            self.add(
                self.key_line(node, "end"), f"{path}.end", f"{end} is before the start {start}"
            )
        if not (day or start or end or any(k in node for k in ("date", "start", "end"))):
            self.add(_line(node), f"{path}.date", "is required (or start: and end: for a campaign)")
        return {"date": day, "start": start, "end": end}

    def training(self, node: Any, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "id" in node:
            out["id"] = self.ident(node, path)
        if "booking_url" in node:
            out["booking_url"] = self.url(node, "booking_url", f"{path}.booking_url", mailto=True)
        text = self.text(node, "booking_text", f"{path}.booking_text")
        if text:
            out["booking_text"] = text
        raw = node.get("sessions")
        sessions: list[Session] = []
        if raw is None:
            pass
        elif not isinstance(raw, list):
            self.add(self.key_line(node, "sessions"), f"{path}.sessions", "must be a list")
        else:
            for i, item in enumerate(raw):
                session = self.session(item, f"{path}.sessions[{i}]", _item_line(raw, i))
                if session:
                    sessions.append(session)
        out["sessions"] = tuple(sessions)
        return out

    def session(self, node: Any, path: str, line: int | None) -> Session | None:
        if not self.mapping(node, path, _SESSION_KEYS, line):
            return None
        day = self.date(node, "date", f"{path}.date", required=True)
        start = self.time(node, "start", f"{path}.start")
        end = self.time(node, "end", f"{path}.end", required=False)
        ident = self.ident(node, path) if "id" in node else None
        venue = self.text(node, "venue", f"{path}.venue", required=True)
        online = node.get("online", False)
        if not isinstance(online, bool):
            self.add(self.key_line(node, "online"), f"{path}.online", "must be true or false")
            online = False
        url = self.url(node, "url", f"{path}.url") if "url" in node else None
        note = self.text(node, "note", f"{path}.note")
        if start and end and end <= start:
            self.add(
                self.key_line(node, "end"),
                f"{path}.end",
                f"{end:%H:%M} is not after the start {start:%H:%M}",
            )
            return None
        if day is None or start is None or venue is None or ("end" in node and end is None):
            return None
        return Session(day, start, end, venue, online, url, note, ident)

    def image(self, node: Any, path: str) -> Image | None:
        if "image" not in node:
            return None
        raw = node["image"]
        line = self.key_line(node, "image")
        if not self.mapping(raw, path, _IMAGE_KEYS, line):
            return None
        src = self.text(raw, "src", f"{path}.src", required=True)
        alt = self.text(raw, "alt", f"{path}.alt", required=True)
        width = raw.get("width", 600)
        if isinstance(width, bool) or not isinstance(width, int) or not 16 <= width <= 600:
            self.add(
                self.key_line(raw, "width"),
                f"{path}.width",
                "must be a whole number of pixels from 16 to 600",
            )
            width = 600
        if src is None:
            return None
        # A missing alt is already reported; go on checking src so every problem shows at once.
        if src.startswith("https://"):
            return Image(src=src, alt=alt, width=width) if alt is not None else None
        if src.startswith(("http://", "/")) or ".." in Path(src).parts:
            self.add(
                self.key_line(raw, "src"),
                f"{path}.src",
                f"{src!r} must be a file in the issue folder or an https:// URL",
            )
            return None
        file = self.image_file(src, self.key_line(raw, "src"), f"{path}.src")
        if file is None or alt is None:
            return None
        return Image(src=src, alt=alt, width=width, path=file)

    def image_file(self, src: str, line: int | None, path: str) -> Path | None:
        file, wrong = check_image_file(self.folder, src, self.limits)
        if wrong is not None:
            self.add(line, path, wrong)
        return file

    def links(self, node: Any, path: str) -> tuple[Link, ...]:
        raw = node.get("links")
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.add(self.key_line(node, "links"), path, "must be a list of {text, url}")
            return ()
        out = []
        for i, item in enumerate(raw):
            p = f"{path}[{i}]"
            if not self.mapping(item, p, _LINK_KEYS, _item_line(raw, i)):
                continue
            text = self.text(item, "text", f"{p}.text", required=True)
            url = self.url(item, "url", f"{p}.url", mailto=True)
            if text and url:
                out.append(Link(text, url))
        return tuple(out)


def check_image_file(folder: Path, src: str, limits: Limits) -> tuple[Path | None, str | None]:
    """The picture ``src`` names in the issue ``folder``, or what is wrong with it: the rule
    of ``mailer build``, and of a picture uploaded in ``mailer edit``.

    Symbolic links are followed before the check, so a link to a file elsewhere (the
    signing key, say) is refused rather than published in build/.
    """
    if Path(src).suffix.lower() not in IMAGE_SUFFIXES:
        return None, f"{src!r} is not a PNG, JPEG, GIF or WebP file"
    inside = folder.resolve()
    file = (folder / src).resolve()
    if not file.is_relative_to(inside):
        return None, f"{src!r} leads outside the issue folder: copy the image into it"
    if not file.is_file():
        return None, f"image file {src} does not exist"
    size = file.stat().st_size
    if size > limits.image_max_kb * 1024:
        return None, (
            f"{src} is {size // 1024:,} KB, over the {limits.image_max_kb:,} KB limit: "
            "make it smaller"
        )
    with file.open("rb") as f:
        kind = image_kind(f.read(16))
    if kind is None:
        return None, f"{src} is not really a PNG, JPEG, GIF or WebP picture"
    return file, None


def _flow(node: Any) -> bool:
    """Whether a mapping was written on one line in braces: ``{date: ..., venue: ...}``."""
    return isinstance(node, CommentedMap) and bool(node.fa.flow_style())


def _line(node: Any) -> int | None:
    if isinstance(node, CommentedMap | CommentedSeq):
        return int(node.lc.line) + 1
    return None


def _item_line(seq: Any, index: int) -> int | None:
    if isinstance(seq, CommentedSeq):
        try:
            return int(seq.lc.item(index)[0]) + 1
        except (KeyError, TypeError):
            return _line(seq)
    return None


def _unique(wanted: str, taken: set[str]) -> str:
    """``wanted``, or ``wanted-2``, ``wanted-3``... whichever is not taken yet (then taken)."""
    found, n = wanted, 1
    while found in taken:
        n += 1
        found = f"{wanted}-{n}"
    taken.add(found)
    return found


def _suggest(word: str, options: set[str]) -> str | None:
    match = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    return match[0] if match else None


def load_issues(settings: Settings, slugs: Iterable[str]) -> list[Issue]:
    """Load and validate every issue named, reporting all problems of all of them at once."""
    issues: list[Issue] = []
    problems: list[Problem] = []
    for slug in slugs:
        try:
            issues.append(load_issue(settings.issues_dir, slug, settings.root, settings.limits))
        except ContentError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ContentError(problems)
    return issues


def all_slugs(settings: Settings) -> list[str]:
    """The slug of every issue folder, sorted."""
    return [p.name for p in issue_dirs(settings.issues_dir)]
