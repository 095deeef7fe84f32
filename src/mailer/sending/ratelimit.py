"""Rate limits that hold exactly at the server, shared by every connection of a send.

Relays such as Microsoft 365 or Amazon SES reject mail beyond a rate. What counts is when
the *server* sees each message, and that is some moment between the first byte mailer
writes for it and the reply mailer reads: network and server delays move it. Spacing the
starts ``1 / rate`` apart is therefore not enough (a message held up on its way and the
next one sent on time arrive closer together than that), so the limiter keeps one more
rule: message ``k + N`` may start only once message ``k`` has *ended* (its reply came, or
its connection failed) and a full window has passed since. Whenever the server saw
message ``k``, it was before that end, so no window of that length can hold ``N + 1``
messages at the server, whatever the delays.

Per second, ``N`` is the rate rounded down (at least 1) and starts are also spaced
``1 / rate`` apart, so the flow is smooth. Per hour, the window is seeded with the times
the ledger recorded messages as accepted in the past hour (taken as their ends, which
they come after), so a resume counts them; it uses the wall clock because it must survive
a restart.

Every wait goes through the injected :class:`~mailer.clock.Clock`, so tests drive the
limiter on a fake clock. The limiter lives on the sender's event loop and needs no locks
beyond the one that keeps the connections in line.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Callable, Iterable

from mailer.clock import Clock

HOUR = 3600.0
# Float rounding must never let a window hold one message too many.
EPSILON = 1e-6
# How often a wait looks at the stop flag when it is not waiting on the clock.
POLL = 0.25


class Slot:
    """One message's place in the windows: when it started and, once known, when it ended."""

    __slots__ = ("end_monotonic", "end_wall", "ended")

    def __init__(self) -> None:
        self.end_monotonic: float | None = None
        self.end_wall: float | None = None
        self.ended = asyncio.Event()


class RateLimiter:
    def __init__(
        self,
        per_second: float | None,
        per_hour: int | None,
        clock: Clock,
        recent: Iterable[float] = (),
    ) -> None:
        self.interval = 1.0 / per_second + EPSILON if per_second else 0.0
        self.per_second = max(1, math.floor(per_second)) if per_second else 0
        self.per_hour = per_hour or 0
        self.clock = clock
        self._next = 0.0
        self._second: deque[Slot] = deque()
        self._hour: deque[Slot] = deque()
        for when in sorted(recent)[-self.per_hour :] if self.per_hour else ():
            seeded = Slot()
            seeded.end_wall = when
            seeded.ended.set()
            self._hour.append(seeded)
        self._lock = asyncio.Lock()

    @property
    def active(self) -> bool:
        return bool(self.interval or self.per_hour)

    async def acquire(self, stopped: Callable[[], bool]) -> Slot | None:
        """Wait until one more message may start and take its slot; None if ``stopped()``
        became true meanwhile. Every slot taken must be given to :meth:`done`."""
        async with self._lock:  # first come, first served: connections keep their turn
            while True:
                if stopped():
                    return None
                wait, pending = self._wait()
                if pending is not None:
                    # The message a full window back has not ended yet: wait for its reply.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(pending.ended.wait(), POLL)
                    continue
                if wait > 0:
                    await self.clock.sleep_async(min(wait, POLL))
                    continue
                slot = Slot()
                if self.interval:
                    self._next = self.clock.monotonic() + self.interval
                    self._second.append(slot)
                    if len(self._second) > self.per_second:
                        self._second.popleft()
                if self.per_hour:
                    self._hour.append(slot)
                    if len(self._hour) > self.per_hour:
                        self._hour.popleft()
                return slot

    def _wait(self) -> tuple[float, Slot | None]:
        """How long until the next start is allowed, or the slot whose end it waits for."""
        now = self.clock.monotonic()
        wait = self._next - now if self.interval else 0.0
        if self.interval and len(self._second) >= self.per_second:
            oldest = self._second[0]
            if oldest.end_monotonic is None:
                return 0.0, oldest
            wait = max(wait, oldest.end_monotonic + 1.0 + EPSILON - now)
        if self.per_hour and len(self._hour) >= self.per_hour:
            oldest = self._hour[0]
            if oldest.end_wall is None:
                return 0.0, oldest
            wait = max(wait, oldest.end_wall + HOUR + EPSILON - self.clock.time())
        return wait, None

    def done(self, slot: Slot | None) -> None:
        """The message of ``slot`` has ended: accepted, refused, lost or never sent."""
        if slot is None or slot.ended.is_set():
            return
        slot.end_monotonic = self.clock.monotonic()
        slot.end_wall = self.clock.time()
        slot.ended.set()
