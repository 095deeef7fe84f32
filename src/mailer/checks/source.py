"""Where things are in issue.yaml: the line of every field and of text inside a field.

The validated :class:`~mailer.content.Issue` carries no line numbers, so the checks read
the file again, as YAML with positions, and look their findings up here. A finding inside
a block of text (``body: |``) points at the very line; elsewhere at the field's key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

from mailer.content import ISSUE_FILE, Issue

# The text fields a person writes, by key, and what to call them in a message.
_SECTION_TEXT = {"title": "title", "body": "body", "booking_text": "booking text"}
_SESSION_TEXT = {"venue": "venue", "note": "note"}


@dataclass(frozen=True)
class Field:
    """One piece of text written in issue.yaml."""

    path: tuple[str | int, ...]
    kind: str
    text: str
    # The section it belongs to (index into issue.sections), or None for the issue itself.
    section: int | None
    key_line: int | None
    # For a literal block (``|``), the line its first line of text is on.
    block_line: int | None = None

    def line_at(self, offset: int) -> int | None:
        """The file line of the character at ``offset`` in this field's text."""
        if self.block_line is None:
            return self.key_line
        return self.block_line + self.text.count("\n", 0, offset)

    @property
    def name(self) -> str:
        """The field as docs/content.md names it: ``sections[3].sessions[0].venue``."""
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out


class Source:
    """issue.yaml read with positions."""

    def __init__(self, issue: Issue, root: Path, text: str | None = None) -> None:
        """``text``: the issue.yaml the issue was read from, when it is not the file on disk
        (a draft in ``mailer edit``)."""
        self.issue = issue
        path = issue.folder / ISSUE_FILE
        try:
            self.file = str(path.relative_to(root))
        except ValueError:
            self.file = str(path)
        if text is None:
            text = path.read_text(encoding="utf-8")
        self.text = text
        self.data: Any = YAML(typ="rt").load(text)

    def _node(self, path: tuple[str | int, ...]) -> Any:
        node = self.data
        for part in path:
            node = node[part]
        return node

    def line(self, *path: str | int) -> int | None:
        """The line of the key (or list item) at ``path``; its nearest parent's if absent."""
        for depth in range(len(path), 0, -1):
            parent_path, last = path[: depth - 1], path[depth - 1]
            try:
                parent = self._node(parent_path)
                if isinstance(parent, CommentedMap) and last in parent:
                    return int(parent.lc.key(last)[0]) + 1
                if isinstance(parent, CommentedSeq) and isinstance(last, int):
                    return int(parent.lc.item(last)[0]) + 1
            except (KeyError, IndexError, TypeError):
                continue
        return 1

    def _field(
        self, node: Any, key: str, path: tuple[str | int, ...], kind: str, section: int | None
    ) -> Field | None:
        if not isinstance(node, CommentedMap) or key not in node:
            return None
        value = node[key]
        if not isinstance(value, str):
            return None
        key_line = int(node.lc.key(key)[0]) + 1
        block = None
        if isinstance(value, LiteralScalarString):
            block = int(node.lc.value(key)[0]) + 2
        elif isinstance(value, FoldedScalarString):
            # Folded text loses its line breaks: point at the block's first line.
            key_line += 1
        return Field((*path, key), kind, str(value), section, key_line, block)

    def fields(self) -> Iterator[Field]:
        """Every text field a person wrote, in file order."""
        data = self.data
        for key in ("subject", "preheader", "intro"):
            if f := self._field(data, key, (), key, None):
                yield f
        for i, section in enumerate(data.get("sections") or []):
            base: tuple[str | int, ...] = ("sections", i)
            for key, kind in _SECTION_TEXT.items():
                if f := self._field(section, key, base, kind, i):
                    yield f
            image = section.get("image") if isinstance(section, CommentedMap) else None
            if f := self._field(image, "alt", (*base, "image"), "alt text", i):
                yield f
            links = section.get("links") if isinstance(section, CommentedMap) else None
            for j, link in enumerate(links or []):
                if f := self._field(link, "text", (*base, "links", j), "link text", i):
                    yield f
            sessions = section.get("sessions") if isinstance(section, CommentedMap) else None
            for j, session in enumerate(sessions or []):
                for key, kind in _SESSION_TEXT.items():
                    if f := self._field(session, key, (*base, "sessions", j), kind, i):
                        yield f
