"""Issue content: ``issues/<slug>/issue.yaml`` read and validated into an :class:`Issue`.

:mod:`.model` holds the typed objects, :mod:`.load` reads and validates the files (every
problem located by file, line and field), :mod:`.scaffold` writes a new issue.
"""

from __future__ import annotations

from mailer.content.load import (
    ISSUE_FILE,
    SECTION_TYPES,
    SLUG,
    all_slugs,
    issue_dirs,
    load_issue,
    load_issues,
)
from mailer.content.model import KICKERS, SECTION_NAMES, Image, Issue, Link, Section, Session

__all__ = [
    "ISSUE_FILE",
    "KICKERS",
    "SECTION_NAMES",
    "SECTION_TYPES",
    "SLUG",
    "Image",
    "Issue",
    "Link",
    "Section",
    "Session",
    "all_slugs",
    "issue_dirs",
    "load_issue",
    "load_issues",
]
