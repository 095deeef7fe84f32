"""The embedded default: every message becomes an ``.eml`` file under ``outbox/SLUG/``.

It lets the whole pipeline run on a machine with no mail server, and the files open in any
mail program for a look at exactly what would have been sent.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mailer.errors import TransportUnavailable
from mailer.sending.transports.base import TransportBase

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class OutboxTransport(TransportBase):
    name = "outbox"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportUnavailable(
                f"cannot create the outbox {folder}: {exc.strerror}"
            ) from exc

    def send(self, mail_from: str, to: str, data: bytes) -> str:
        # The Message-ID makes the file name unique; write then rename so a crash never
        # leaves half a message behind.
        start = data.find(b"Message-ID: <") + len(b"Message-ID: <")
        message_id = data[start : data.find(b">", start)].decode("ascii", "replace")
        name = _UNSAFE.sub("_", f"{to}--{message_id}")[:200] + ".eml"
        path = self.folder / name
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            raise TransportUnavailable(
                f"cannot write to the outbox {self.folder}: {exc.strerror}"
            ) from exc
        return f"written to {path.name}"
