"""The background sender of the web side's queued mail (:mod:`.outgoing`).

``mailer serve`` runs one on a thread of its own and ``mailer worker`` looks at the queue
on every poll, so the mail goes whether or not the worker runs, and no page ever waits for
a mail server. Both may run at once on one database: claims are safe across processes
(:mod:`mailer.store.webmail`).

Each email goes through the configured transport (mailer's one SMTP client, or the outbox
into ``outbox/_web/``; alerts into ``outbox/_alerts/``), DKIM-signed when DKIM is
configured. A temporary failure is tried again after 1, 2, 4 ... minutes (at most an hour
apart) until :data:`~mailer.subscribers.outgoing.EXPIRY`; a permanent one, or the expiry,
marks it failed, and a failed email no longer counts against the person's limits. Logs
name the row, never the address.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from itertools import groupby

from mailer.clock import Clock, SystemClock, utcnow
from mailer.config import Settings
from mailer.errors import MailerError, PermanentSendError, SendError
from mailer.sending import alerts, transports
from mailer.sending.message import DkimSigner
from mailer.sending.transports import TransportFactory
from mailer.store import webmail
from mailer.store.connections import retry_while_busy
from mailer.store.database import Database, open_db
from mailer.subscribers import notices
from mailer.subscribers.outgoing import ALERT

log = logging.getLogger("mailer.web.mail")
# How long a claim holds: longer than any one delivery can take with its timeouts.
HOLD = dt.timedelta(minutes=10)
BATCH = 20
FIRST_RETRY = 60.0
LAST_RETRY = 3600.0
# How often the thread of mailer serve looks at the queue.
EVERY = 1.0


def _folder(kind: str) -> str:
    return alerts.OUTBOX_FOLDER if kind == ALERT else notices.OUTBOX_FOLDER


def backoff(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed try."""
    return float(min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LAST_RETRY))


class Postman:
    """Sends what is due in the queue, one batch at a time."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        clock: Clock | None = None,
        factory: Callable[[str], TransportFactory] | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.clock = clock or SystemClock()
        self.factory = factory or (lambda folder: transports.factory(settings, folder))
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock.time(), dt.UTC)

    def deliver_due(self) -> int:
        """Send every email that is due now; how many went."""
        went = 0
        while True:
            now = self.now()

            def take(at: dt.datetime = now) -> list[webmail.Queued]:
                with self.database.session(write=True) as session:
                    return webmail.claim(session, at, hold=HOLD, limit=BATCH)

            batch = retry_while_busy(take)
            if not batch:
                return went
            ordered = sorted(batch, key=lambda m: _folder(m.kind))
            for folder, group in groupby(ordered, key=lambda m: _folder(m.kind)):
                went += self._deliver(folder, list(group))
            if len(batch) < BATCH:
                return went

    def _deliver(self, folder: str, batch: list[webmail.Queued]) -> int:
        went = 0
        signer = DkimSigner.from_environment()
        try:
            with self.factory(folder)() as transport:
                transport.open()
                for item in batch:
                    try:
                        data = signer.sign(item.message) if signer else item.message
                        transport.send(self.settings.sender.from_address, item.recipient, data)
                    except SendError as exc:
                        self._failed(item, exc)
                        continue
                    self._record(lambda s, i=item.id: webmail.sent(s, i))
                    log.info("sent the %s email %d", item.kind, item.id)
                    went += 1
        except MailerError as exc:
            # The transport could not be opened (the relay is down): each claimed email
            # not yet sent or failed is tried again later.
            for item in batch:
                self._failed(item, exc)
        return went

    def _failed(self, item: webmail.Queued, exc: MailerError) -> None:
        error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        when = self.now() + dt.timedelta(seconds=backoff(item.attempts))
        if isinstance(exc, PermanentSendError) or when >= item.expires_at:
            log.warning("gave up the %s email %d: %s", item.kind, item.id, error)
            self._record(lambda s: webmail.failed(s, item.id, error))
            return
        log.warning("the %s email %d is tried again later: %s", item.kind, item.id, error)
        self._record(lambda s: webmail.retry_at(s, item.id, when, error))

    def _record(self, change: Callable[..., None]) -> None:
        def job() -> None:
            with self.database.session(write=True) as session:
                change(session)

        retry_while_busy(job)

    def purge(self) -> int:
        with self.database.session(write=True) as session:
            return webmail.purge(session, self.now())

    # -- on a thread of mailer serve ------------------------------------------------------

    def run(self) -> None:
        looks = 0
        while not self._stop.is_set():
            try:
                self.deliver_due()
                looks += 1
                if looks % 3600 == 1:
                    self.purge()
            except MailerError as exc:
                log.error("the look at the web side's mail failed, tried again: %s", exc)
            if not self.clock.sleep(EVERY, self._stop):
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="web-mail", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)


# -- the queue's health, for mailer status and mailer doctor --------------------------------

# The oldest email waiting longer than this means the sender is not running or the relay
# refuses: said as a problem.
STUCK = dt.timedelta(minutes=15)


def health(settings: Settings, now: dt.datetime | None = None) -> tuple[bool, str]:
    """Whether the queue is well, and one line saying so (without any address)."""
    now = now or utcnow()
    with open_db(settings) as database, database.session() as session:
        found = webmail.health(session, now)
    if found.waiting == 0 and found.failed_recently == 0:
        return True, "no web mail waiting"
    parts = []
    stuck = False
    if found.waiting and found.oldest is not None:
        age = now - found.oldest
        stuck = age > STUCK
        minutes = max(int(age.total_seconds() // 60), 0)
        parts.append(f"{found.waiting} web email(s) waiting, the oldest for {minutes} min")
    if found.failed_recently:
        parts.append(f"{found.failed_recently} failed in the last day")
    if found.last_error:
        parts.append(f"last error: {found.last_error}")
    advice = (
        " (is mailer serve or mailer worker running, and does the relay take mail? "
        "see mailer doctor --smtp)"
        if stuck or found.failed_recently
        else ""
    )
    return not stuck and not found.failed_recently, "; ".join(parts) + advice
