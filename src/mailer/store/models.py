"""The database tables (SQLModel) and the status enums stored in them.

Layout of this file
===================
The status enums live in :mod:`mailer.store.status`, which imports nothing heavy.

1. Shared column types and conventions: every timestamp is a timezone-aware UTC
   ``datetime`` in Python, stored as naive UTC by :class:`UTCDateTime`, so SQLite (which has
   no time zones) and other databases hold the same values; every enum is a ``StrEnum``
   stored by its value (``"legitimate-interests"``, not ``LEGITIMATE_INTERESTS``) in a
   plain VARCHAR, so adding a value later needs no table rebuild.
2. Subscribers (Alembic revision 0001): ``mailing_list``, ``subscriber``, ``membership``,
   ``consent`` and ``suppression``.
3. Sending (a later revision): append new tables at the end of this file, under their own
   heading, and create them in a new file under ``migrations/versions/``. Never change
   revision 0001; ``tests/test_db.py`` checks that upgrading an empty database gives
   exactly the tables declared here.

Constraint names follow ``SQLModel.metadata.naming_convention`` below, because Alembic's
batch mode needs named constraints to rebuild SQLite tables in later migrations.

Personal data lives only in ``subscriber`` (address, name, organisation) and in consent
sources typed by people. Erasure blanks those and keeps a keyed hash of the address in
``suppression``; see :func:`mailer.store.erase`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from enum import StrEnum
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Column, Field, SQLModel

from mailer.clock import utcnow
from mailer.store.status import (
    ApprovalMethod,
    BounceKind,
    DeliveryStatus,
    LawfulBasis,
    MembershipStatus,
    PauseReason,
    PublishedBy,
    RequestStatus,
    ScheduleKind,
    ScheduleStatus,
    SendStatus,
    SubscriberStatus,
    SuppressionReason,
    UnsubscribeMethod,
    WebMailStatus,
)

__all__ = [
    "Approval",
    "ApprovalMethod",
    "ApprovalRequest",
    "BounceEvent",
    "BounceKind",
    "Consent",
    "Delivery",
    "DeliveryStatus",
    "IssueSave",
    "LawfulBasis",
    "Lease",
    "LinkClick",
    "MailingList",
    "Membership",
    "MembershipStatus",
    "Meta",
    "PauseReason",
    "Publication",
    "PublishedBy",
    "RelaySlot",
    "RequestStatus",
    "Schedule",
    "ScheduleKind",
    "ScheduleStatus",
    "Send",
    "SendList",
    "SendStatus",
    "SendWorker",
    "Signup",
    "Subscriber",
    "SubscriberStatus",
    "Suppression",
    "SuppressionReason",
    "UTCDateTime",
    "UnsubscribeMethod",
    "Unsubscription",
    "WebMail",
    "WebMailStatus",
    "as_utc",
    "table_of",
    "utcnow",
]

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# --- 1. Shared types ---------------------------------------------------------------------


def as_utc(moment: dt.datetime) -> dt.datetime:
    """``moment`` as an aware UTC datetime; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def table_of(model: type[SQLModel]) -> sa.Table:
    """The Core table behind a model, for set-based inserts and updates."""
    return cast(sa.Table, sa.inspect(model).local_table)


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """An aware datetime converted to UTC on the way in and marked as UTC on the way out.

    Naive datetimes are refused rather than guessed at: a wall-clock time without a zone is
    an hour out for half the year in the UK.
    """

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            raise ValueError(f"expected a timezone-aware datetime, got {value!r}")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        # A bulk insert binds the same "now" to every row; converting and formatting it
        # 200,000 times took a quarter of a 100,000-row import. Remember the last value.
        # The cache is one tuple, replaced in a single assignment, so threads sharing this
        # compiled statement never see a value paired with another value's result.
        convert = super().bind_processor(dialect)
        cache: tuple[Any, Any] = (object(), None)

        def process(value: Any) -> Any:
            nonlocal cache
            last = cache
            if value is last[0]:
                return last[1]
            result = convert(value) if convert else value
            cache = (value, result)
            return result

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC)


def _enum(kind: type[StrEnum], name: str) -> sa.Enum:
    """A StrEnum column stored by value as VARCHAR(20), without a database enum type."""
    return sa.Enum(
        kind,
        name=name,
        native_enum=False,
        create_constraint=False,
        length=20,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


# --- 2. Subscribers (revision 0001) ----------------------------------------------------------


class MailingList(SQLModel, table=True):
    __tablename__ = "mailing_list"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=200)
    description: str = Field(default="", max_length=2000)
    created: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Offered on the sign-up form and the preferences page (revision 0009).
    public: bool = Field(default=False)


class Subscriber(SQLModel, table=True):
    """One person, identified by their normalised address.

    An erased person keeps this row as a tombstone (``email`` NULL, name and organisation
    blank, status ``erased``) so records of past sends that point at it stay valid.
    """

    __tablename__ = "subscriber"

    id: int | None = Field(default=None, primary_key=True)
    email: str | None = Field(default=None, max_length=320, unique=True)
    name: str = Field(default="", max_length=200)
    organisation: str = Field(default="", max_length=200)
    status: SubscriberStatus = Field(
        default=SubscriberStatus.ACTIVE,
        sa_column=Column(_enum(SubscriberStatus, "subscriber_status"), nullable=False),
    )
    created: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Membership(SQLModel, table=True):
    """A person on a list. Unsubscribing keeps the row, so the unsubscribe is remembered."""

    __tablename__ = "membership"
    __table_args__ = (sa.Index(None, "list_id", "status"),)

    subscriber_id: int = Field(foreign_key="subscriber.id", primary_key=True, ondelete="CASCADE")
    list_id: int = Field(foreign_key="mailing_list.id", primary_key=True, ondelete="RESTRICT")
    status: MembershipStatus = Field(
        default=MembershipStatus.SUBSCRIBED,
        sa_column=Column(_enum(MembershipStatus, "membership_status"), nullable=False),
    )
    changed_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# The longest consent source kept (an import file's name, and reactivation notes).
CONSENT_SOURCE_LENGTH = 500


class Consent(SQLModel, table=True):
    """Why a person is on a list: the evidence a partnership shows when asked (UK GDPR Art. 30)."""

    __tablename__ = "consent"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["subscriber_id", "list_id"],
            ["membership.subscriber_id", "membership.list_id"],
            ondelete="CASCADE",
        ),
    )

    subscriber_id: int = Field(primary_key=True)
    list_id: int = Field(primary_key=True)
    basis: LawfulBasis = Field(sa_column=Column(_enum(LawfulBasis, "lawful_basis"), nullable=False))
    # Where the address came from: an import file's name, "web form", or the command used;
    # then any operator's reactivation, with its reason (store.people.reactivate).
    source: str = Field(max_length=CONSENT_SOURCE_LENGTH)
    recorded_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Set when a web sign-up is confirmed by clicking the link in the confirmation email.
    confirmed_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)


class Suppression(SQLModel, table=True):
    """An address that must never be imported or mailed again, kept only as a keyed hash."""

    __tablename__ = "suppression"

    id: int | None = Field(default=None, primary_key=True)
    # HMAC-SHA256 of the normalised address, keyed with the suppression key (store/keys.py).
    email_hash: str = Field(max_length=64, unique=True)
    reason: SuppressionReason = Field(
        sa_column=Column(_enum(SuppressionReason, "suppression_reason"), nullable=False)
    )
    created: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# --- 3. Sending (revision 0002; pause_reason from 0004) ------------------------------------


class Approval(SQLModel, table=True):
    """Who approved which compiled content of an issue; sends require a matching one."""

    __tablename__ = "approval"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=64, index=True)
    content_hash: str = Field(max_length=64)
    approved_by: str = Field(max_length=200)
    approved_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # JSON: the subject and a hash per section, so a refusal can say what changed.
    summary: str = Field(default="{}", sa_type=sa.Text)
    # How it was given (revision 0019): None before, when every approval was typed.
    method: ApprovalMethod | None = Field(
        default=None, sa_column=Column(_enum(ApprovalMethod, "approval_method"), nullable=True)
    )
    # The content as readers get it in text (revision 0019), for the next approver's diff.
    content_text: str | None = Field(default=None, sa_type=sa.Text)


class Send(SQLModel, table=True):
    """One issue, frozen as compiled and approved, going to one or more lists."""

    __tablename__ = "send"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=64, index=True)
    content_hash: str = Field(max_length=64)
    subject: str = Field(max_length=500)
    html: str = Field(sa_type=sa.Text)
    text: str = Field(sa_type=sa.Text)
    status: SendStatus = Field(
        default=SendStatus.NEW,
        sa_column=Column(_enum(SendStatus, "send_status"), nullable=False, index=True),
    )
    status_reason: str = Field(default="", max_length=1000)
    approved_by: str = Field(default="", max_length=200)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    scheduled_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    started_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    # When the send last changed hands: started, resumed or paused. The processes sending
    # it, and their leases, are in ``send_worker`` (revision 0012).
    heartbeat_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Fixed when the send starts: the number of rows in its ledger.
    total: int | None = None
    # Why a paused send stopped: the worker resumes some reasons by itself (revision 0004).
    pause_reason: PauseReason | None = Field(
        default=None, sa_column=Column(_enum(PauseReason, "pause_reason"), nullable=True)
    )
    # Why it was sent despite errors from the preflight checks (revision 0007).
    checks_skipped: str | None = Field(default=None, max_length=500)
    # The transport it was created for (revision 0011): a send through the outbox is a
    # rehearsal, which never counts as delivered for a later real send. None before 0011.
    transport: str | None = Field(default=None, max_length=20)
    # The issue's own settings (organisation, sender's name...), as JSON, frozen with it.
    overrides: str | None = Field(default=None, max_length=4000)


class SendList(SQLModel, table=True):
    """The lists a send goes to."""

    __tablename__ = "send_list"

    send_id: int = Field(foreign_key="send.id", primary_key=True, ondelete="CASCADE")
    list_id: int = Field(foreign_key="mailing_list.id", primary_key=True, ondelete="RESTRICT")


class Delivery(SQLModel, table=True):
    """The ledger: one row per (send, subscriber), from pending to its outcome.

    The address is copied here when the send starts, so the send delivers to the
    addresses it was approved for; erasure blanks it (see suppression.erase).
    """

    __tablename__ = "delivery"
    __table_args__ = (
        sa.UniqueConstraint("send_id", "subscriber_id"),
        # In ledger order within a status, so a claim of the next pending rows reads only
        # those (revision 0012; it was on send_id and status alone).
        sa.Index(None, "send_id", "status", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    send_id: int = Field(foreign_key="send.id", ondelete="CASCADE")
    subscriber_id: int = Field(foreign_key="subscriber.id", ondelete="CASCADE")
    email: str = Field(max_length=320)
    name: str = Field(default="", max_length=200)
    status: DeliveryStatus = Field(
        default=DeliveryStatus.PENDING,
        sa_column=Column(_enum(DeliveryStatus, "delivery_status"), nullable=False),
    )
    attempts: int = 0
    last_error: str = Field(default="", max_length=1000)
    message_id: str = Field(default="", max_length=200)
    sent_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    updated_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The worker ("host:pid:start") that claimed the row, kept with its outcome
    # (revision 0012): a worker that dies leaves its own rows in flight, and only those.
    claimed_by: str | None = Field(default=None, max_length=200)


# --- 4. Scheduling (revision 0003) -----------------------------------------------------------


class Schedule(SQLModel, table=True):
    """When to send what; the worker claims ``next_run_at`` with a compare-and-set."""

    __tablename__ = "schedule"

    id: int | None = Field(default=None, primary_key=True)
    kind: ScheduleKind = Field(
        sa_column=Column(_enum(ScheduleKind, "schedule_kind"), nullable=False)
    )
    slug: str | None = Field(default=None, max_length=64)
    rule: str | None = Field(default=None, max_length=100)
    # JSON list of list slugs.
    lists: str = Field(default="[]", max_length=2000)
    status: ScheduleStatus = Field(
        default=ScheduleStatus.ACTIVE,
        sa_column=Column(_enum(ScheduleStatus, "schedule_status"), nullable=False),
    )
    next_run_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_run_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_outcome: str = Field(default="", max_length=1000)
    last_send_id: int | None = Field(default=None, foreign_key="send.id", ondelete="SET NULL")
    # Why its sends may go despite errors from the preflight checks (revision 0007).
    checks_skipped: str | None = Field(default=None, max_length=500)
    # When its current slot first failed for a reason a person can fix (revision 0011):
    # the slot is tried again on every look until the grace period ends.
    failing_since: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)


# --- 5. Settings kept with the data (revision 0005) ----------------------------------------


class Meta(SQLModel, table=True):
    """Facts about the database itself: the signing key's fingerprint, and the key of the
    suppression hashes wrapped with the signing key (see mailer.store.keys)."""

    __tablename__ = "meta"

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=2000)


# --- 6. Bounces, complaints and unsubscribe emails (revision 0008) ---------------------------


class BounceEvent(SQLModel, table=True):
    """One thing learnt from a message that came back: a bounce, a complaint, an unsubscribe.

    ``key`` is the message's Message-ID (or a hash of it) with the position of the report in
    it, and unique, so processing the same message twice records nothing new. ``action``
    says what mailer changed because of it, and ``source`` where the message was read, so
    ``mailer subscribers show`` can say why a person's status changed.
    """

    __tablename__ = "bounce_event"
    __table_args__ = (
        sa.Index(None, "send_id", "kind"),
        sa.Index(None, "subscriber_id", "send_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=200, unique=True)
    kind: BounceKind = Field(sa_column=Column(_enum(BounceKind, "bounce_kind"), nullable=False))
    send_id: int | None = Field(default=None, foreign_key="send.id", ondelete="SET NULL")
    subscriber_id: int | None = Field(
        default=None, foreign_key="subscriber.id", ondelete="SET NULL"
    )
    delivery_id: int | None = Field(default=None, foreign_key="delivery.id", ondelete="SET NULL")
    # The enhanced status code (RFC 3463) such as 5.1.1, or "" when there is none.
    status: str = Field(default="", max_length=20)
    # The remote server's words (Diagnostic-Code) or the complaint type; blanked on erasure.
    reason: str = Field(default="", max_length=1000)
    source: str = Field(default="", max_length=200)
    action: str = Field(default="", max_length=200)
    received_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    # Tied to its copy by a MAC mailer made (revision 0014); an unverified report changes
    # nobody until an operator applies it (`mailer bounces apply`).
    verified: bool = Field(default=True, sa_column_kwargs={"server_default": sa.true()})
    # The address an unverified report names; blanked on erasure.
    address: str = Field(default="", max_length=320, sa_column_kwargs={"server_default": ""})


# --- 7. The public web side (revision 0009; mailing_list.public) ------------------------------


class Publication(SQLModel, table=True):
    """An issue shown in the archive and the feed; an issue without a row is a draft."""

    __tablename__ = "publication"

    slug: str = Field(max_length=64, primary_key=True)
    published_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    published_by: PublishedBy = Field(
        sa_column=Column(_enum(PublishedBy, "published_by"), nullable=False)
    )


class Signup(SQLModel, table=True):
    """A sign-up from the web form: pending until its link is confirmed, then the evidence
    of consent (when, from which IP address, the wording shown). The address, name and
    organisation are blanked once they are copied to the subscriber."""

    __tablename__ = "signup"

    id: int | None = Field(default=None, primary_key=True)
    email: str | None = Field(default=None, max_length=320, index=True)
    name: str = Field(default="", max_length=200)
    organisation: str = Field(default="", max_length=200)
    # JSON list of the list slugs ticked on the form.
    lists: str = Field(default="[]", max_length=2000)
    wording: str = Field(sa_type=sa.Text)
    requested_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    requested_ip: str = Field(default="", max_length=64)
    confirmed_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    confirmed_ip: str = Field(default="", max_length=64)
    subscriber_id: int | None = Field(
        default=None, foreign_key="subscriber.id", ondelete="CASCADE", index=True
    )


class Unsubscription(SQLModel, table=True):
    """When and how someone unsubscribed; list_id NULL means from everything."""

    __tablename__ = "unsubscription"

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id", ondelete="CASCADE", index=True)
    list_id: int | None = Field(default=None, foreign_key="mailing_list.id", ondelete="CASCADE")
    send_id: int | None = Field(default=None, foreign_key="send.id", ondelete="SET NULL")
    method: UnsubscribeMethod = Field(
        sa_column=Column(_enum(UnsubscribeMethod, "unsubscribe_method"), nullable=False)
    )
    at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class LinkClick(SQLModel, table=True):
    """How many times a link of an issue was followed; never who followed it."""

    __tablename__ = "link_click"
    __table_args__ = (sa.UniqueConstraint("slug", "url"),)

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=64)
    url: str = Field(max_length=2000)
    clicks: int = 0


# --- 8. Several senders on one send (revision 0012) ------------------------------------------


class SendWorker(SQLModel, table=True):
    """A process working on a send, and its lease.

    The worker renews ``expires_at`` with its ledger commits. One that is gone (its process
    is missing from this machine's process table, or, on another machine, its lease has
    expired) is dead: another worker turns the rows it held in flight into ``unknown`` and
    deletes this row (see mailer.store.send_workers).
    """

    __tablename__ = "send_worker"

    send_id: int = Field(foreign_key="send.id", primary_key=True, ondelete="CASCADE")
    # "host:pid:start", as in delivery.claimed_by.
    worker: str = Field(primary_key=True, max_length=200)
    connections: int = 0
    joined_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    heartbeat_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RelaySlot(SQLModel, table=True):
    """The rate limits of a relay, shared by every worker that sends through it.

    A limit of N messages per window is N slots. A message takes a free slot whose last
    message ended a full window ago, holds it while it is on its way, and frees it with the
    time its reply came (see mailer.sending.ratelimit). The ``pace`` row (slot 0) holds the
    earliest time the next message may start, which spaces starts ``1 / rate`` apart.
    """

    __tablename__ = "relay_slot"

    # The relay and the account on it, e.g. "news@example.org@smtp.example.org:587".
    relay: str = Field(primary_key=True, max_length=300)
    # "second", "hour" or "pace".
    kind: str = Field(primary_key=True, max_length=10)
    slot: int = Field(primary_key=True)
    # The worker whose message holds the slot, from its start to its end; None when free.
    holder: str | None = Field(default=None, max_length=200)
    started_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    ended_at: dt.datetime = Field(sa_type=UTCDateTime)


# --- 9. Leases (revision 0013) ----------------------------------------------------------------


class Lease(SQLModel, table=True):
    """A job only one worker may run at a time (deciding what is due, reading the bounce
    mailbox): the worker that holds it, until when, and a term that grows by one whenever
    it changes hands, so a holder that lost it can no longer write as if it still had it."""

    __tablename__ = "lease"

    name: str = Field(primary_key=True, max_length=40)
    holder: str | None = Field(default=None, max_length=200)
    term: int = 0
    acquired_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    expires_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)


# --- 10. Approval by the approvers themselves (revision 0019) ---------------------------------


class ApprovalRequest(SQLModel, table=True):
    """An issue's content mailed to one approver, with a link that decides once.

    The link's token names the row; the row names the approver and the content it is for,
    so a link works only for its own approver and only while the issue is that content.
    """

    __tablename__ = "approval_request"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=64, index=True)
    content_hash: str = Field(max_length=64)
    # The address the link was mailed to, from [approval] approvers in mailer.toml.
    approver: str = Field(max_length=320)
    requested_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    status: RequestStatus = Field(
        default=RequestStatus.PENDING,
        sa_column=Column(_enum(RequestStatus, "request_status"), nullable=False),
    )
    decided_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Why the approver asked for changes.
    reason: str | None = Field(default=None, max_length=2000)
    # The content as readers get it in text, shown (and compared) on the approval page.
    content_text: str = Field(default="", sa_type=sa.Text)


class IssueSave(SQLModel, table=True):
    """A save of an issue in ``mailer edit``, for ``mailer history``."""

    __tablename__ = "issue_save"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=64, index=True)
    saved_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The login name of who saved it on this machine.
    saved_by: str = Field(default="", max_length=200)
    # The content hash of what was saved, when it built.
    content_hash: str | None = Field(default=None, max_length=64)


# --- The web side's outgoing mail (revision 0020) -----------------------------------------


class WebMail(SQLModel, table=True):
    """An email the web side asked for (a confirmation, a link to manage a subscription, a
    welcome, an alert), sent by a background sender so no page waits for a mail server.

    The address and the message are kept only while the email may still go; afterwards the
    row keeps keyed hashes of the mailbox and the network, for the limits, until it is
    purged (:mod:`mailer.store.webmail`).
    """

    __tablename__ = "web_mail"
    __table_args__ = (
        sa.Index(None, "status", "next_try_at"),
        sa.Index(None, "mailbox_key", "queued_at"),
        sa.Index(None, "network_key", "queued_at"),
        sa.Index(None, "kind", "queued_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # confirm, manage, welcome or alert.
    kind: str = Field(max_length=20)
    status: WebMailStatus = Field(
        default=WebMailStatus.QUEUED,
        sa_column=Column(_enum(WebMailStatus, "web_mail_status"), nullable=False),
    )
    recipient: str = Field(default="", max_length=320)
    message: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    # Keyed hashes of the mailbox as delivered and of the sender's network (/32 or /64).
    mailbox_key: str = Field(default="", max_length=64)
    network_key: str = Field(default="", max_length=64)
    queued_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    next_try_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    attempts: int = 0
    # Until when a sender's claim holds; a sender that died lets its rows go after it.
    claimed_until: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str = Field(default="", max_length=500)


# -- Relay webhooks (revision 0021) ------------------------------------------------------------


class WebhookNonce(SQLModel, table=True):
    """A one-time value a relay's signed request carried (Mailgun's token, an SNS MessageId),
    with a hash of what it signed, so a request replayed is recognised: the same body again
    changes nothing, another body under the same value is refused."""

    __tablename__ = "webhook_nonce"
    __table_args__ = (sa.UniqueConstraint("provider", "nonce"),)

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=20)
    nonce: str = Field(max_length=200)
    digest: str = Field(max_length=64)
    received_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
