"""The embedded default: every message becomes an ``.eml`` file under ``outbox/SLUG/``.

It lets the whole pipeline run on a machine with no mail server, and the files open in any
mail program for a look at exactly what would have been sent.

A file is named after the message's Message-ID (which holds a send id, a ledger row id and
a signed nonce, never an address), so names cannot collide and hold no personal data. It is
written under a temporary name, flushed to disk and renamed, so the ledger never calls a
message sent that is not whole on disk, and no temporary file is left on any error.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from mailer.errors import TransportUnavailable
from mailer.files import private_folder
from mailer.sending.transports.base import TransportBase

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def outbox_name(message_id: str) -> str:
    """The file name of the message with this Message-ID (``<5.17.x3k@example.org>``)."""
    local = message_id.strip().strip("<>").partition("@")[0]
    return _UNSAFE.sub("_", local)[:120] + ".eml"


def outbox_name_prefix(email: str) -> str:
    """How files written by older versions, named after the address, began."""
    return _UNSAFE.sub("_", f"{email}--")


class OutboxTransport(TransportBase):
    name = "outbox"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            private_folder(folder)
        except OSError as exc:
            raise TransportUnavailable(
                f"cannot create the outbox {folder}: {exc.strerror}"
            ) from exc

    def send(self, mail_from: str, to: str, data: bytes) -> str:
        start = data.find(b"Message-ID: <")
        if start < 0:
            raise TransportUnavailable("the message has no Message-ID to name its file after")
        start += len(b"Message-ID: ")
        message_id = data[start : data.find(b">", start) + 1].decode("ascii", "replace")
        path = self.folder / outbox_name(message_id)
        tmp = self.folder / f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            _sync_folder(self.folder)
        except OSError as exc:
            raise TransportUnavailable(
                f"cannot write to the outbox {self.folder}: {exc.strerror}"
            ) from exc
        return f"written to {path.name}"


def _sync_folder(folder: Path) -> None:
    """Make the rename durable: fsync the folder that holds the file."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
