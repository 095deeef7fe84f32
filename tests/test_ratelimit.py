"""The rate limits hold at the server, in every one-second and one-hour window, for one
worker and for several sharing a relay through the database.

What counts is when the *server* sees a message, which is some moment between the first
byte sent for it and its reply. These tests simulate connections sending at once on a
virtual clock (:class:`fake_clock.VirtualClock`), each message delayed on its way there
and back, so a message held up and the next one sent on time may reach the server closer
together than ``1 / rate``. Time is virtual: each test is exact and takes milliseconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from fake_clock import VirtualClock, busiest_window
from mailer import config
from mailer.operations import service
from mailer.sending import workers
from mailer.sending.ratelimit import HOUR, RateLimiter, SharedRateLimiter
from mailer.store.database import Database, open_db
from mailer.store.send_workers import SEND_WORKER
from send_helpers import addresses, make_list


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


# -- shared by several workers, through the database -------------------------------------


@pytest.fixture
def three_workers(cli: Any, newsletter: Path) -> Iterator[tuple[Database, list[str]]]:
    """A send with three workers holding leases on it, as three processes would."""
    make_list(cli, newsletter, "practitioners", addresses(3))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    settings = config.load(newsletter)
    names = [f"host-{n}:{n}:1/1" for n in range(3)]
    with open_db(settings) as database:
        send_id = service.create(settings, "2025-11", ["practitioners"], database=database)
        for name in names:
            workers.join(database, send_id, name, 4, dt.timedelta(minutes=5))
        yield database, names


def simulate_workers(
    limiters: list[SharedRateLimiter],
    clock: VirtualClock,
    delays: list[tuple[float, float]],
    connections: int,
) -> list[float]:
    """As :func:`simulate`, with every worker's connections drawing from one queue."""
    queue = deque(delays)
    seen: list[float] = []

    async def connection(limiter: SharedRateLimiter) -> None:
        while queue:
            there, back = queue.popleft()
            slot = await limiter.acquire(lambda: False)
            assert slot is not None
            await clock.sleep_async(there)
            seen.append(clock.time())
            await clock.sleep_async(back)
            limiter.done(slot)

    async def main() -> None:
        tasks = [connection(limiter) for limiter in limiters for _ in range(connections)]
        await clock.run(*tasks)
        for limiter in limiters:
            await limiter.close()

    asyncio.run(main())
    return seen


def _shared(
    database: Database,
    names: list[str],
    clock: VirtualClock,
    per_second: float | None,
    per_hour: int | None,
) -> list[SharedRateLimiter]:
    limiters = [
        SharedRateLimiter(
            per_second, per_hour, clock, database, "relay.example.org:25", name, threaded=False
        )
        for name in names
    ]
    for limiter in limiters:
        limiter.open()
    return limiters


@pytest.mark.parametrize("seed", range(2))
def test_three_workers_together_keep_the_rate_per_second_at_the_server(
    three_workers: tuple[Database, list[str]], seed: int
) -> None:
    database, names = three_workers
    clock = VirtualClock()
    limiters = _shared(database, names, clock, 5.0, None)
    seen = simulate_workers(limiters, clock, delays(120, seed, longest=0.6), connections=3)
    assert len(seen) == 120
    # Five a second for the three of them, not five each: and still a rate, not a crawl.
    assert busiest_window(seen, 1.0) == 5
    assert max(seen) - min(seen) < 120 / 5 * 1.5


def test_three_workers_together_keep_the_hourly_limit_at_the_server(
    three_workers: tuple[Database, list[str]],
) -> None:
    database, names = three_workers
    clock = VirtualClock()
    limiters = _shared(database, names, clock, None, 20)
    rng = random.Random(11)
    slow = [(rng.choice([0.0, rng.uniform(0, 900.0)]), 1.0) for _ in range(60)]
    seen = simulate_workers(limiters, clock, slow, connections=2)
    assert len(seen) == 60
    assert busiest_window(seen, HOUR) == 20


def test_a_slot_held_by_a_worker_that_died_is_freed_as_if_its_message_ended_then(
    three_workers: tuple[Database, list[str]],
) -> None:
    database, names = three_workers
    clock = VirtualClock()
    dead, alive, _ = _shared(database, names, clock, 1.0, None)

    async def main() -> tuple[object, float]:
        # The dead worker took the only slot of the second and never gave it back.
        assert await dead.acquire(lambda: False) is not None
        with database.session(write=True) as session:
            session.connection().execute(
                sa.delete(SEND_WORKER).where(SEND_WORKER.c.worker == names[0])
            )
        started = clock.time()
        (slot,) = await clock.run(alive.acquire(lambda: False))
        return slot, clock.time() - started

    slot, waited = asyncio.run(main())
    assert slot is not None
    assert waited == pytest.approx(1.0, abs=0.1)  # a full second after it was found dead
