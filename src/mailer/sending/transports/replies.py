"""Reading an SMTP server's replies in order, from a connection whose commands were
written ahead of them (PIPELINING, RFC 2920).

:class:`Replies` takes a connection over from aiosmtplib once it is open, secured and
authenticated (``transport.set_protocol``). Replies are parsed as they arrive, however
the server splits or joins them, and handed out one per command in the order the commands
were written. A wait for a reply fails after a timeout, watched by one timer per
connection rather than one per reply.

Each write says how many replies its commands call for. A reply that arrives when none is
awaited (a server that adds a line before or after its replies, or an unasked-for 421) puts
every later reply out of step with its command, so the connection is given up at once:
whatever was waiting for a reply learns that the line is lost, never a neighbour's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from mailer.sending.transports.outcomes import LineLost, OutOfStep, Reply

# A server that sends this much without finishing a reply is not an SMTP server.
MAX_REPLY = 64 * 1024
# How often a connection waiting for a reply looks at the clock: one timer per connection
# and second is cheaper than one per reply, at thousands of replies a second.
WATCH_EVERY = 1.0
_DASH = ord("-")
# How long a closing connection may take to say goodbye (TLS close_notify).
CLOSE_WITHIN = 2.0


class Replies(asyncio.Protocol):
    """Takes over a connection and hands out the server's replies in the order they came."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._replies: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._since = 0.0
        self._timeout = 0.0
        self.lost: BaseException | None = None
        self.unsent = 0
        # Replies the commands written so far still call for.
        self.awaited = 0
        # Set once the socket is closed: a TLS connection's closing takes a few turns of
        # the loop (close_notify), and must finish before the loop does.
        self.closed = asyncio.Event()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = line = 0
        while True:
            end = buffer.find(b"\n", line)
            if end < 0:
                break
            # A reply ends with a line whose fourth character is not "-" (RFC 5321 4.2.1).
            if end - line > 3 and buffer[line + 3] == _DASH:
                line = end + 1
                continue
            reply = _parse(bytes(buffer[start : end + 1]))
            start = line = end + 1
            if not self.awaited:
                self._stray(reply)
                return
            self.awaited -= 1
            self._replies.append(reply)
        if start:
            del buffer[:start]
        if len(buffer) > MAX_REPLY:
            self._lose(LineLost("the server sent a reply too long to be SMTP"))
            self.transport.abort()
            return
        self._wake()

    def _stray(self, reply: Reply) -> None:
        text = str(reply)[:200]
        self._lose(OutOfStep(f"the server sent a line no command asked for ({text!r})"))
        self.transport.abort()

    def eof_received(self) -> bool:
        self._lose(LineLost("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(LineLost(f"the connection was lost: {exc}" if exc else "disconnected"))
        self.closed.set()

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- what the connection uses -----------------------------------------------------------

    def write(self, data: bytes, replies: int) -> None:
        """Write ``data``, whose commands call for ``replies`` replies."""
        if self.lost is not None or self.transport.is_closing():
            raise LineLost("the connection was closed")
        self.awaited += replies
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the socket's buffer is full, so no connection hoards unsent bytes."""
        while self._drained is not None and self.lost is None:
            await asyncio.shield(self._drained)

    async def reply(self, timeout: float) -> Reply:
        if not self._replies:
            if self.lost is not None:
                raise self.lost
            waiter = self._waiter = self._loop.create_future()
            self._since, self._timeout = self._loop.time(), timeout
            if self._watch is None:
                self._watch = self._loop.call_later(min(WATCH_EVERY, timeout), self._check)
            try:
                await waiter
            finally:
                self._waiter = None
            if not self._replies:
                raise self.lost or LineLost("disconnected")
        return self._replies.popleft()

    def _check(self) -> None:
        """Fail the wait for a reply that is later than the timeout; look again later."""
        self._watch = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # not waiting: the next wait starts the watch again
        left = self._since + self._timeout - self._loop.time()
        if left <= 0:
            waiter.set_exception(TimeoutError(f"no reply within {self._timeout:g} s"))
            return
        self._watch = self._loop.call_later(min(WATCH_EVERY, left), self._check)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _lose(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
            # Bytes still in this process's buffer never reached the server.
            with contextlib.suppress(Exception):
                self.unsent = self.transport.get_write_buffer_size()
        self._wake()
        self.resume_writing()


def _parse(raw: bytes) -> Reply:
    if raw.count(b"\n") == 1:  # one line, as nearly every reply is
        try:
            return Reply(int(raw[:3]), raw[4:].strip().decode("utf-8", "replace"))
        except ValueError:
            return Reply(0, raw.strip().decode("utf-8", "replace"))
    lines = raw.split(b"\n")
    try:
        code = int(lines[0][:3])
    except ValueError:
        code = 0  # not a reply: treated as a refusal the connection cannot survive
    text = " ".join(line[4:].strip().decode("utf-8", "replace") for line in lines if line)
    return Reply(code, text)
