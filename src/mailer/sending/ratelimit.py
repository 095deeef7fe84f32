"""Rate limits that hold exactly at the server, shared by every connection of a send and
by every worker sending through the same relay.

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

**Several workers.** :class:`SharedRateLimiter` keeps the same rule for every worker of a
relay together, in the database (:mod:`mailer.store.relay_slots`): the N messages of a
window are N slots, and a message takes a free slot whose last message ended a full
window ago, holds it until its own reply, and frees it with that end. Two messages that
used one slot are therefore a full window apart at the server, and N slots allow at most
N messages in any window, however many workers share them: the limit is the relay's, not
multiplied by the workers. Times are on one clock: the database server's on PostgreSQL
(each worker measures its offset when it starts, and the measurement's uncertainty is
added to every window), this machine's on SQLite. The past hour's messages read from the
ledger are on their senders' clocks, which NTP keeps within milliseconds of it.

**A day's limit.** Relays such as Exchange Online allow so many recipients a day (the
``rate_per_day`` of a relay profile, :mod:`mailer.profiles`). A day is one more window of
slots, seeded from the ledger's past day. A send larger than what is left of the day is
refused before it starts, with the arithmetic (:func:`require_day`), unless the operator
asks for it to be spread over days; once the day's slots are used, the limiter stops the
send (:class:`DailyLimitReached`) rather than wait for hours, the send is paused for that
reason, and ``mailer worker`` resumes it when the window has room again (:func:`day_ready`).

Every wait goes through the injected :class:`~mailer.clock.Clock`, so tests drive the
limiter on a fake clock. The in-process limiter lives on the sender's event loop and
needs no locks beyond the one that keeps the connections in line; the shared one does its
database work on a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from mailer.clock import Clock, SystemClock
from mailer.config import Settings
from mailer.errors import StateError
from mailer.profiles import PROFILES
from mailer.sending.threads import JobThread
from mailer.store import for_sending as store
from mailer.store.for_sending import Database, End, Held, Taken, Wait, Window, retry_while_busy

if TYPE_CHECKING:
    from sqlalchemy import Connection

log = logging.getLogger("mailer.sender")
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
# A wait this long for the day's window pauses the send instead (the worker resumes it).
DAY_PAUSE_AFTER = 60.0
# Float rounding must never let a window hold one message too many.
EPSILON = 1e-6
# Times in the database are kept to the microsecond: a shared window is this much longer.
ROUNDING = 1e-5
# How often a wait looks at the stop flag when it is not waiting on the clock.
POLL = 0.25
# How often a worker looks again when every slot is held by another worker's message.
POLL_ELSEWHERE = 0.05
T = TypeVar("T")


class DailyLimitReached(Exception):
    """The day's limit of the relay is used: the send pauses until ``ready`` (UTC)."""

    def __init__(self, limit: int, ready: dt.datetime) -> None:
        super().__init__(
            f"the relay's limit of {limit:,} recipients a day is used; the worker resumes "
            f"the send after {ready:%Y-%m-%d %H:%M} UTC"
        )
        self.ready = ready


class Slot:
    """One message's place in the windows: when it started and, once known, when it ended.
    A shared slot also knows its places in the database (kind -> slot) and its start."""

    __slots__ = ("end_monotonic", "end_wall", "ended", "places", "started")

    def __init__(self) -> None:
        self.end_monotonic: float | None = None
        self.end_wall: float | None = None
        self.ended = asyncio.Event()
        self.places: dict[str, int] = {}
        self.started: dt.datetime | None = None


def relay_of(settings: Settings) -> str:
    """The relay whose limits a send keeps: the account and server it sends through."""
    if settings.transport.name != "smtp":
        return settings.transport.name
    smtp = settings.transport.smtp
    account = f"{smtp.username}@" if smtp.username else ""
    return f"{account}{smtp.host}:{smtp.port}"[:300]


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

    async def close(self) -> None:
        """Nothing to write: this limiter lives in the process."""


class SharedRateLimiter:
    """The same rule, with the windows in the database, shared by every worker of a relay
    (see the module doc). Call :meth:`open` before the event loop starts."""

    def __init__(
        self,
        per_second: float | None,
        per_hour: int | None,
        clock: Clock,
        database: Database,
        relay: str,
        worker: str,
        *,
        threaded: bool = True,
        align: bool = False,
        per_minute: int | None = None,
        per_day: int | None = None,
    ) -> None:
        self.interval = 1.0 / per_second + EPSILON if per_second else 0.0
        self.per_hour = per_hour or 0
        self.per_day = per_day or 0
        # Whether times go on the shared clock (see open); a test's fake clock is its own.
        self.align = align
        self.clock, self.database, self.relay, self.worker = clock, database, relay, worker
        self.windows: list[Window] = []
        if per_second:
            size = max(1, math.floor(per_second))
            self.windows.append(Window("second", size, 1.0 + ROUNDING))
        self.windows += windows(per_minute, per_hour, per_day)
        self.offset = 0.0
        self._threaded = threaded
        self._thread: JobThread | None = None
        self._lock = asyncio.Lock()
        self._mine: dict[tuple[str, int], Slot] = {}
        self._ends: list[End] = []
        self._flushing: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return bool(self.windows)

    def open(self) -> None:
        """Create the relay's slots if they are missing, count the past hour's messages from
        the ledger, and measure this worker's offset to the shared clock: the database
        server's on PostgreSQL, this machine's own (never shifted by MAILER_CLOCK_OFFSET)
        on SQLite."""
        if not self.active:
            return
        with self.database.session(write=True) as session:
            conn = session.connection()
            store.ensure_slots(conn, self.relay, {w.kind: w.size for w in self.windows})
            if self.align:
                before = self.clock.time()
                server = store.server_time(conn)
                reference = server.timestamp() if server is not None else time.time()
                after = self.clock.time()
                self.offset = reference - (before + after) / 2
                # The reference was read somewhere in between: every window allows for it.
                spread = (after - before) / 2
                self.windows = [Window(w.kind, w.size, w.seconds + spread) for w in self.windows]
            longest = max((w.seconds for w in self.windows), default=0.0)
            if longest >= MINUTE:
                since = self._now() - dt.timedelta(seconds=longest)
                ends = [_at(t) for t in store.sent_since(conn, since)]
                for w in self.windows:
                    if w.seconds >= MINUTE:
                        start = self._now() - dt.timedelta(seconds=w.seconds)
                        recent = [t for t in ends if t >= start]
                        store.seed_slots(conn, self.relay, w.kind, w.size, recent)
        if self._threaded:
            self._thread = JobThread("ratelimit")

    def _now(self) -> dt.datetime:
        return _at(self.clock.time() + self.offset)

    async def acquire(self, stopped: Callable[[], bool]) -> Slot | None:
        """Wait until one more message may start and take its slot; None if ``stopped()``
        became true meanwhile. Every slot taken must be given to :meth:`done`."""
        async with self._lock:
            while True:
                if stopped():
                    return None
                ends, self._ends = self._ends, []
                found = await self._call(self._take, ends)
                if isinstance(found, Taken):
                    slot = Slot()
                    slot.places, slot.started = found.slots, found.at
                    for place in found.slots.items():
                        self._mine[place] = slot
                    return slot
                if isinstance(found, Wait):
                    if found.kind == "day" and found.seconds > DAY_PAUSE_AFTER:
                        if self._mine:
                            # This worker's messages on their way go first: each took a
                            # slot of the day, which a pause now would waste.
                            on_its_way = next(iter(self._mine.values()))
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(on_its_way.ended.wait(), POLL)
                            continue
                        ready = self._now() + dt.timedelta(seconds=found.seconds)
                        raise DailyLimitReached(self.per_day, ready)
                    # Nothing frees a full window's slot before its oldest message leaves
                    # it, so the database is asked again only then; the stop is looked at
                    # meanwhile.
                    await self._pause(found.seconds, stopped)
                    continue
                mine = self._mine.get((found.kind, found.slot))
                if mine is not None:
                    # The message a full window back is this worker's: wait for its reply.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(mine.ended.wait(), POLL)
                else:
                    await self.clock.sleep_async(POLL_ELSEWHERE)

    async def _pause(self, seconds: float, stopped: Callable[[], bool]) -> None:
        """Wait ``seconds``, or until ``stopped()``, which is looked at every POLL."""
        deadline = self.clock.monotonic() + seconds
        while not stopped():
            left = deadline - self.clock.monotonic()
            if left <= 0:
                return
            await self.clock.sleep_async(min(left, POLL))

    def done(self, slot: Slot | None) -> None:
        """The message of ``slot`` has ended: accepted, refused, lost or never sent."""
        if slot is None or slot.ended.is_set():
            return
        slot.end_monotonic = self.clock.monotonic()
        slot.end_wall = self.clock.time()
        slot.ended.set()
        if slot.started is None:
            return
        end = self._now()
        for kind, place in slot.places.items():
            self._ends.append((kind, place, slot.started, end))
            self._mine.pop((kind, place), None)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def close(self) -> None:
        """Write the ends still waiting, so other workers may use these slots."""
        if self._flushing is not None:
            await self._flushing
        await self._flush()
        if self._thread is not None:
            self._thread.close()
            self._thread = None

    async def _flush(self) -> None:
        while self._ends:
            ends, self._ends = self._ends, []
            try:
                await self._call(self._write_ends, ends)
            except Exception as exc:  # the slots stay held until this worker's lease goes
                log.warning("could not free rate-limit slots: %s", exc)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            return fn(*args)
        return await self._thread.call(fn, *args)

    def _take(self, ends: list[End]) -> Taken | Wait | Held:
        def job() -> Taken | Wait | Held:
            with self.database.session(write=True) as session:
                conn = session.connection()
                if ends:
                    store.end_slots(conn, self.relay, self.worker, ends)
                moment = self._now()
                found = store.take_slot(
                    conn, self.relay, self.worker, moment, self.interval, self.windows
                )
                if (
                    isinstance(found, Held)
                    and found.holder != self.worker
                    and store.free_orphan_slots(conn, self.relay, moment)
                ):
                    found = store.take_slot(
                        conn, self.relay, self.worker, moment, self.interval, self.windows
                    )
                return found

        return retry_while_busy(job)

    def _write_ends(self, ends: list[End]) -> None:
        def job() -> None:
            with self.database.session(write=True) as session:
                store.end_slots(session.connection(), self.relay, self.worker, ends)

        retry_while_busy(job)


def _at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def windows(per_minute: int | None, per_hour: int | None, per_day: int | None) -> list[Window]:
    """The windows of a relay's limits longer than a second."""
    found = []
    for kind, size, seconds in (
        ("minute", per_minute, MINUTE),
        ("hour", per_hour, HOUR),
        ("day", per_day, DAY),
    ):
        if size:
            found.append(Window(kind, size, seconds + ROUNDING))
    return found


def limiter_for(
    settings: Settings, database: Database, worker: str, clock: Clock
) -> RateLimiter | SharedRateLimiter:
    """The limiter of a run of a send: shared through the database when a limit is set."""
    smtp = settings.transport.smtp
    if not (
        smtp.rate_per_second or smtp.rate_per_minute or smtp.rate_per_hour or smtp.rate_per_day
    ):
        return RateLimiter(None, None, clock)
    return SharedRateLimiter(
        smtp.rate_per_second,
        smtp.rate_per_hour,
        clock,
        database,
        relay_of(settings),
        worker,
        align=isinstance(clock, SystemClock),
        per_minute=smtp.rate_per_minute,
        per_day=smtp.rate_per_day,
    )


# -- a day's limit, before and between the days of a send ------------------------------------


@dataclass(frozen=True)
class DayPlan:
    """How a send of ``people`` fits a relay's ``limit`` of recipients a day, ``used`` of
    which went in the past 24 hours."""

    limit: int
    used: int
    people: int

    @property
    def left(self) -> int:
        return max(self.limit - self.used, 0)

    @property
    def days(self) -> int:
        if self.people <= self.left:
            return 1
        return 1 + math.ceil((self.people - self.left) / self.limit)


def day_plan(settings: Settings, conn: Connection, people: int, now: float) -> DayPlan | None:
    """The plan of a send of ``people`` under the relay's day limit; None without one."""
    limit = settings.transport.smtp.rate_per_day
    if settings.transport.name != "smtp" or not limit:
        return None
    used = len(store.sent_since(conn, _at(now - DAY)))
    return DayPlan(limit, used, people)


def require_day(
    settings: Settings, conn: Connection, slug: str, people: int, spread: bool, now: float
) -> DayPlan | None:
    """Refuse a send that does not fit what is left of the day, with the arithmetic, unless
    it is to be ``spread`` over days; the plan, or None without a day limit."""
    plan = day_plan(settings, conn, people, now)
    if plan is None or plan.days == 1 or spread:
        return plan
    smtp = settings.transport.smtp
    relay = PROFILES[smtp.profile].title if smtp.profile != "generic" else smtp.host
    raise StateError(
        f"{slug} would go to {people:,} people, but {relay} takes {plan.limit:,} recipients "
        f"a day ({plan.used:,} sent in the past 24 hours, so {plan.left:,} left): it would "
        f"take {plan.days} days. Add --spread to send {plan.left:,} now and the rest as the "
        "limit allows (mailer worker resumes it each day), or send through a relay built "
        "for bulk mail (docs/mail-services.md)"
    )


def day_ready(settings: Settings, conn: Connection, now: dt.datetime) -> bool:
    """Whether a send paused by the day's limit may go on: the relay's day window has a
    slot free again (or no day limit is set any more)."""
    limit = settings.transport.smtp.rate_per_day
    if settings.transport.name != "smtp" or not limit:
        return True
    (window,) = windows(None, None, limit)
    ready = store.slot_ready_at(conn, relay_of(settings), window)
    return ready is None or ready <= now
