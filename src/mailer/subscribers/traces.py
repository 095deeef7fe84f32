"""An erased person's address in the files mailer writes beside the database.

Erasure (:func:`mailer.subscribers.roster.erase`) calls :func:`scrub_files` once the
database has forgotten the person:

- the web side's emails in ``outbox/_web/`` (a confirmation or a "manage" link) that were
  sent to them are deleted: they were only ever copies;
- returned messages kept for a person to read (``.mailer/bounces/``: unrecognised,
  quarantined) that name them are deleted: nothing can be learned from them any more;
- mailer's log (``.mailer/mailer.log``, where an older version wrote addresses) and reports
  that name people (``.mailer/reports/``, ``mailer report --people``) keep their lines and
  figures, with the address replaced by ``[erased]``.

The address is looked for as it is written (any case), in the raw bytes of each file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from mailer import files
from mailer.config import Settings
from mailer.subscribers.notices import OUTBOX_FOLDER

ERASED = "[erased]"


def _files(folder: Path, pattern: str) -> Iterator[Path]:
    if folder.is_dir():
        yield from (p for p in folder.rglob(pattern) if p.is_file())


def _names(path: Path, needle: bytes) -> bool:
    if not path.is_file():
        return False
    try:
        return needle in path.read_bytes().lower()
    except OSError:
        return False


def scrub_files(settings: Settings, email: str) -> list[Path]:
    """Delete or redact every file that names ``email``; the paths changed."""
    needle = email.lower().encode("utf-8")
    changed: list[Path] = []
    deleted = [
        *_files(settings.outbox_dir / OUTBOX_FOLDER, "*.eml"),
        *_files(files.kept_bounces(settings.state_dir), "*.eml"),
    ]
    for path in deleted:
        if _names(path, needle):
            path.unlink(missing_ok=True)
            changed.append(path)
    redacted = [
        files.log_file(settings.state_dir),
        *_files(files.people_reports(settings.state_dir), "report.*"),
    ]
    for path in redacted:
        if _names(path, needle):
            text = path.read_text(encoding="utf-8", errors="replace")
            files.write_private(path, re.sub(re.escape(email), ERASED, text, flags=re.I))
            changed.append(path)
    return changed
