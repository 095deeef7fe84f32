"""Limits on what one request, and the log, may cost ``mailer serve``.

:class:`BodyLimit` counts the bytes of a request body as the app reads them, whatever the
request says about its length (``Content-Length``, or none with chunked transfer
encoding), and answers 413 as soon as there are more than the limit: nothing past it is
read, parsed or spooled to a temporary file. A body that declares a length over the limit
is refused before any of it is read.

:class:`LogThrottle` keeps a flood from filling the disk with log lines: the same line
(the same logger, message and arguments, timings aside) is written at most ``burst`` times
per ``window`` seconds; the next one written says how many like it were left out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from mailer.web.asgi import ASGIApp, Message, Receive, Scope, Send

# No form of this site comes near this size.
MAX_BODY = 64 * 1024


class _TooLarge(Exception):
    """Raised inside the app's receive() once the body passes the limit."""


async def _refuse(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": b"Request too large.\n"})


class BodyLimit:
    """ASGI middleware: at most ``max_body`` bytes of request body reach the app, or the
    limit of the first of ``larger`` (path prefix, limit) whose prefix the path (after the
    site's ``prefix``) starts with: a relay's webhook batches events."""

    def __init__(
        self,
        app: ASGIApp,
        max_body: int = MAX_BODY,
        *,
        prefix: str = "",
        larger: tuple[tuple[str, int], ...] = (),
    ) -> None:
        self.app, self.max_body, self.prefix, self.larger = app, max_body, prefix, larger

    def _limit(self, scope: Scope) -> int:
        path = str(scope.get("path", ""))
        if not path.startswith(self.prefix):
            return self.max_body
        path = path[len(self.prefix) :]
        return next((n for start, n in self.larger if path.startswith(start)), self.max_body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if started:
                raise
            await _refuse(send)


class LogThrottle(logging.Filter):
    """A filter for a log handler: ``burst`` lines alike per ``window`` seconds, then a count.

    Lines are alike when they come from the same logger with the same message and the same
    arguments, floats (timings) aside: the access log's ``POST /unsubscribe/{token} 200``,
    or asyncio's "socket.accept() out of system resource" when file descriptors run out.
    """

    def __init__(
        self, burst: int = 20, window: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst, self.window, self.clock = burst, window, clock
        self._lock = threading.Lock()
        # key -> [window start, lines written in it, lines left out]
        self._seen: dict[tuple[Any, ...], list[float]] = {}

    def _key(self, record: logging.LogRecord) -> tuple[Any, ...]:
        args = record.args if isinstance(record.args, tuple) else ()
        kept = tuple(a for a in args if not isinstance(a, float))
        return (record.name, str(record.msg), *(str(a) for a in kept))

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        key = self._key(record)
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or now - seen[0] >= self.window:
                left_out = int(seen[2]) if seen is not None else 0
                self._seen[key] = [now, 1, 0]
                if len(self._seen) > 10_000:
                    self._forget(now)
                if left_out:
                    record.msg = f"{record.msg} (and {left_out} more like it, left out)"
                return True
            if seen[1] < self.burst:
                seen[1] += 1
                return True
            seen[2] += 1
            return False

    def _forget(self, now: float) -> None:
        for key in [k for k, v in self._seen.items() if now - v[0] >= self.window]:
            del self._seen[key]


# The loggers whose handlers write what `mailer serve` logs: the root (mailer's own lines,
# asyncio's) and uvicorn's, which do not pass their lines up to the root.
SERVE_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


def throttle_logging(burst: int = 20, window: float = 10.0) -> LogThrottle:
    """Put one :class:`LogThrottle` on every handler of SERVE_LOGGERS; it is returned."""
    throttle = LogThrottle(burst, window)
    for name in SERVE_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(throttle)
    return throttle
