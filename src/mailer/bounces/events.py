"""Relays' webhook events: what each provider's payload says, and what it changes.

Each parser turns one provider's documented payload into :class:`Event` objects: the
provider's own id for the event (the key that makes it idempotent), what it reports about
whom (:class:`~mailer.bounces.diagnose.RecipientFinding`, the categories mailed reports use), and
the ids mailer set on the copy that the event quotes back: the Message-ID (SES, Mailgun,
SendGrid's ``smtp-id``, SMTP2GO when asked to report it) or the header mailer adds for the
relay's profile (:func:`mailer.sending.headers.relay_id`: Postmark's metadata, SendGrid's
unique argument).

:func:`apply` then does what a mailed report would: an event whose id carries mailer's
MAC (:func:`mailer.bounces.process.copy_of_message_id`) goes through
:func:`mailer.bounces.policy.apply_authenticated`; anything else is stored unverified and
changes nobody. Events that report nothing about the person (deliveries, opens, clicks,
delays the relay retries itself) are not recorded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

from mailer.bounces import policy
from mailer.bounces.diagnose import RecipientFinding, status_code
from mailer.bounces.process import copy_of_message_id
from mailer.clock import utcnow
from mailer.config import Settings
from mailer.sending.headers import RELAY_ID
from mailer.store import bounces as store
from mailer.store.database import Database
from mailer.store.status import BounceKind

log = logging.getLogger("mailer.bounces")
K = BounceKind
PROVIDERS = ("ses", "mailgun", "postmark", "sendgrid", "smtp2go")
# At most this many refused requests a provider are recorded an hour; more are only logged,
# so a flood of forgeries cannot fill the database.
REFUSED_PER_HOUR = 100


@dataclass(frozen=True)
class Event:
    """One thing a relay reports about one copy."""

    key: str  # "provider:the provider's id for it", unique
    findings: tuple[RecipientFinding, ...]
    message_ids: tuple[str, ...] = ()  # what the event quotes of the ids mailer set


@dataclass(frozen=True)
class EventsApplied:
    """What a request's events changed."""

    events: int = 0  # events about a person in it
    new: int = 0  # recorded now (the others had been)
    verified: int = 0  # tied to a copy and applied
    actions: tuple[str, ...] = ()


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any, limit: int = 1000) -> str:
    return value.strip()[:limit] if isinstance(value, str) else "" if value is None else str(value)


def _address(value: Any) -> str:
    return parseaddr(_str(value, 400))[1].lower()


def _finding(
    kind: BounceKind, address: Any, status: Any = "", reason: Any = ""
) -> RecipientFinding:
    words = _str(reason)
    return RecipientFinding(_address(address), kind, status_code(_str(status, 40), words), words)


# -- Amazon SES (through SNS) ----------------------------------------------------------------


def ses_events(notification: Mapping[str, Any]) -> list[Event]:
    """An SES notification (the SNS message's ``Message``, parsed)."""
    kind = _str(notification.get("notificationType") or notification.get("eventType"))
    mail = _dict(notification.get("mail"))
    headers = _dict(mail.get("commonHeaders"))
    ids = [_str(headers.get("messageId"))]
    ids += [
        _str(h.get("value"))
        for h in map(_dict, _list(mail.get("headers")))
        if _str(h.get("name")).lower() == "message-id"
    ]
    findings: list[RecipientFinding] = []
    if kind == "Bounce":
        bounce = _dict(notification.get("bounce"))
        kind_of = _ses_bounce(_str(bounce.get("bounceType")), _str(bounce.get("bounceSubType")))
        for r in map(_dict, _list(bounce.get("bouncedRecipients"))):
            reason = r.get("diagnosticCode") or bounce.get("bounceSubType")
            findings.append(_finding(kind_of, r.get("emailAddress"), r.get("status"), reason))
        feedback = _str(bounce.get("feedbackId"), 150)
    elif kind == "Complaint":
        complaint = _dict(notification.get("complaint"))
        if _str(complaint.get("complaintFeedbackType")) == "not-spam":
            return []
        reason = complaint.get("complaintFeedbackType") or "complaint"
        for r in map(_dict, _list(complaint.get("complainedRecipients"))):
            findings.append(_finding(K.COMPLAINT, r.get("emailAddress"), "", reason))
        feedback = _str(complaint.get("feedbackId"), 150)
    else:
        return []
    if not findings or not feedback:
        return []
    return [Event(f"ses:{feedback}", tuple(findings), tuple(i for i in ids if i))]


def _ses_bounce(bounce_type: str, subtype: str) -> BounceKind:
    if bounce_type == "Permanent":
        return K.HARD
    if subtype == "MailboxFull":
        return K.FULL
    if subtype in ("ContentRejected", "AttachmentRejected"):
        return K.POLICY
    return K.SOFT  # Transient, Undetermined: counted, never bounced at once


# -- Mailgun ----------------------------------------------------------------------------------


def mailgun_events(payload: Mapping[str, Any]) -> list[Event]:
    """A Mailgun webhook's ``event-data``."""
    data = _dict(payload.get("event-data"))
    event, event_id = _str(data.get("event")), _str(data.get("id"), 150)
    status = _dict(data.get("delivery-status"))
    words = " ".join(
        _str(status.get(k)) for k in ("code", "message", "description") if status.get(k)
    )
    if event == "failed" and _str(data.get("severity")) == "permanent":
        finding = _finding(K.HARD, data.get("recipient"), status.get("code"), words)
    elif event == "complained":
        finding = _finding(K.COMPLAINT, data.get("recipient"), "", "complaint")
    elif event == "unsubscribed":
        finding = _finding(K.UNSUBSCRIBE, data.get("recipient"), "", "Mailgun unsubscribe link")
    else:
        return []  # temporary failures are retried by Mailgun; deliveries change nothing
    message = _dict(_dict(data.get("message")).get("headers"))
    ids = [_str(message.get("message-id")), _str(_dict(data.get("user-variables")).get(RELAY_ID))]
    if not event_id:
        return []
    return [Event(f"mailgun:{event_id}", (finding,), tuple(i for i in ids if i))]


# -- SendGrid ---------------------------------------------------------------------------------


def sendgrid_events(payload: Any) -> list[Event]:
    """SendGrid's event webhook: a list of events."""
    found = []
    for data in map(_dict, _list(payload)):
        event, event_id = _str(data.get("event")), _str(data.get("sg_event_id"), 150)
        reason = data.get("reason") or data.get("response") or event
        if event == "bounce":
            kind = K.POLICY if _str(data.get("type")) == "blocked" else K.HARD
            finding = _finding(kind, data.get("email"), data.get("status"), reason)
        elif event == "spamreport":
            finding = _finding(K.COMPLAINT, data.get("email"), "", "complaint")
        elif event in ("unsubscribe", "group_unsubscribe"):
            finding = _finding(K.UNSUBSCRIBE, data.get("email"), "", "SendGrid unsubscribe")
        else:
            continue  # dropped (SendGrid's own suppression), deferred, delivered, opens...
        ids = (_str(data.get("smtp-id")), _str(data.get(RELAY_ID)))
        if event_id:
            found.append(Event(f"sendgrid:{event_id}", (finding,), tuple(i for i in ids if i)))
    return found


# -- Postmark ---------------------------------------------------------------------------------

POSTMARK_TYPES = {
    "HardBounce": K.HARD,
    "BadEmailAddress": K.HARD,
    "SoftBounce": K.SOFT,
    "Transient": K.SOFT,
    "DnsError": K.SOFT,
    "SpamNotification": K.POLICY,
    "Blocked": K.POLICY,
    "DMARCPolicy": K.POLICY,
    "SpamComplaint": K.COMPLAINT,
    "Unsubscribe": K.UNSUBSCRIBE,
}


def postmark_events(payload: Mapping[str, Any]) -> list[Event]:
    """A Postmark bounce or spam complaint webhook."""
    record = _str(payload.get("RecordType"))
    if record == "SpamComplaint":
        kind: BounceKind | None = K.COMPLAINT
    elif record == "Bounce":
        kind = POSTMARK_TYPES.get(_str(payload.get("Type")))
    else:
        kind = None
    event_id = _str(payload.get("ID"), 100)
    if kind is None or not event_id:
        return []
    reason = payload.get("Details") or payload.get("Description") or payload.get("Type")
    finding = _finding(kind, payload.get("Email"), "", reason)
    ids = (_str(_dict(payload.get("Metadata")).get(RELAY_ID)),)
    return [Event(f"postmark:{record}:{event_id}", (finding,), tuple(i for i in ids if i))]


# -- SMTP2GO ----------------------------------------------------------------------------------


def smtp2go_events(payload: Mapping[str, Any]) -> list[Event]:
    """An SMTP2GO webhook (JSON or form-encoded, read into one mapping)."""
    event, email_id = _str(payload.get("event")), _str(payload.get("email_id"), 100)
    if event == "bounce":
        kind = K.HARD if _str(payload.get("bounce")) == "hard" else K.SOFT
        finding = _finding(kind, payload.get("rcpt"), "", payload.get("message") or "bounce")
    elif event == "spam":
        finding = _finding(K.COMPLAINT, payload.get("rcpt"), "", "complaint")
    elif event == "unsubscribe":
        finding = _finding(K.UNSUBSCRIBE, payload.get("rcpt"), "", "SMTP2GO unsubscribe footer")
    else:
        return []
    if not email_id:
        return []
    # The Message-ID is reported when the webhook lists it among its email headers.
    headers = payload.get("headers")
    pairs: list[tuple[str, Any]] = list(payload.items())
    pairs += list(_dict(headers).items())
    pairs += [(_str(h.get("name")), h.get("value")) for h in map(_dict, _list(headers))]
    ids = tuple(_str(v) for k, v in pairs if k.lower().replace("_", "-") == "message-id" and v)
    return [Event(f"smtp2go:{email_id}:{event}", (finding,), ids)]


PARSERS: dict[str, Callable[[Any], list[Event]]] = {
    "ses": ses_events,
    "mailgun": mailgun_events,
    "postmark": postmark_events,
    "sendgrid": sendgrid_events,
    "smtp2go": smtp2go_events,
}

# -- What the events change ------------------------------------------------------------------


def _full_ids(ids: Iterable[str], domain: str) -> list[str]:
    # A relay's own header carries only the part before the "@" (headers.relay_id).
    return [i if "@" in i else f"<{i}@{domain}>" for i in ids]


def apply(
    settings: Settings, database: Database, provider: str, events: list[Event]
) -> EventsApplied:
    """Record each event once and act on what it says, as for a mailed report."""
    source = f"webhook {provider}"
    new = verified = 0
    actions: list[str] = []
    for event in events:
        with database.session(write=True) as session:
            if store.seen(session, f"{event.key}#"):
                continue
            new += 1
            target = None
            for message_id in _full_ids(event.message_ids, settings.sender.domain):
                target = copy_of_message_id(session, settings, message_id)
                if target is not None:
                    break
            if target is None:
                policy.store_unverified(
                    session,
                    event.findings,
                    key=event.key,
                    source=source,
                    note="no Message-ID mailer made",
                )
                continue
            _kind, done, tied = policy.apply_authenticated(
                session,
                settings.bounces,
                target,
                event.findings,
                key=event.key,
                source=source,
                how="Message-ID",
            )
            verified += int(tied)
            actions += done
    if events:
        log.info("%s: %d events, %d new, %d applied", source, len(events), new, verified)
    return EventsApplied(len(events), new, verified, tuple(actions))


def refuse(database: Database, provider: str, reason: str, body: bytes) -> None:
    """Keep a refused request for the operator: quarantined, tied to nobody, once per body.

    Only the reason is kept (never the body, which may hold a forger's payload), and at most
    :data:`REFUSED_PER_HOUR` a provider, so a flood of forgeries cannot fill the database.
    """
    source = f"webhook {provider}"
    key = f"{provider}:refused:{hashlib.sha256(body).hexdigest()[:40]}"
    with database.session(write=True) as session:
        if store.seen(session, f"{key}#"):
            return
        if store.count_from(session, source, K.QUARANTINED, utcnow() - dt.timedelta(hours=1)) >= (
            REFUSED_PER_HOUR
        ):
            log.warning("%s: a request was refused (%s); too many to record", source, reason)
            return
        event = store.record(
            session,
            key=f"{key}#0",
            kind=K.QUARANTINED,
            target=None,
            reason=f"refused: {reason}",
            source=source,
            verified=False,
        )
        event.action = "none: refused"
    log.warning("%s: a request was refused: %s", source, reason)
