"""The sending journal: which ledger rows a sending process has begun to write to the
server, so that after a crash only those are unknown.

A row is claimed (``in-flight`` in the database) a little before it is sent: each
connection keeps a batch claimed ahead. Without more to go on, every row a dead worker
held in flight would have to be reported unknown. So each run of a send appends to a file
of its own, before the first byte of a copy's envelope (MAIL FROM) is written to a
socket, the row's id; when the copy's outcome is known, the outcome; when a copy that was
begun goes back to be tried again (the server refused it for now, the send is stopping),
that it is back. Whoever reaps the dead worker (:func:`mailer.store.send_workers.reap`)
reads its journal: a row the journal never saw begun goes back to ``pending`` and is sent
like any other, a row with an outcome gets it, and only a row begun without an outcome is
``unknown``.

**Why it holds without an fsync.** Each record is one ``os.write`` on a file opened with
``O_APPEND``, made before the bytes it vouches for leave the process. Once ``write``
returns, the kernel holds the record in its page cache, which every process of the
machine reads: a process that is killed (``kill -9``, the OOM killer, a crash of Python)
loses nothing it wrote. A machine that dies (power loss, kernel panic) may lose the last
writes: the file may be shorter than what was sent, or missing. So a journal is trusted
only by the boot that wrote it: its first line names the machine's boot
(``/proc/sys/kernel/random/boot_id``), and a journal from another boot, or with no first
line, or no journal at all, vouches for nothing: every row the worker held in flight is
unknown, as without a journal. A journal can therefore only ever make fewer rows unknown
when it is whole, never send a copy again that may have gone out.

Records are row ids and outcomes, never addresses (nothing to erase). A journal is
deleted when its run ends, and when a reaper has consumed it. The journal is read only
on the machine that wrote it, from the same folder's state directory: a worker that
died on another machine has its rows in flight turned unknown as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from mailer.config import Settings
from mailer.store import for_sending as store
from mailer.store.for_sending import BEGUN, DeliveryStatus, JournalEntry

log = logging.getLogger("mailer.sender")
D = DeliveryStatus
# The most copies a connection has begun and not finished at any instant, so the most
# rows a killed worker leaves unknown per connection: the message whose data is written
# and whose reply is awaited, and, with PIPELINING, the next one, whose envelope goes out
# in the same write (mailer.sending.transports.pipeline). Without PIPELINING, or under a
# rate limit (no envelope goes ahead), one.
ON_THE_WIRE = 2
VERSION = b"mailer-journal 1"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
# Record kinds: begun (before its envelope goes out), back (to be tried again), ended.
_BEGUN, _BACK, _ENDED = b"S", b"P", b"O"
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")


def folder(settings: Settings) -> Path:
    """Where this folder's sending journals live (private: 0700)."""
    return settings.state_dir / "journals"


def boot_id() -> str | None:
    """This machine's boot, or None where it cannot be told (then no journal is trusted)."""
    try:
        found = BOOT_ID.read_text(encoding="ascii").strip()
    except OSError:
        return None
    return found or None


def path_of(settings: Settings, send_id: int, worker: str) -> Path:
    """The journal of ``worker``'s run of send ``send_id``."""
    return folder(settings) / f"{send_id}-{_UNSAFE.sub('_', worker)}.journal"


def _header(send_id: int, worker: str, boot: str) -> bytes:
    return b"%s %s %d %s\n" % (VERSION, boot.encode(), send_id, worker.encode())


class Journal:
    """The journal one run of a send appends to; it never reads it back."""

    def __init__(self, path: Path | None = None, fd: int = -1) -> None:
        self.path, self._fd = path, fd

    @classmethod
    def create(cls, settings: Settings, send_id: int, worker: str) -> Journal:
        """A new journal for ``worker``; one that records nothing if it cannot be written
        (the rows of a crash are then unknown, as without a journal)."""
        boot = boot_id()
        if boot is None:
            log.info("this machine's boot cannot be told: sending without a journal")
            return cls()
        path = path_of(settings, send_id, worker)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(path.parent, 0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            os.write(fd, _header(send_id, worker, boot))
        except OSError as exc:
            log.warning("sending without a journal (%s): a crash leaves more rows unknown", exc)
            return cls()
        return cls(path, fd)

    def begun(self, row_id: int) -> None:
        """Before the first byte of the row's envelope is written to the server."""
        if self._fd >= 0:
            os.write(self._fd, b"S%d\n" % row_id)

    def back(self, row_id: int) -> None:
        """A row begun that was not delivered and goes back to be tried again."""
        if self._fd >= 0:
            os.write(self._fd, b"P%d\n" % row_id)

    def ended(self, row_id: int, status: DeliveryStatus, message_id: str = "") -> None:
        """The row's outcome, as the ledger will commit it."""
        if self._fd >= 0:
            mid = message_id.encode("ascii", "replace").replace(b" ", b"")
            os.write(self._fd, b"O%d %s %s\n" % (row_id, status.value.encode(), mid))

    def close(self) -> None:
        """Close and delete the journal: the run has recorded everything it knows."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def parse(
    data: bytes, send_id: int, worker: str, boot: str | None
) -> dict[int, JournalEntry] | None:
    """What a journal vouches for, row by row (the last record of a row wins); None if it
    vouches for nothing: another boot wrote it, or its first line is missing or wrong."""
    header, newline, body = data.partition(b"\n")
    if boot is None or not newline or header + b"\n" != _header(send_id, worker, boot):
        return None
    entries: dict[int, JournalEntry] = {}
    lines = body.split(b"\n")
    # A last line without its newline was being written when the process died: the bytes
    # it stands for had not gone out yet.
    for line in lines[:-1]:
        kind, rest = line[:1], line[1:]
        row, _, tail = rest.partition(b" ")
        if not row.isdigit():
            return None  # not a journal this version wrote: trust none of it
        if kind == _BEGUN:
            entries[int(row)] = JournalEntry(BEGUN)
        elif kind == _BACK:
            entries[int(row)] = JournalEntry(D.PENDING.value)
        elif kind == _ENDED:
            status, _, mid = tail.partition(b" ")
            entries[int(row)] = JournalEntry(status.decode("ascii", "replace"), mid.decode("ascii"))
        else:
            return None
    return entries


class Journals:
    """The journals of dead workers of this machine, as a reaper reads them: pass it to
    :func:`mailer.store.send_workers.reap`, and :meth:`discard` once that has committed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumed: list[Path] = []

    def __call__(self, worker: str, send_id: int) -> Mapping[int, JournalEntry] | None:
        # Only a process known to be gone from this machine can no longer write.
        if store.process_gone(worker) is not True:
            return None
        path = path_of(self.settings, send_id, worker)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        self.consumed.append(path)
        found = parse(data, send_id, worker, boot_id())
        if found is None:
            log.warning("the journal of %s vouches for nothing (written before a restart)", worker)
        return found

    def discard(self) -> None:
        """Delete the journals read: their rows are settled in the database."""
        for path in self.consumed:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.consumed.clear()
