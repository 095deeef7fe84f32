"""Every status mailer stores, as ``StrEnum``\\ s, and the rules for moving between them.

This module imports nothing heavy, so the command line can name these values in its
options without loading the database layer. Each status has one owner of its transitions:

- :data:`SUBSCRIBER_TRANSITIONS` and :data:`BACK_TO_ACTIVE`, applied by this module's own
  writers, :func:`set_subscriber_status` and :func:`mark_subscribers`, the only code that
  writes a person's status (``tests/test_architecture.py`` checks it);
- :data:`SEND_TRANSITIONS`, applied by :func:`mailer.store.sends.transition` (a
  compare-and-set, so two processes never both move one send);
- delivery rows are moved only by the ledger writer (:mod:`mailer.store.deliveries`);
- an approval request is decided once, from ``pending``, by the compare-and-set of
  :func:`mailer.store.reviews.decide`: its link works once.

A send's life::

    new ──► sending ──► sent ──(retry failed)──► sending
     │        │  ▲  └───────────────────────────► cancelled
     │        ▼  │
     │      paused ──► cancelled
     └──────────────► cancelled

A send may have several workers at once (mailer.store.send_workers): its status is the
send's, not a worker's, so a pause or a cancel from anywhere stops every one of them.

A *schedule* (a row in the schedule table) is a different thing from a send: it says when
a send will be created. A send exists only once it has been started.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from mailer.clock import utcnow
from mailer.errors import StateError


class SubscriberStatus(StrEnum):
    """Whether a person can be mailed at all."""

    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"  # from everything
    BOUNCED = "bounced"  # the address does not exist any more
    COMPLAINED = "complained"  # marked a newsletter as spam
    ERASED = "erased"  # personal data deleted on request; only a hash is kept


class MembershipStatus(StrEnum):
    """Whether a person is on one particular list."""

    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"


class LawfulBasis(StrEnum):
    """The UK GDPR lawful basis for mailing a person on a list (Article 6(1))."""

    CONSENT = "consent"
    LEGITIMATE_INTERESTS = "legitimate-interests"
    PUBLIC_TASK = "public-task"


class SuppressionReason(StrEnum):
    """Why an address hash is on the suppression list."""

    ERASED = "erased"


class SendStatus(StrEnum):
    """What a send is doing."""

    NEW = "new"  # created; its recipients are fixed when it first runs
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    CANCELLED = "cancelled"


class PauseReason(StrEnum):
    """Why a send is paused: the worker decides by this whether to resume it on its own."""

    OPERATOR = "operator"  # `mailer pause`
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM on `mailer send`
    WORKER_STOPPED = "worker-stopped"  # the worker was stopped; the next one resumes it
    UNAVAILABLE = "unavailable"  # the server was down or refused the login
    FAILURES = "failures"  # too many failures in a row
    ERROR = "error"  # the ledger could not be written, or a bug
    DAILY_LIMIT = "daily-limit"  # the relay's recipients a day are used: resumed the next day

    @property
    def resumes_by_itself(self) -> bool:
        """Whether `mailer worker` resumes a send paused for this reason without a person."""
        return self in (
            PauseReason.WORKER_STOPPED,
            PauseReason.UNAVAILABLE,
            PauseReason.DAILY_LIMIT,
        )


class DeliveryStatus(StrEnum):
    """One recipient's copy.

    ``in-flight`` is committed before the message goes to the server and replaced by the
    outcome after it, so a crash leaves at most the rows each connection had claimed (and
    the sender's journal tells which of those it had begun: mailer.sending.journal).
    ``unknown`` is a copy that may or may not have been accepted (the line dropped after
    the whole message was sent, or a crash left it in flight): it is never sent again
    unless someone asks (``mailer send SLUG --resend-unknown``). ``skipped`` is a person
    who could no longer be mailed when their row was claimed (unsubscribed, bounced...).
    """

    PENDING = "pending"
    IN_FLIGHT = "in-flight"
    SENT = "sent"
    FAILED_TEMPORARY = "failed-temporary"
    FAILED_PERMANENT = "failed-permanent"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"


class BounceKind(StrEnum):
    """What a message that came back to mailer was (see mailer.bounces.policy)."""

    HARD = "hard"  # the address is gone (5.1.1, 5.2.1...): bounced at once
    FULL = "full"  # the mailbox is full (5.2.2): counted like a temporary failure
    SOFT = "soft"  # a temporary failure: bounced after several sends in a row
    POLICY = "policy"  # refused for policy or reputation, or our sender: the send is flagged
    COMPLAINT = "complaint"  # marked as spam (an ARF feedback report)
    UNSUBSCRIBE = "unsubscribe"  # the List-Unsubscribe mailto: was used
    DELAYED = "delayed"  # a warning that delivery is still being tried: changes nothing
    DELIVERED = "delivered"  # a report of a successful delivery: changes nothing
    AUTO_REPLY = "auto-reply"  # an out-of-office or other automatic reply: never a bounce
    UNRECOGNISED = "unrecognised"  # not understood, or about nobody mailer sent to
    QUARANTINED = "quarantined"  # beyond the reading limits: kept aside, never read
    REACTIVATED = "reactivated"  # an operator undid a bounce or complaint (not a message)


class ScheduleKind(StrEnum):
    ONCE = "once"  # one issue at one time
    MONTHLY = "monthly"  # a monthly slot that sends that month's approved issue


class ScheduleStatus(StrEnum):
    ACTIVE = "active"
    DONE = "done"  # a one-off that has run
    MISSED = "missed"  # a one-off seen later than the grace period: never sent late
    FAILED = "failed"  # a one-off that could not be sent (not approved, unknown list...)
    CANCELLED = "cancelled"


# Which subscriber status may follow which, besides a return to active. A stronger signal
# replaces a weaker one (a complaint beats an unsubscribe), never the reverse, and nothing
# follows erasure.
_SUB = SubscriberStatus
SUBSCRIBER_TRANSITIONS: dict[SubscriberStatus, frozenset[SubscriberStatus]] = {
    _SUB.ACTIVE: frozenset({_SUB.UNSUBSCRIBED, _SUB.BOUNCED, _SUB.COMPLAINED, _SUB.ERASED}),
    _SUB.BOUNCED: frozenset({_SUB.UNSUBSCRIBED, _SUB.COMPLAINED, _SUB.ERASED}),
    _SUB.UNSUBSCRIBED: frozenset({_SUB.COMPLAINED, _SUB.ERASED}),
    _SUB.COMPLAINED: frozenset({_SUB.ERASED}),
    _SUB.ERASED: frozenset(),
}

# The only ways back to active, each a reason and the statuses it may undo:
# - a person's own confirmed sign-up (the link mailed to them, or their preferences page)
#   undoes their unsubscribing or a bounce (their mailbox answered); never a complaint or an
#   erasure, which a web form cannot undo;
# - an operator who finds that a bounce or a complaint was recorded in error (`mailer
#   subscribers reactivate`), with a reason kept in the person's history. Nobody who
#   unsubscribed or was erased comes back so.
CONFIRMED_SIGN_UP = "confirmed sign-up"
# A person added to a list starts active (mailer.store.joining).
NEW_SUBSCRIBER = _SUB.ACTIVE
OPERATOR_REACTIVATION = "reactivated by an operator"
BACK_TO_ACTIVE: dict[str, frozenset[SubscriberStatus]] = {
    CONFIRMED_SIGN_UP: frozenset({_SUB.UNSUBSCRIBED, _SUB.BOUNCED}),
    OPERATOR_REACTIVATION: frozenset({_SUB.BOUNCED, _SUB.COMPLAINED}),
}
REACTIVATABLE = BACK_TO_ACTIVE[OPERATOR_REACTIVATION]


def subscriber_may_become(
    old: SubscriberStatus, new: SubscriberStatus, because: str | None = None
) -> bool:
    """Whether a person who is ``old`` may become ``new``; a return to active needs one of
    the reasons of :data:`BACK_TO_ACTIVE` as ``because``."""
    if new == _SUB.ACTIVE:
        return old in BACK_TO_ACTIVE.get(because or "", frozenset())
    return new in SUBSCRIBER_TRANSITIONS[old]


def subscriber_may_be_reactivated(old: SubscriberStatus) -> bool:
    return subscriber_may_become(old, _SUB.ACTIVE, OPERATOR_REACTIVATION)


# The writers. They take the subscriber row (or its Core table) from the caller rather than
# importing the models, which import this module for its enums: nothing heavy is loaded here.


def set_subscriber_status(
    session: Any,
    subscriber: Any,
    new: SubscriberStatus,
    *,
    because: str | None = None,
    strict: bool = True,
    now: dt.datetime | None = None,
) -> bool:
    """Move one person (a ``Subscriber`` row in ``session``) to ``new``; True if it changed,
    False if it was already there.

    A transition the rules above do not allow raises :class:`StateError`, or with
    ``strict=False`` is ignored (a late bounce for someone who already unsubscribed).
    """
    old = SubscriberStatus(subscriber.status)
    if old == new:
        return False
    if not subscriber_may_become(old, new, because):
        if not strict:
            return False
        raise StateError(f"a subscriber who is {old} cannot become {new}")
    subscriber.status = new
    subscriber.updated = now or utcnow()
    session.add(subscriber)
    return True


def mark_subscribers(connection: Any, table: Any, ids: Iterable[int], new: SubscriberStatus) -> int:
    """The set-based form of ``set_subscriber_status(strict=False)``, for senders that
    record many at once: ``table`` is the subscriber table (Core). How many changed."""
    chosen = list(ids)
    if not chosen:
        return 0
    may = [s for s in SubscriberStatus if subscriber_may_become(s, new)]
    result = connection.execute(
        table.update()
        .where(table.c.id.in_(chosen), table.c.status.in_(may))
        .values(status=new, updated=utcnow())
    )
    return int(result.rowcount)


# For each send status, the statuses a send may come from (the diagram above).
_S = SendStatus
SEND_TRANSITIONS: dict[SendStatus, frozenset[SendStatus]] = {
    _S.NEW: frozenset(),
    _S.SENDING: frozenset({_S.NEW, _S.PAUSED, _S.SENT}),
    _S.PAUSED: frozenset({_S.SENDING}),
    _S.SENT: frozenset({_S.SENDING}),
    _S.CANCELLED: frozenset({_S.NEW, _S.PAUSED, _S.SENDING}),
}
# A send in one of these is not finished: a new send of the same issue must wait.
OPEN_SENDS = (_S.NEW, _S.SENDING, _S.PAUSED)


# -- the public web side (revision 0009) ------------------------------------------------------


class UnsubscribeMethod(StrEnum):
    """How a person unsubscribed, recorded with when (see mailer.store.optouts)."""

    ONE_CLICK = "one-click"  # the mail program's button: an RFC 8058 POST
    WEB_PAGE = "web-page"  # the button on the unsubscribe page
    PREFERENCES = "preferences"  # the preferences page
    EMAIL = "email"  # the mailto: in List-Unsubscribe, read by a command


class PublishedBy(StrEnum):
    """What made an issue public in the archive and the feed."""

    SEND = "send"  # its first send to a list started
    COMMAND = "command"  # `mailer publish`


# -- approval by the approvers themselves (revision 0019) -------------------------------------


class ApprovalMethod(StrEnum):
    """How an approval was given."""

    COMMAND = "command"  # `mailer approve --by NAME`: a name typed at this machine
    LINK = "link"  # the approver's button, behind the link mailed to their address


class RequestStatus(StrEnum):
    """An approval request: pending until its approver decides, once."""

    PENDING = "pending"
    APPROVED = "approved"
    CHANGES_REQUESTED = "changes-requested"


class WebMailStatus(StrEnum):
    """Where an email the web side queued stands (:mod:`mailer.store.webmail` moves it).

    ``queued ──► sending ──► sent``; ``sending ──► queued`` again after a temporary
    failure (tried later), or ``──► failed`` after a permanent one or its expiry. A
    ``skipped`` row was never meant to go: the form asked for nothing that needed mail, or
    a limit held it back; it is written all the same, so every form does the same work.
    """

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


# The rows that count against the limits: mail that went, or may still go.
WEB_MAIL_COUNTED = (WebMailStatus.QUEUED, WebMailStatus.SENDING, WebMailStatus.SENT)
