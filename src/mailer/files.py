"""Files that may name a person: created 0600 in 0700 folders, whatever the umask.

Everything mailer writes that can hold an address goes through these helpers: the SQLite
database (and its ``-wal`` and ``-shm`` files, which SQLite creates with the database's
mode), ``.mailer/mailer.log``, the outbox, kept bounces, reports that name people, and
``mailer subscribers export -o FILE``.
``mkdir(mode=...)`` and ``open(..., mode)`` are both cut down by the umask, so each helper
sets the mode itself afterwards.

The folders themselves are named here too, so that erasure (which must find every such
file) and the code that writes them agree on where they are.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TextIO

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def private_folder(path: Path, *, within: Path | None = None) -> Path:
    """Make ``path`` a folder only its owner may open, creating it and its parents.

    Every folder created is 0700, and so is ``path``; with ``within``, so is every folder
    from ``within`` down to ``path`` (``.mailer/`` and ``.mailer/bounces/``, say).
    """
    chain = [path]
    for parent in path.parents:
        inside = within is not None and (parent == within or within in parent.parents)
        if inside or not parent.is_dir():
            chain.append(parent)
        else:
            break
    for each in reversed(chain):
        with contextlib.suppress(FileExistsError):
            each.mkdir(mode=FOLDER_MODE)
        os.chmod(each, FOLDER_MODE)
    return path


def create_private(path: Path) -> bool:
    """Create ``path`` as an empty 0600 file if it does not exist; True if it was created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True


def open_private(path: Path, *, encoding: str = "utf-8") -> TextIO:
    """``path`` opened for writing text (newlines as given), created or emptied as 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "w", encoding=encoding, newline="")


def write_private(path: Path, data: bytes | str) -> Path:
    """Write ``path`` whole (a reader never sees half of it), 0600 in a 0700 folder."""
    private_folder(path.parent)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode("utf-8") if isinstance(data, str) else data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


# -- where such files live --------------------------------------------------------------------


# Each takes the newsletter's state folder (``Settings.state_dir``, ``.mailer/``).


def log_file(state_dir: Path) -> Path:
    """``.mailer/mailer.log``: one line per event of the worker and the bounce reader."""
    return state_dir / "mailer.log"


def kept_bounces(state_dir: Path) -> Path:
    """``.mailer/bounces/``: returned messages kept for a person to read (quarantined,
    unrecognised), one folder per kind."""
    return state_dir / "bounces"


def people_reports(state_dir: Path) -> Path:
    """``.mailer/reports/``: ``mailer report --people``, which names people, per issue."""
    return state_dir / "reports"
