"""issue.yaml as a document that a form edits: the model behind ``mailer edit``.

The file is read with ruamel.yaml's round-trip loader and written back with the indents it
was written with, so comments, the order of keys, quoting and keys the editor does not
know about all survive a save: only the values a person changed in the form are touched.
A value typed into the form keeps the style of the value it replaces (a ``|`` block stays
a block, a quoted time stays quoted).

Form fields are named by the paths that validation problems carry
(``sections[2].sessions[0].date``, see docs/content.md), so a problem, and a check
finding through :func:`field_lines`, lands next to the field it concerns.

Saving never overwrites an edit made on disk meanwhile: :func:`save` compares the file
with the text the editor started from and refuses, with the difference, when they differ.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import io
import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    LiteralScalarString,
    PlainScalarString,
    SingleQuotedScalarString,
)
from ruamel.yaml.util import load_yaml_guess_indent

from mailer.config import Limits
from mailer.content.awareness import Occurrence
from mailer.content.load import (
    IMAGE_SUFFIXES,
    ISSUE_FILE,
    SECTION_TYPES,
    check_image_file,
)
from mailer.errors import EditConflict, InvalidInput

# The fields of a form, by where they are, and how their text becomes a YAML value.
ISSUE_FIELDS = {"subject": "text", "preheader": "text", "date": "date", "intro": "markdown"}
SECTION_FIELDS = {"title": "text", "body": "markdown", "closes": "date"}
TYPE_FIELDS = {
    "news": {},
    "nspcc": {},
    "text": {},
    "awareness": {"date": "date", "start": "date", "end": "date"},
    "training": {"booking_url": "text", "booking_text": "text"},
}
SESSION_FIELDS = {
    "date": "date",
    "start": "time",
    "end": "time",
    "venue": "text",
    "online": "flag",
    "url": "text",
    "note": "text",
}
IMAGE_FIELDS = {"src": "text", "alt": "text", "width": "number"}
LINK_FIELDS = {"text": "text", "url": "text"}
# Keys that stay when their field is emptied, so validation names what is missing there;
# any other emptied field removes its key.
_REQUIRED = {
    "issue": {"subject", "date"},
    "section": {"title"},
    "session": {"date", "start", "venue"},
    "image": {"src", "alt"},
    "link": {"text", "url"},
}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# A picture's new name: what is left of the uploaded name, made safe for a path and a URL.
_UNSAFE = re.compile(r"[^a-z0-9._-]+")


def _yaml(indent: int = 4, offset: int = 2) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    # Never fold a long line: the file is written as it was read, line for line.
    yaml.width = 1 << 16
    yaml.indent(mapping=2, sequence=indent, offset=offset)
    return yaml


def read(text: str) -> CommentedMap:
    """The round-trip document of an issue.yaml; InvalidInput if it is not a YAML mapping
    (a file that does not parse must be mended in a text editor first: ``mailer build``
    names the line)."""
    try:
        data = _yaml().load(text)
    except YAMLError as exc:
        raise InvalidInput(f"issue.yaml is not valid YAML: {exc}") from None
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise InvalidInput("issue.yaml must be a mapping of key: value")
    return data


@functools.lru_cache(maxsize=8)
def _indents(like: str) -> tuple[int, int]:
    """How ``like`` indents its lists (guessing parses the whole text: done once per text)."""
    try:
        _, indent, offset = load_yaml_guess_indent(like)
    except YAMLError:
        return 4, 2
    return indent or 4, offset if offset is not None else 2


def write(doc: CommentedMap, like: str) -> str:
    """``doc`` as text, indented as ``like`` (the text it was read from) is."""
    out = io.StringIO()
    _yaml(*_indents(like)).dump(doc, out)
    return out.getvalue()


# -- what the form shows -------------------------------------------------------------------


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _mapping(node: Any) -> CommentedMap:
    return node if isinstance(node, CommentedMap) else CommentedMap()


def _items(node: Any) -> list[Any]:
    return list(node) if isinstance(node, list) else []


def view(doc: CommentedMap) -> dict[str, Any]:
    """Every value the form shows, as text, in the shape of the document."""
    out: dict[str, Any] = {key: _shown(doc.get(key)) for key in ISSUE_FIELDS}
    sections = []
    for raw in _items(doc.get("sections")):
        node = _mapping(raw)
        kind = _shown(node.get("type"))
        section: dict[str, Any] = {"type": kind}
        for key in (*SECTION_FIELDS, *TYPE_FIELDS.get(kind, {})):
            section[key] = _shown(node.get(key))
        image = node.get("image")
        section["image"] = (
            {key: _shown(_mapping(image).get(key)) for key in IMAGE_FIELDS}
            if image is not None
            else None
        )
        section["links"] = [
            {key: _shown(_mapping(link).get(key)) for key in LINK_FIELDS}
            for link in _items(node.get("links"))
        ]
        section["sessions"] = [
            {key: _shown(_mapping(s).get(key)) for key in SESSION_FIELDS}
            for s in _items(node.get("sessions"))
        ]
        sections.append(section)
    out["sections"] = sections
    return out


# -- what the form changes -----------------------------------------------------------------


def _value(kind: str, text: str, old: Any) -> Any:
    """The YAML value of ``text`` typed in a field of ``kind``, styled like ``old``."""
    if kind == "date":
        if _DATE.match(text):
            try:
                return dt.date.fromisoformat(text)
            except ValueError:
                pass
        return text
    if kind == "time":
        return DoubleQuotedScalarString(text)
    if kind == "number":
        return int(text) if text.isdigit() else text
    if kind == "flag":
        return text in ("true", "on", "yes", "1")
    if kind == "markdown" and ("\n" in text or isinstance(old, LiteralScalarString)):
        return LiteralScalarString(text.rstrip("\n") + "\n")
    # A value written in quotes stays in quotes; an empty one (a new field) was quoted only
    # because it was empty.
    if isinstance(old, DoubleQuotedScalarString) and old:
        return DoubleQuotedScalarString(text)
    if isinstance(old, SingleQuotedScalarString) and old:
        return SingleQuotedScalarString(text)
    # Plain, quoted only where YAML needs it (a CommentedMap would otherwise keep the
    # style of the value it replaces).
    return PlainScalarString(text)


def _typed(kind: str, raw: str) -> str:
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    return text.strip("\n") if kind == "markdown" else text.strip()


def _set_fields(
    node: CommentedMap,
    fields: Mapping[str, str],
    form: Mapping[str, str],
    prefix: str,
    required: set[str],
) -> None:
    """Set ``node``'s keys from the form values named ``prefix`` + key. A field the form
    does not carry is left alone; an emptied optional field removes its key."""
    for key, kind in fields.items():
        name = f"{prefix}{key}"
        if kind == "flag":
            # An unticked box is not sent at all: its hidden partner says it was shown.
            if f"{name}:shown" not in form:
                continue
            ticked = name in form
            if (ticked or key in node) and node.get(key) is not ticked:
                node[key] = ticked
            continue
        if name not in form:
            continue
        text = _typed(kind, form[name])
        old = node.get(key)
        if text == "" and key not in required:
            if key in node:
                del node[key]
            continue
        if key in node and _typed(kind, _shown(old)) == text:
            continue  # unchanged: the value is kept exactly as written
        if key in node:
            node[key] = _value(kind, text, old)
            continue
        # A new key goes after the one the form shows before it: end: after start:.
        names = list(fields)
        at = len(node)
        for before in reversed(names[: names.index(key)]):
            if before in node:
                at = list(node).index(before) + 1
                break
        node.insert(at, key, _value(kind, text, old))


def apply(doc: CommentedMap, form: Mapping[str, str]) -> None:
    """Put the values of a posted form into ``doc``, in place."""
    _set_fields(doc, ISSUE_FIELDS, form, "", _REQUIRED["issue"])
    for i, raw in enumerate(_items(doc.get("sections"))):
        if not isinstance(raw, CommentedMap):
            continue
        base = f"sections[{i}]."
        kind = _shown(raw.get("type"))
        fields = {**SECTION_FIELDS, **TYPE_FIELDS.get(kind, {})}
        _set_fields(raw, fields, form, base, _REQUIRED["section"])
        if f"{base}image.src" in form:
            image = raw.get("image")
            src = form.get(f"{base}image.src", "").strip()
            alt = form.get(f"{base}image.alt", "").strip()
            if not src and not alt:
                raw.pop("image", None)
            else:
                if not isinstance(image, CommentedMap):
                    image = CommentedMap()
                    raw["image"] = image
                _set_fields(image, IMAGE_FIELDS, form, f"{base}image.", _REQUIRED["image"])
        for j, link in enumerate(_items(raw.get("links"))):
            if isinstance(link, CommentedMap):
                _set_fields(link, LINK_FIELDS, form, f"{base}links[{j}].", _REQUIRED["link"])
        for j, session in enumerate(_items(raw.get("sessions"))):
            if isinstance(session, CommentedMap):
                where = f"{base}sessions[{j}]."
                _set_fields(session, SESSION_FIELDS, form, where, _REQUIRED["session"])


def _sections(doc: CommentedMap) -> CommentedSeq:
    found = doc.get("sections")
    if not isinstance(found, CommentedSeq):
        found = CommentedSeq()
        doc["sections"] = found
    return found


def add_section(doc: CommentedMap, kind: str, occurrence: Occurrence | None = None) -> int:
    """Append a new section of ``kind`` (an awareness day from the calendar when
    ``occurrence`` is given); its index."""
    if kind not in SECTION_TYPES:
        raise InvalidInput(f"unknown section type {kind!r}")
    section = CommentedMap()
    section["type"] = kind
    section["title"] = occurrence.day.name if occurrence else ""
    if occurrence is not None:
        if occurrence.single:
            section["date"] = occurrence.start
        else:
            section["start"] = occurrence.start
            section["end"] = occurrence.end
    elif kind == "awareness":
        section["date"] = ""
    section["body"] = LiteralScalarString("\n")
    if kind == "training":
        section["sessions"] = CommentedSeq()
    sections = _sections(doc)
    sections.append(section)
    return len(sections) - 1


def add_session(doc: CommentedMap, index: int) -> int:
    section = _section(doc, index)
    sessions = section.get("sessions")
    if not isinstance(sessions, CommentedSeq):
        sessions = CommentedSeq()
        section["sessions"] = sessions
    session = CommentedMap()
    session["date"] = ""
    session["start"] = DoubleQuotedScalarString("")
    session["venue"] = ""
    sessions.append(session)
    return len(sessions) - 1


def add_link(doc: CommentedMap, index: int) -> int:
    section = _section(doc, index)
    links = section.get("links")
    if not isinstance(links, CommentedSeq):
        links = CommentedSeq()
        section["links"] = links
    link = CommentedMap()
    link["text"] = ""
    link["url"] = ""
    links.append(link)
    return len(links) - 1


def _section(doc: CommentedMap, index: int) -> CommentedMap:
    sections = _items(doc.get("sections"))
    if not 0 <= index < len(sections) or not isinstance(sections[index], CommentedMap):
        raise InvalidInput(f"there is no section {index + 1}")
    found: CommentedMap = sections[index]
    return found


def _swap_comments(seq: CommentedSeq, a: int, b: int) -> None:
    items = seq.ca.items
    first, second = items.pop(a, None), items.pop(b, None)
    if first is not None:
        items[b] = first
    if second is not None:
        items[a] = second


def move_section(doc: CommentedMap, index: int, step: int) -> int:
    """Move a section up (``step`` -1) or down (+1); its new index."""
    sections = _sections(doc)
    to = index + step
    if not 0 <= index < len(sections) or not 0 <= to < len(sections):
        return index
    sections[index], sections[to] = sections[to], sections[index]
    _swap_comments(sections, index, to)
    return to


def remove(doc: CommentedMap, path: str) -> None:
    """Remove the section, session or link at ``path`` (``sections[1].sessions[0]``)."""
    parts = re.fullmatch(r"sections\[(\d+)\](?:\.(sessions|links)\[(\d+)\])?", path)
    if parts is None:
        raise InvalidInput(f"nothing to remove at {path!r}")
    index = int(parts[1])
    if parts[2] is None:
        sections = _sections(doc)
        if 0 <= index < len(sections):
            del sections[index]
        return
    items = _section(doc, index).get(parts[2])
    position = int(parts[3])
    if isinstance(items, list) and 0 <= position < len(items):
        del items[position]


# -- where each field is ---------------------------------------------------------------------


def field_lines(doc: CommentedMap) -> list[tuple[int, str]]:
    """Every key and list item of ``doc`` with its line (1-based), as (line, field path),
    in file order: a finding on a line belongs to the deepest field that starts on or
    before it (a line inside a ``|`` block belongs to that block's field)."""
    found: list[tuple[int, str]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, CommentedMap):
            for key in node:
                where = f"{path}.{key}" if path else str(key)
                found.append((int(node.lc.key(key)[0]) + 1, where))
                walk(node[key], where)
        elif isinstance(node, CommentedSeq):
            for i, item in enumerate(node):
                where = f"{path}[{i}]"
                found.append((int(node.lc.item(i)[0]) + 1, where))
                walk(item, where)

    walk(doc, "")
    return sorted(found, key=lambda pair: (pair[0], pair[1].count(".") + pair[1].count("[")))


def field_at(lines: list[tuple[int, str]], line: int | None) -> str:
    """The field a finding at ``line`` concerns ("" for the issue as a whole)."""
    if line is None:
        return ""
    best = ""
    for at, path in lines:
        if at > line:
            break
        best = path
    return best


# -- saving ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Saved:
    path: Path
    text: str


def changes(before: str, after: str, before_name: str, after_name: str) -> list[str]:
    """The lines of a unified diff from ``before`` to ``after``."""
    return [
        line.rstrip("\n")
        for line in difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            before_name,
            after_name,
            n=2,
        )
    ]


def save(folder: Path, base: str, text: str) -> Saved:
    """Write ``text`` as ``folder``'s issue.yaml, unless the file no longer holds ``base``
    (the text the editor started from): then EditConflict, with what changed on disk.

    The file is replaced in one step, so a reader never sees half of it.
    """
    path = folder / ISSUE_FILE
    try:
        now = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        now = ""
    except UnicodeDecodeError:
        now = path.read_bytes().decode("utf-8", "replace")
    if now != base:
        raise EditConflict(
            f"{ISSUE_FILE} changed on disk since you opened it: nothing was saved",
            changes(base, now, "as you opened it", "as it is on disk now"),
        )
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    handle, temporary = tempfile.mkstemp(prefix=".issue-", suffix=".yaml", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return Saved(path, text)


# -- pictures ---------------------------------------------------------------------------------


def picture_name(folder: Path, filename: str) -> str:
    """Where an uploaded picture goes: ``images/NAME`` in the issue folder, its name made
    safe, and made unique if a different picture has it already."""
    stem, _, suffix = Path(filename).name.lower().rpartition(".")
    stem = _UNSAFE.sub("-", stem or "picture").strip("-.") or "picture"
    suffix = f".{suffix}" if f".{suffix}" in IMAGE_SUFFIXES else ""
    name = f"images/{stem[:60]}{suffix}"
    while (folder / name).exists():
        name = f"images/{stem[:60]}-{secrets.token_hex(2)}{suffix}"
    return name


def add_picture(folder: Path, filename: str, data: bytes, limits: Limits) -> str:
    """Store an uploaded picture in the issue folder; its ``src``. InvalidInput, and nothing
    kept, if ``mailer build`` would refuse it."""
    if not data:
        raise InvalidInput("choose a picture to upload first")
    src = picture_name(folder, filename)
    target = folder / src
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    _, wrong = check_image_file(folder, src, limits)
    if wrong is not None:
        target.unlink(missing_ok=True)
        raise InvalidInput(wrong)
    return src


def pictures(folder: Path) -> Iterator[str]:
    """The pictures already in the issue folder, as ``src`` values."""
    images = folder / "images"
    if images.is_dir():
        for path in sorted(images.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                yield f"images/{path.name}"
