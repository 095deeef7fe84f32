"""The rate limits hold at the server, in every one-second and one-hour window.

What counts is when the *server* sees a message, which is some moment between the first
byte sent for it and its reply. These tests simulate connections sending at once on a
virtual clock (:class:`fake_clock.VirtualClock`), each message delayed on its way there
and back, so a message held up and the next one sent on time may reach the server closer
together than ``1 / rate``. Time is virtual: each test is exact and takes milliseconds.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque

import pytest

from fake_clock import VirtualClock, busiest_window
from mailer.sending.ratelimit import HOUR, RateLimiter


def simulate(
    limiter: RateLimiter,
    clock: VirtualClock,
    delays: list[tuple[float, float]],
    connections: int,
) -> list[float]:
    """When the server saw each message: ``delays`` are (on the way there, on the way back)."""
    queue = deque(delays)
    seen: list[float] = []

    async def connection() -> None:
        while queue:
            there, back = queue.popleft()
            slot = await limiter.acquire(lambda: False)
            assert slot is not None
            await clock.sleep_async(there)
            seen.append(clock.time())
            await clock.sleep_async(back)
            limiter.done(slot)

    async def main() -> None:
        await clock.run(*(connection() for _ in range(connections)))

    asyncio.run(main())
    return seen


def delays(n: int, seed: int, longest: float) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [
        (rng.choice([0.0, 0.0, rng.uniform(0, longest)]), rng.uniform(0, 0.05)) for _ in range(n)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_no_second_holds_more_than_the_rate_at_the_server(seed: int) -> None:
    clock = VirtualClock()
    limiter = RateLimiter(5.0, None, clock)
    seen = simulate(limiter, clock, delays(200, seed, longest=0.6), connections=4)
    assert len(seen) == 200
    assert busiest_window(seen, 1.0) == 5
    # And the limit is a limit, not a crawl: 200 messages at 5 a second, plus the delays.
    assert max(seen) - min(seen) < 200 / 5 * 1.5


def test_no_hour_holds_more_than_the_hourly_limit_at_the_server() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(None, 30, clock)
    # Minutes on the way there for some: a relay that queues before it counts.
    rng = random.Random(7)
    slow = [(rng.choice([0.0, rng.uniform(0, 900.0)]), 1.0) for _ in range(120)]
    seen = simulate(limiter, clock, slow, connections=3)
    assert len(seen) == 120
    assert busiest_window(seen, HOUR) == 30


def test_the_hour_counts_what_was_sent_before_a_restart() -> None:
    clock = VirtualClock()
    earlier = [clock.time() - 3000 + i for i in range(20)]  # 20 sent 50 minutes ago
    limiter = RateLimiter(None, 25, clock, recent=earlier)
    seen = simulate(limiter, clock, [(0.0, 0.0)] * 10, connections=2)
    assert busiest_window(earlier + seen, HOUR) == 25
    # The five that fitted went at once; the rest waited until the old ones left the hour.
    assert sorted(seen)[4] == min(seen)
    assert sorted(seen)[5] >= earlier[0] + HOUR


def test_a_stop_cuts_a_wait_short() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(1.0, None, clock)
    stopped = False

    async def main() -> list[object]:
        first = await limiter.acquire(lambda: stopped)
        limiter.done(first)

        async def second() -> object:
            return await limiter.acquire(lambda: stopped)

        async def stopper() -> None:
            nonlocal stopped
            await clock.sleep_async(0.1)
            stopped = True

        return await clock.run(second(), stopper())

    got, _ = asyncio.run(main())
    assert got is None
    assert clock.now < 1_000_001.0  # it gave up at the stop, not at the next slot
