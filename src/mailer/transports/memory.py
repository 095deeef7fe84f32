"""An in-memory transport for tests and dry runs: keeps every accepted message in a list."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from mailer.transports.base import TransportBase


@dataclass
class Mailbag:
    """Shared by every connection of one send, so tests can see all that was delivered."""

    messages: list[tuple[str, str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def recipients(self) -> list[str]:
        with self.lock:
            return [to for _, to, _ in self.messages]


class MemoryTransport(TransportBase):
    name = "memory"

    def __init__(self, bag: Mailbag | None = None) -> None:
        self.bag = bag or Mailbag()

    def send(self, mail_from: str, to: str, data: bytes) -> str:
        with self.bag.lock:
            self.bag.messages.append((mail_from, to, data))
            return f"250 queued as {len(self.bag.messages)}"
