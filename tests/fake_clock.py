"""A clock for tests: ``sleep`` moves time on at once, so nothing waits on the wall clock."""

from __future__ import annotations

import threading


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


def busiest_window(times: list[float], width: float) -> int:
    """The most events in any window of ``width`` seconds that starts at an event."""
    ordered = sorted(times)
    return max(sum(1 for t in ordered if s <= t < s + width) for s in ordered)
