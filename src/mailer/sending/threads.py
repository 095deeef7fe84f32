"""A thread of its own that runs database work for an event loop, one job at a time.

The send's event loop must never wait for the database: the ledger's commits and the
shared rate limit's transactions run here, and their results come back as futures.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class JobThread:
    """A thread of its own that runs one database job at a time for the event loop (the
    ledger's, and the shared rate limit's).

    Leaner than a thread pool for a thousand commits a second, and sqlite3 lets other
    threads run while SQLite itself works.
    """

    def __init__(self, name: str = "ledger") -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return future

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, future, fn, args = job
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # handed to the waiting task
                result, error = None, exc
            loop.call_soon_threadsafe(_settle, future, result, error)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
