"""Alerts: telling a person that the newsletter did not go out as planned.

When a scheduled send fails, a send pauses for a reason a person must fix, or a slot is
missed, the worker logs it and emails ``alerts_to`` (mailer.toml) through the configured
transport, so a newsletter never silently stays unsent. An alert that cannot be delivered
(the mail server may be the very thing that is down) is logged, and ``mailer worker
--once`` still exits non-zero, so cron or a systemd timer reports it too.

Alerts name issues, schedules and sends, never a subscriber's address.
"""

from __future__ import annotations

import binascii
import datetime as dt
import json
import logging
import socket
from dataclasses import dataclass
from email.utils import formatdate, make_msgid
from zoneinfo import ZoneInfo

from mailer.config import Settings
from mailer.errors import MailerError
from mailer.formats import local_time
from mailer.sending import headers, transports
from mailer.sending.transports import TransportFactory
from mailer.store.for_sending import Schedule

log = logging.getLogger("mailer.alerts")
# The outbox folder of alerts: not an issue slug (those never start with "_").
OUTBOX_FOLDER = "_alerts"


@dataclass(frozen=True)
class Alert:
    """What went wrong, in a subject line, and what to do about it, in a few lines."""

    subject: str
    body: str


def message(settings: Settings, alert: Alert, to: tuple[str, ...]) -> bytes:
    """The alert as an RFC 5322 message, every header written by :mod:`headers`."""
    sender = settings.sender
    head = [
        headers.address("From", f"{settings.name} (mailer)", sender.from_address),
        headers.fold("To", [*(f"{address}," for address in to[:-1]), to[-1]]),
        headers.text("Subject", f"[mailer] {alert.subject}"),
        headers.raw("Date", formatdate(usegmt=True)),
        headers.raw("Message-ID", make_msgid("alert", domain=sender.domain)),
        # Mail programs must not auto-reply to an alert, nor treat it as bulk.
        headers.raw("Auto-Submitted", "auto-generated"),
        headers.MIME_VERSION,
        headers.raw("Content-Type", 'text/plain; charset="utf-8"'),
        headers.raw("Content-Transfer-Encoding", "quoted-printable"),
    ]
    footer = (
        f"\n\n--\nSent by mailer for {settings.name}, from the newsletter folder "
        f"{settings.root} on {socket.gethostname()}. Change who receives these with "
        "alerts_to in mailer.toml.\n"
    )
    text = (alert.body.rstrip() + footer).replace("\n", "\r\n").encode("utf-8")
    body = binascii.b2a_qp(text, istext=True, header=False)
    return b"".join(head) + b"\r\n" + body


def send(settings: Settings, alert: Alert, factory: TransportFactory | None = None) -> bool:
    """Log the alert and email it to ``alerts_to``; False if it could not be emailed."""
    log.warning("alert: %s", alert.subject)
    to = settings.alerts_to
    if not to:
        log.warning("no alerts_to in mailer.toml: nobody was emailed about it")
        return False
    try:
        data = message(settings, alert, to)
        open_transport = factory or transports.factory(settings, OUTBOX_FOLDER)
        with open_transport() as transport:
            transport.open()
            for address in to:
                transport.send(settings.sender.from_address, address, data)
    except MailerError as exc:
        log.error("could not email the alert %r: %s", alert.subject, exc)
        return False
    log.info("emailed the alert %r to alerts_to", alert.subject)
    return True


# -- what each alert says ----------------------------------------------------------------------


def lists_of(item: Schedule) -> list[str]:
    return list(json.loads(item.lists))


def _what(item: Schedule) -> str:
    return f"{item.slug}" if item.slug else f"monthly {item.rule}"


def slot_failed(
    tz: ZoneInfo,
    item: Schedule,
    slug: str | None,
    slot: dt.datetime,
    until: dt.datetime,
    problems: list[str],
) -> Alert:
    """A slot that could not start, for reasons a person can fix within the grace period:
    every one of them, in the order to fix them, so one round of fixes is enough."""
    if len(problems) == 1:
        listed, fix = f"  {problems[0]}", "Fix this"
    else:
        listed = "\n".join(f"  {n}. {p}" for n, p in enumerate(problems, 1))
        fix = f"Fix these {len(problems)}, in this order,"
    return Alert(
        f"{slug or _what(item)} was not sent (schedule {item.id})",
        f"Schedule {item.id} ({_what(item)}) was due at {local_time(slot, tz)} but did not "
        f"start:\n\n{listed}\n\n{fix} and the worker sends it at its next look, until "
        f"{local_time(until, tz)}; after that it gives up, and you are told once it has "
        "gone. See the schedule with: mailer schedules\n",
    )


def now_sent(tz: ZoneInfo, item: Schedule, slug: str, send_id: int, when: dt.datetime) -> Alert:
    """The follow-up to :func:`slot_failed`: the problem was fixed and the issue went."""
    return Alert(
        f"{slug} is now sent (schedule {item.id})",
        f"The problem alerted earlier is fixed: schedule {item.id} ({_what(item)}) started "
        f"sending {slug} at {local_time(when, tz)} (send {send_id}). Nothing more to do; "
        f"do not send it by hand. See its progress with: mailer status {slug}\n",
    )


def given_up(item: Schedule, outcome: str) -> Alert:
    """A slot missed, or still failing, at the end of the grace period."""
    return Alert(
        f"{item.slug or f'the monthly slot {item.rule}'} was not sent (schedule {item.id})",
        f"Schedule {item.id} ({_what(item)}) did not send anything:\n\n  {outcome}\n\n"
        "A newsletter is never sent later than the grace period (misfire_grace in "
        "mailer.toml). If it is still useful, send it by hand:\n\n"
        f"  mailer send {item.slug or 'SLUG'} --list {' --list '.join(lists_of(item))}\n",
    )


def send_stopped(item: Schedule | None, send_id: int, slug: str | None, outcome: str) -> Alert:
    """A send that paused for a reason a person must look at."""
    which = f" (schedule {item.id})" if item is not None else ""
    return Alert(
        f"the send of {slug} stopped{which}",
        f"The send of {slug} (send {send_id}) stopped before everyone had it:\n\n"
        f"  {outcome}\n\nSee who has it and why it stopped with: mailer status {slug}\n"
        f"When the cause is fixed, continue with: mailer send {slug} --resume\n",
    )
