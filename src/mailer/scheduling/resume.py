"""Sends the worker takes up by itself: those whose workers all died, those a stopping
worker paused, every few minutes those paused because the mail server was unavailable,
those the relay's day limit paused once its day window has room again,
and, unless ``[worker] help_other_senders = false``, those other workers are sending that
still have rows nobody has claimed (it joins them with its own connections).

Anything else that paused a send (an operator, too many failures, an error) waits for a
person; a resumed send that pauses again for such a reason is alerted like a scheduled one.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import TYPE_CHECKING

from mailer.config import Settings
from mailer.errors import MailerError, StateError
from mailer.scheduling import runner
from mailer.sending import ratelimit
from mailer.sending.engine import RunResult
from mailer.sending.transports import TransportFactory
from mailer.sending.workers import SendAsSeen
from mailer.store import deliveries, schedules, send_workers, sends
from mailer.store.database import Database
from mailer.store.models import (
    DeliveryStatus,
    PauseReason,
    Schedule,
    ScheduleKind,
    ScheduleStatus,
    Send,
    SendStatus,
    as_utc,
    utcnow,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection

log = logging.getLogger("mailer.scheduler")
# How long the worker waits before trying again a send paused by an unavailable server.
RETRY_UNAVAILABLE_AFTER = dt.timedelta(minutes=5)


def _worth_resuming(
    settings: Settings, conn: Connection, send: Send, now: dt.datetime, helps: bool
) -> bool:
    assert send.id is not None
    live = send_workers.any_live(conn, send.id)
    if send.status == SendStatus.SENDING:
        if not live:
            return True  # every worker of it died: take it over
        return helps and deliveries.count_with_status(conn, send.id, DeliveryStatus.PENDING) > 0
    if send.status != SendStatus.PAUSED or live:
        return False
    reason = send.pause_reason
    if reason is None or not reason.resumes_by_itself:
        return False
    if reason == PauseReason.UNAVAILABLE:
        last = send.heartbeat_at or send.started_at
        return last is None or now - as_utc(last) >= RETRY_UNAVAILABLE_AFTER
    if reason == PauseReason.DAILY_LIMIT:
        return ratelimit.day_ready(settings, conn, now)
    return True


def resume_interrupted(
    settings: Settings,
    database: Database,
    factory: TransportFactory | None = None,
    *,
    stop: threading.Event | None = None,
    now: dt.datetime | None = None,
) -> list[runner.RunOutcome]:
    """Resume sends whose workers died or that a stopping worker paused, try again, every
    few minutes, sends paused because the server was unavailable, and join sends other
    workers are sending (unless ``[worker] help_other_senders = false``)."""
    moment = now or utcnow()
    helps = settings.worker.help_other_senders
    with database.session() as session:
        conn = session.connection()
        candidates = [
            (s.id, s.slug, SendAsSeen(SendStatus(s.status), s.pause_reason))
            for s in sends.unfinished(session)
            if s.id is not None and _worth_resuming(settings, conn, s, moment, helps)
        ]
    outcomes = []
    for send_id, slug, seen in candidates:
        before = seen.pause_reason
        log.info("taking up send %s", send_id)
        try:
            if stop is not None and stop.is_set():
                break
            result = runner.run_send(settings, database, send_id, factory, stop, seen)
        except StateError as exc:  # another worker took it, finished it or paused it first
            log.info("send %s: %s", send_id, exc)
            continue
        except MailerError as exc:
            log.warning("send %s could not be resumed: %s", send_id, exc)
            outcome = f"not resumed: {exc}"
            outcomes.append(
                runner.RunOutcome(None, slug, outcome, False, problem=True, send_id=send_id)
            )
            continue
        item = _record_resumed(database, send_id, result)
        problem = runner.needs_a_person(database, result, before)
        if problem:
            runner.alert_send(settings, item, send_id, slug, runner.summarise(result), factory)
        outcomes.append(
            runner.RunOutcome(
                item.id if item is not None else None,
                slug,
                runner.summarise(result),
                result.status == SendStatus.SENT,
                problem=problem,
                send_id=send_id,
            )
        )
    return outcomes


def _record_resumed(database: Database, send_id: int, result: RunResult) -> Schedule | None:
    """A resumed send that a schedule started: give the schedule its outcome."""
    with database.session() as session:
        started = schedules.started(session, send_id)
    for item in started:
        assert item.id is not None
        done = item.kind == ScheduleKind.ONCE and result.status == SendStatus.SENT
        schedules.record(
            database,
            item.id,
            runner.summarise(result),
            status=ScheduleStatus.DONE if done else None,
        )
    return started[0] if started else None
