"""The one clock mailer reads, so tests can replace it.

Code that waits (rate limits, retry backoff) or compares times (schedules, heartbeats)
takes a :class:`Clock`. :class:`SystemClock` is the real one; tests pass a fake whose
``sleep`` moves time on at once, so nothing in a test waits on the wall clock.

``MAILER_CLOCK_OFFSET`` (seconds, may be negative) shifts the wall clock of a whole
process. It exists for end-to-end tests that start a real ``mailer worker`` "later" than
the process that scheduled a send; never set it in production.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio


def _offset() -> float:
    raw = os.environ.get("MAILER_CLOCK_OFFSET", "")
    try:
        return float(raw) if raw else 0.0
    except ValueError:
        return 0.0


_OFFSET = _offset()


def utcnow() -> dt.datetime:
    """The current time, timezone-aware in UTC."""
    return (
        dt.datetime.now(dt.UTC) + dt.timedelta(seconds=_OFFSET)
        if _OFFSET
        else dt.datetime.now(dt.UTC)
    )


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for measuring intervals."""
        ...

    def time(self) -> float:
        """Seconds since the epoch, for windows that must survive a restart."""
        ...

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Wait; False if ``stop`` was set before the time was up."""
        ...

    async def sleep_async(self, seconds: float, stop: asyncio.Event | None = None) -> bool:
        """Wait on the running event loop; False if ``stop`` was set before the time was up."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time() + _OFFSET

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        if stop is not None:
            return not stop.wait(max(seconds, 0.0))
        if seconds > 0:
            time.sleep(seconds)
        return True

    async def sleep_async(self, seconds: float, stop: asyncio.Event | None = None) -> bool:
        # Imported here: asyncio is needed only while sending, and `mailer --help` starts
        # faster without it.
        import asyncio

        if stop is None:
            await asyncio.sleep(max(seconds, 0.0))
            return True
        if stop.is_set():
            return False
        try:
            await asyncio.wait_for(stop.wait(), max(seconds, 0.0))
        except TimeoutError:
            return True
        return False
