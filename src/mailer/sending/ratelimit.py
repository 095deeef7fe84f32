"""Rate limits that hold exactly, shared by every connection of a send.

Relays such as Microsoft 365 or Amazon SES reject mail beyond a rate. Per second, messages
are spaced at least ``1 / rate`` seconds apart, so no one-second window ever holds more
than the limit. Per hour, a sliding window of send times (seeded with the send times
already in the ledger for the past hour, so a resume counts them) admits a message only
when fewer than the limit were sent in the hour before it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

from mailer.clock import Clock

HOUR = 3600.0


class RateLimiter:
    def __init__(
        self,
        per_second: float | None,
        per_hour: int | None,
        clock: Clock,
        recent: Iterable[float] = (),
    ) -> None:
        # One microsecond more than 1/rate: float rounding must never let rate + 1 messages
        # fit in one second.
        self.interval = 1.0 / per_second + 1e-6 if per_second else 0.0
        self.per_hour = per_hour
        self.clock = clock
        self._lock = threading.Lock()
        self._next = 0.0
        # Wall-clock times, because the hour window must survive a restart.
        self._window: deque[float] = deque(sorted(recent)[-per_hour:] if per_hour else ())

    @property
    def active(self) -> bool:
        return bool(self.interval or self.per_hour)

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Block until one more message may go and reserve its slot; False if ``stop`` is set
        while waiting (the slot is then given back)."""
        if not self.active:
            return True
        with self._lock:
            delay = 0.0
            if self.interval:
                now = self.clock.monotonic()
                slot = max(now, self._next)
                self._next = slot + self.interval
                delay = slot - now
            if self.per_hour:
                wall = self.clock.time() + delay
                while self._window and self._window[0] <= wall - HOUR:
                    self._window.popleft()
                if len(self._window) >= self.per_hour:
                    opens = self._window.popleft() + HOUR
                    delay += opens - wall
                    wall = opens
                    if self.interval:
                        self._next = max(self._next, self.clock.monotonic() + delay + self.interval)
                self._window.append(wall)
            # Sleeping inside the lock keeps the connections in order behind the limit; the
            # sleep is cut into short steps so a pause or Ctrl-C is never kept waiting.
            while delay > 0:
                if stop is not None and stop.is_set():
                    if self.per_hour and self._window:
                        self._window.pop()
                    if self.interval:
                        self._next -= self.interval
                    return False
                step = min(delay, 0.25)
                self.clock.sleep(step)
                delay -= step
            return True
