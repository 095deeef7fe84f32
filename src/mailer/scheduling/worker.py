"""``mailer worker``: the long-running process that sends scheduled issues.

APScheduler decides when to look; the database decides what to do. Every ``poll``
seconds (30 by default), and exactly at each schedule's time, the worker:

1. resumes sends interrupted by a crash (their workers are gone) or by a stopping worker,
   and joins sends other workers are sending (:mod:`mailer.scheduling.resume`);
2. if it holds the scheduler lease (:mod:`mailer.scheduling.leader`), starts every
   schedule that is due (:func:`mailer.scheduling.runner.run_due`), marking as missed the
   ones that are later than the grace period, and trying again, at every look within it,
   a slot that failed for a reason a person can fix; other workers are standbys;
3. runs the sends that the scheduler started (:func:`mailer.scheduling.runner.run_started`):
   any worker may;
4. re-reads the schedules, so ones added or cancelled from the CLI take effect within one
   poll, without a restart;
5. sends the web side's queued mail (:mod:`mailer.subscribers.posting`), every poll or
   every 10 seconds if that is sooner, alongside any ``mailer serve`` that does too.

Whatever a person must hear about (a slot that failed or was missed, a send paused by
failures) is logged and emailed to ``alerts_to`` (:mod:`mailer.sending.alerts`).

When a bounce mailbox is configured (``[bounces] imap_host``), the worker holding the
bounces lease also reads it every ``fetch_every`` minutes (5 by default), as ``mailer
bounces fetch`` does.

SIGTERM or Ctrl-C stop it cleanly: a send in progress pauses after the messages in hand
and is resumed by the next worker, unless other workers are sending it too, which go on.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from mailer import files
from mailer.bounces import imap
from mailer.clock import utcnow
from mailer.config import Settings
from mailer.errors import MailerError
from mailer.formats import local_time
from mailer.scheduling import leader, resume, runner
from mailer.sending.transports import TransportFactory
from mailer.store import schedules
from mailer.store.database import open_db
from mailer.subscribers.posting import Postman

log = logging.getLogger("mailer.worker")
DEFAULT_POLL = 30.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class _UTCFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def setup_logging(settings: Settings, *, stderr: bool = True) -> Path:
    """One line per event in .mailer/mailer.log, and on stderr unless told otherwise."""
    path = files.log_file(settings.state_dir)
    files.private_folder(path.parent)
    files.create_private(path)
    root = logging.getLogger("mailer")
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = _UTCFormatter(LOG_FORMAT)
    handlers: list[logging.Handler] = [logging.FileHandler(path, encoding="utf-8")]
    if stderr:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.propagate = False
    return path


def _no_skipped_runs(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith('Execution of job "%s" skipped')


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        poll: float = DEFAULT_POLL,
        clock: Callable[[], dt.datetime] = utcnow,
        factory: TransportFactory | None = None,
    ) -> None:
        self.settings = settings
        self.poll = poll
        self.clock = clock
        self.factory = factory
        self.database = open_db(settings)
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._deciding = threading.Lock()
        self._scheduler: BackgroundScheduler | None = None
        lease = settings.worker.lease
        self.scheduler_lease = leader.JobLease(self.database, leader.SCHEDULER, ttl=lease)
        self.bounce_lease = leader.JobLease(self.database, leader.BOUNCES, ttl=lease)
        # The web side's queued mail goes from here too, when mailer serve is not running.
        self.postman = Postman(settings, self.database)
        # What the timers run: the same looks, each failure one line in the log.
        self._timed_tick = self._looked(self.tick, "the look at the sends")
        self._timed_decide = self._looked(self.decide, "the look at the schedules")

    def tick(self) -> list[runner.RunOutcome]:
        """One look at the sends: resume interrupted ones, run the ones schedules started."""
        with self._lock:
            if self.stop.is_set():
                return []
            outcomes = resume.resume_interrupted(
                self.settings, self.database, self.factory, stop=self.stop, now=self.clock()
            )
            outcomes += runner.run_started(self.settings, self.database, self.factory, self.stop)
            return outcomes

    def decide(self) -> list[runner.RunOutcome]:
        """The scheduler's look, on the one worker holding its lease: start what is due,
        and wake this worker's sending at once; refresh the timers either way."""
        with self._deciding:
            if self.stop.is_set():
                return []
            outcomes: list[runner.RunOutcome] = []
            try:
                scheduler = self.scheduler_lease.take()
            except MailerError as exc:
                log.warning("could not look at the scheduler's lease: %s", exc)
                return []
            if scheduler:
                outcomes = runner.run_due(
                    self.settings,
                    self.database,
                    self.clock(),
                    factory=self.factory,
                    stop=self.stop,
                    lease=self.scheduler_lease,
                    send=False,
                )
                self._wake()
            self._sync_timers()
            return outcomes

    @staticmethod
    def _looked(look: Callable[[], object], what: str) -> Callable[[], None]:
        """A timed look that logs a failure of its own (the database down, a folder that
        became unreadable) as one line, and is tried again at the next poll."""

        def run() -> None:
            try:
                look()
            except MailerError as exc:
                log.error("%s failed, tried again at the next poll: %s", what, exc)

        run.__name__ = run.__qualname__ = getattr(look, "__name__", "look")
        return run

    def _wake(self) -> None:
        """Run a send the scheduler started now, not at the next poll, unless busy sending."""
        if self._scheduler is None or self.stop.is_set() or self._lock.locked():
            return
        with self.database.session() as session:
            if not schedules.waiting(session):
                return
        self._scheduler.add_job(self._timed_tick, id="tick-now", replace_existing=True)

    def _renew(self) -> None:
        for lease in (self.scheduler_lease, self.bounce_lease):
            lease.renew()

    def _sync_timers(self) -> None:
        """A timer per active schedule, so a send starts on the minute, not at the next poll."""
        scheduler = self._scheduler
        if scheduler is None or self.stop.is_set():
            return
        with self.database.session() as session:
            active = schedules.upcoming(session)
        wanted = {f"schedule-{s.id}": s.next_run_at for s in active}
        for job in scheduler.get_jobs():
            if job.id.startswith("schedule-") and job.id not in wanted:
                job.remove()
        now = self.clock()
        for job_id, when in wanted.items():
            if when is None or when <= now:
                continue
            scheduler.add_job(
                self._timed_decide,
                DateTrigger(run_date=when),
                id=job_id,
                replace_existing=True,
                misfire_grace_time=None,
                coalesce=True,
            )

    def fetch_bounces(self) -> imap.FetchSummary | None:
        """Read the bounce mailbox once; a mailbox that is down is logged and tried again."""
        if not self.settings.bounces.mailbox or self.stop.is_set():
            return None
        try:
            if not self.bounce_lease.take():
                return None  # another worker reads it
            return imap.fetch(self.settings, self.database)
        except MailerError as exc:
            log.warning("could not read the bounce mailbox: %s", exc)
            return None

    def run_once(self) -> list[runner.RunOutcome]:
        log.info("worker --once at %s", local_time(self.clock(), self.settings.tz))
        try:
            with self.scheduler_lease.kept(), self.bounce_lease.kept():
                outcomes = self.decide()
                if not self.scheduler_lease.held:
                    holder = self.scheduler_lease.holder_now() or "another worker"
                    log.info("the scheduler is %s: the schedules are left to it", holder)
                outcomes += self.tick()
                self.fetch_bounces()
                self.postman.deliver_due()
        finally:
            self.release()
        return outcomes

    def release(self) -> None:
        """Let go of the leases, so that a standby takes over at its next look."""
        self.scheduler_lease.release()
        self.bounce_lease.release()

    def run_forever(self) -> None:
        scheduler = BackgroundScheduler(timezone=dt.UTC)
        self._scheduler = scheduler
        scheduler.add_job(
            self._timed_tick,
            IntervalTrigger(seconds=self.poll),
            id="poll",
            next_run_time=dt.datetime.now(dt.UTC),
            max_instances=1,
            coalesce=True,
        )
        scheduler.add_job(
            self._timed_decide,
            IntervalTrigger(seconds=self.poll),
            id="decide",
            next_run_time=dt.datetime.now(dt.UTC),
            max_instances=1,
            coalesce=True,
        )
        # Leases are renewed on a thread of their own, so a long send or a slow look at
        # the bounce mailbox never lets one expire.
        renew_every = self.scheduler_lease.ttl.total_seconds() / 4
        scheduler.add_job(self._renew, IntervalTrigger(seconds=renew_every), id="leases")
        scheduler.add_job(
            self._looked(self.postman.deliver_due, "the look at the web side's mail"),
            IntervalTrigger(seconds=min(self.poll, 10.0)),
            id="web-mail",
            max_instances=1,
            coalesce=True,
        )
        if self.settings.bounces.mailbox:
            scheduler.add_job(
                self.fetch_bounces,
                IntervalTrigger(minutes=self.settings.bounces.fetch_every),
                id="bounces",
                next_run_time=dt.datetime.now(dt.UTC),
                max_instances=1,
                coalesce=True,
            )
        # A look that outlasts the poll makes APScheduler skip the next one, as intended:
        # not worth a warning every poll while a send or a slow check runs.
        logging.getLogger("apscheduler.scheduler").addFilter(_no_skipped_runs)
        # Nor a timer that fired a little late (a busy machine, one back from sleep).
        logging.getLogger("apscheduler.executors.default").setLevel(logging.ERROR)
        self._install_signals()
        scheduler.start()
        log.info("worker started: checking schedules every %g s (pid %s)", self.poll, os.getpid())
        try:
            while not self.stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            self.stop.set()
        log.info("worker stopping: a send in progress pauses and resumes at the next start")
        # The lock is free once a running tick has paused its send; shutting down without
        # waiting then cannot deadlock with a tick that is refreshing the timers.
        with self._lock, self._deciding:
            scheduler.shutdown(wait=False)
        self.release()
        log.info("worker stopped")

    def _install_signals(self) -> None:
        def handle(signum: int, frame: Any) -> None:
            self.stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handle)
