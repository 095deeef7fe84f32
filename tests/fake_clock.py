"""A clock for tests: ``sleep`` moves time on at once, so nothing waits on the wall clock."""

from __future__ import annotations

import asyncio
import heapq
import threading
from typing import Any


class FakeClock:
    """Shared by every thread of a send; time moves only when someone sleeps."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.lock = threading.Lock()
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        if stop is not None and stop.is_set():
            return False
        with self.lock:
            self.now += max(seconds, 0.0)
            self.slept.append(seconds)
        return True

    async def sleep_async(self, seconds: float, stop: asyncio.Event | None = None) -> bool:
        if stop is not None and stop.is_set():
            return False
        self.sleep(seconds)
        await asyncio.sleep(0)  # let the other connections run, as a real wait would
        return True


def busiest_window(times: list[float], width: float) -> int:
    """The most events in any window of ``width`` seconds that starts at an event."""
    ordered = sorted(times)
    return max(sum(1 for t in ordered if s <= t < s + width) for s in ordered)


class VirtualClock(FakeClock):
    """Virtual time for tasks that run at once: ``sleep_async`` waits until the clock is
    moved past its wake-up, and :meth:`run` moves it to the next wake-up whenever every
    task is waiting. So two tasks that each wait 0.3 s both wake at 0.3 s, as on a real
    clock, and a simulation of many concurrent messages is exact and repeatable."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        super().__init__(start)
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    async def sleep_async(self, seconds: float, stop: asyncio.Event | None = None) -> bool:
        if stop is not None and stop.is_set():
            return False
        future = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._waiting, (self.now + max(seconds, 0.0), self._seq, future))
        await future
        return True

    async def run(self, *coroutines: Any) -> list[Any]:
        """Run the coroutines to the end in virtual time; their results."""
        tasks = [asyncio.ensure_future(c) for c in coroutines]
        loop = asyncio.get_running_loop()
        while not all(t.done() for t in tasks):
            # Let every task run on until it waits on the clock: until the loop has nothing
            # ready to run but this task (its private queue, read for the test's speed).
            for _ in range(50):
                await asyncio.sleep(0)
                if not loop._ready:  # type: ignore[attr-defined]
                    break
            if self._waiting and not all(t.done() for t in tasks):
                when = self._waiting[0][0]
                self.now = max(self.now, when)
                while self._waiting and self._waiting[0][0] <= when:
                    heapq.heappop(self._waiting)[2].set_result(None)
        return [t.result() for t in tasks]
