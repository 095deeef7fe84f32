"""Small writes committed together: one writer thread, one transaction for all the writes
waiting at the moment it starts.

A database takes one writer at a time. When many requests each open a transaction of
their own (a mail provider's one-click unsubscribes arriving in a burst during a send),
each waits for the lock, and SQLite's busy handler waits in growing naps: a burst of two
hundred spent most of its time asleep. :class:`GroupedWriter` hands every write to one
thread, which takes all the writes waiting when it starts a transaction, runs each in
that one transaction and commits once; each caller is answered only after that commit,
so an answer still means the write is durable. Writes that arrive meanwhile form the
next group. Each write runs within a savepoint: its own error (a mistake in a form)
undoes only its writes, and one the database refuses is tried again alone, so one bad
write never fails the others; a database another writer holds is waited out (``patience``) through
:func:`~mailer.store.connections.retry_while_busy`, as a lone write would be.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from mailer.store.connections import retry_while_busy
from mailer.store.database import Database

log = logging.getLogger(__name__)

T = TypeVar("T")
# The most writes one transaction takes: enough for any burst, small enough that the
# first caller of a group is not kept long by the last.
MOST_AT_ONCE = 500


@dataclass
class _Write(Generic[T]):
    job: Callable[[Session], T]
    answer: Future[T] = field(default_factory=Future)


class GroupedWriter:
    """One thread that commits the writes handed to it, together."""

    def __init__(self, db: Database, *, patience: float) -> None:
        self.db = db
        self.patience = patience
        self._waiting: queue.SimpleQueue[_Write[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        # How many transactions committed, and how many writes they held: a group is
        # visible only through these.
        self.commits = 0
        self.writes = 0

    def run(self, job: Callable[[Session], T]) -> T:
        """``job(session)``, committed; blocks until it is (or until it failed)."""
        return self.submit(job).result()

    async def run_async(self, job: Callable[[Session], T]) -> T:
        """``job(session)``, committed, awaited without holding a thread meanwhile."""
        return await asyncio.wrap_future(self.submit(job))

    def close(self) -> None:
        """Finish the writes already handed over, then stop the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._waiting.put(None)
            thread.join()

    def submit(self, job: Callable[[Session], T]) -> Future[T]:
        """Hand ``job`` over; the future is answered once it is committed (or failed)."""
        write: _Write[T] = _Write(job)
        with self._lock:
            if self._closed:
                raise RuntimeError("the database writer has stopped")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="grouped-writer", daemon=True
                )
                self._thread.start()
            self._waiting.put(write)
        return write.answer

    def _loop(self) -> None:
        while True:
            first = self._waiting.get()
            if first is None:
                return
            group: list[_Write[Any]] = [first]
            stop = False
            while len(group) < MOST_AT_ONCE:
                try:
                    more = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                group.append(more)
            self._commit(group)
            if stop:
                return

    def _commit(self, group: list[_Write[Any]]) -> None:
        def together() -> list[tuple[bool, Any]]:
            with self.db.session(write=True) as session:
                return [_within_savepoint(session, write.job) for write in group]

        deadline = time.monotonic() + self.patience
        try:
            outcomes = retry_while_busy(together, give_up_after=self.patience)
        except Exception as failed:
            # The database refused the group, or stayed busy past the patience: each is
            # tried alone while time is left, so that only a write the database refuses
            # by itself is answered with that error.
            for write in group:
                self._answer_alone(write, deadline - time.monotonic(), failed)
            return
        self.commits += 1
        self.writes += len(group)
        for write, (done, value) in zip(group, outcomes, strict=True):
            if done:
                write.answer.set_result(value)
            else:
                write.answer.set_exception(value)

    def _answer_alone(self, write: _Write[Any], time_left: float, failed: Exception) -> None:
        if time_left <= 0:
            write.answer.set_exception(failed)
            return

        def alone() -> Any:
            with self.db.session(write=True) as session:
                return write.job(session)

        try:
            result = retry_while_busy(alone, give_up_after=time_left)
        except Exception as exc:  # the caller's own error, raised where it waits
            write.answer.set_exception(exc)
            return
        self.commits += 1
        self.writes += 1
        write.answer.set_result(result)


def _within_savepoint(session: Session, job: Callable[[Session], T]) -> tuple[bool, Any]:
    """``(True, result)``, or ``(False, error)`` for the job's own error (a mistake in a
    form, a link that no longer works), whose writes are undone to the savepoint while the
    group's go on. An error of the database itself fails the whole transaction."""
    try:
        with session.begin_nested():
            return True, job(session)
    except SQLAlchemyError:
        raise
    except Exception as exc:
        return False, exc
