"""The web side's emails, queued in the request and sent later (:mod:`.posting`), and the
limits that decide whether one goes at all.

Limits decide whether mail is sent, never what the page says: a form past a limit answers
as any other. Each is counted on the queue itself, so only mail that went or may still go
counts; a confirmation that failed does not use up the person's cooling-off:

- per mailbox as delivered (:func:`~mailer.addresses.mailbox`): one email per
  ``cooling_off_minutes`` for each kind, and ``per_address_per_day`` in all;
- per network: ``per_ip_per_hour`` emails from one IPv4 address or one IPv6 /64;
- for the whole site: ``confirmations_per_hour`` confirmation emails, after which
  ``alerts_to`` is told, once an hour.

A confirmed sign-up also queues each list's welcome email, when the list has one
(:func:`queue_welcome`).

Mail to the partnership's own staff (an approver's request for changes, told to
``[approval] notify``) goes on the same queue with the :data:`STAFF` verdict: always
allowed, and counted against nobody's limits.

Every request does the same work whatever the address's state: the same counts, a token
and a message built, one row written (``skipped`` when nothing is due), so the time a page
takes says nothing about who is subscribed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mailer import urls
from mailer.addresses import mailbox
from mailer.config import Settings
from mailer.sending import alerts
from mailer.store import publications, webmail
from mailer.store.suppression import address_hash, hash_key
from mailer.subscribers import notices

if TYPE_CHECKING:
    from sqlmodel import Session

CONFIRM = "confirm"
MANAGE = "manage"
WELCOME = "welcome"
ALERT = "alert"
APPROVAL = "approval"
# An email the sender could not deliver in this time is given up (and no longer counts).
EXPIRY = dt.timedelta(hours=24)


def network(ip: str) -> str:
    """The network a limit counts for an address: an IPv4 address itself, an IPv6 /64 (one
    household or server can hold a whole /64)."""
    try:
        parsed = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ip.strip()
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{parsed}/64", strict=False))
    return str(parsed)


@dataclass(frozen=True)
class OutgoingVerdict:
    """Whether an email may go now, and the hashes its row is counted by."""

    allowed: bool
    mailbox_key: str
    network_key: str
    cap_reached: bool


# Mail to the partnership's own staff, not to a member of the public: always allowed, and
# counted against no mailbox or network (its rows carry no hashes).
STAFF = OutgoingVerdict(allowed=True, mailbox_key="", network_key="", cap_reached=False)


def decide(
    session: Session, settings: Settings, kind: str, email: str, ip: str, now: dt.datetime
) -> OutgoingVerdict:
    """Take the queue's lock and count every limit for one email (all of them, always)."""
    webmail.lock(session)
    web = settings.web
    key = hash_key(session)
    box = address_hash(key, f"mailbox:{mailbox(email)}")
    net = address_hash(key, f"network:{network(ip)}") if ip else ""
    cooling = now - dt.timedelta(minutes=web.cooling_off_minutes)
    hour, day = now - dt.timedelta(hours=1), now - dt.timedelta(days=1)
    recent = webmail.count(session, cooling, kind=kind, mailbox_key=box)
    today = webmail.count(session, day, mailbox_key=box)
    from_net = webmail.count(session, hour, network_key=net)
    confirmations = webmail.count(session, hour, kind=CONFIRM)
    cap_reached = kind == CONFIRM and confirmations >= web.confirmations_per_hour
    allowed = (
        recent == 0
        and today < web.per_address_per_day
        and (not net or from_net < web.per_ip_per_hour)
        and not cap_reached
    )
    return OutgoingVerdict(allowed, box, net, cap_reached)


def queue(
    session: Session,
    settings: Settings,
    verdict: OutgoingVerdict,
    *,
    kind: str,
    to: str,
    subject: str,
    text: str,
    due: bool,
    now: dt.datetime,
) -> bool:
    """Write the email's row: queued if ``due`` and allowed, else skipped. The message is
    built either way. Whether it was queued."""
    data = notices.message(settings, to, subject, text)
    go = due and verdict.allowed
    webmail.add(
        session,
        kind=kind,
        recipient=to,
        message=data,
        mailbox_key=verdict.mailbox_key,
        network_key=verdict.network_key,
        now=now,
        expires_at=now + EXPIRY,
        skipped=not go,
    )
    if due and verdict.cap_reached:
        _alert_once(session, settings, now)
    return go


def _alert_once(session: Session, settings: Settings, now: dt.datetime) -> None:
    """Tell ``alerts_to`` that the hourly cap held confirmations back, once an hour."""
    if not settings.alerts_to:
        return
    if webmail.count(session, now - dt.timedelta(hours=1), kind=ALERT) > 0:
        return
    cap = settings.web.confirmations_per_hour
    alert = alerts.Alert(
        "sign-up confirmations held back by the hourly cap",
        f"The sign-up form asked for more than {cap} confirmation emails within an hour, "
        "so no more are being sent until the hour has passed. A flood of sign-ups like this "
        "is usually someone using the form against other people's inboxes.\n\n"
        "Nobody has to do anything: people who were not sent a confirmation can sign up "
        "again later. If the sign-ups are genuine (a mailing to invite people, say), raise "
        "confirmations_per_hour under [web] in mailer.toml.\n",
    )
    data = alerts.message(settings, alert, settings.alerts_to)
    for address in settings.alerts_to:
        webmail.add(
            session,
            kind=ALERT,
            recipient=address,
            message=data,
            mailbox_key="",
            network_key="",
            now=now,
            expires_at=now + EXPIRY,
        )


# --- welcome mail -------------------------------------------------------------------------

# The folder of the welcome texts, one per list: welcome/SLUG.txt in the newsletter folder.
WELCOME_FOLDER = "welcome"
# Replaced in a welcome text by the link to the latest published issue.
LATEST_ISSUE = "{latest_issue}"


def welcome_file(settings: Settings, slug: str) -> Path:
    return settings.root / WELCOME_FOLDER / f"{slug}.txt"


def queue_welcome(
    session: Session,
    settings: Settings,
    *,
    to: str,
    list_slug: str,
    list_name: str,
    preferences_link: str,
    now: dt.datetime,
) -> bool:
    """Queue the list's welcome email after a confirmed sign-up, if the list has one
    (``welcome/SLUG.txt``); whether it did. Not counted against the person's limits: only
    a confirmation they pressed leads here."""
    path = welcome_file(settings, list_slug)
    if not path.is_file():
        return False
    latest = max(publications.published(session), default=None)
    link = urls.issue_url(settings, latest) if latest else urls.archive_url(settings)
    text = (
        path.read_text(encoding="utf-8").replace(LATEST_ISSUE, link).rstrip()
        + f"\n\nChange your choices or unsubscribe at any time:\n\n{preferences_link}\n\n"
        + f"{settings.footer.postal_address}\n"
    )
    data = notices.message(settings, to, f"Welcome to {list_name}", text)
    webmail.add(
        session,
        kind=WELCOME,
        recipient=to,
        message=data,
        mailbox_key="",
        network_key="",
        now=now,
        expires_at=now + EXPIRY,
    )
    return True
