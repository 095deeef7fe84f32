"""One message in, its result committed: whether it is authenticated, and what changes.

A report changes a person only when it is tied to a copy mailer sent by a MAC mailer
made, which nobody else can forge (:func:`authenticate`):

1. the VERP address it was delivered to (:mod:`mailer.sending.verp`): the pipe's
   ``--recipient``, or an envelope header such as ``Delivered-To`` or ``X-Original-To``;
2. mailer's own ``Message-ID`` quoted in the report (:func:`mailer.tokens.read_message_id`);
3. the unsubscribe token of the quoted original's ``List-Unsubscribe``, or, for an
   unsubscribe email, the token in its subject.

Then :func:`mailer.bounces.policy.apply_authenticated` may change that copy's person, and
nobody else. Anything else is stored unverified (:func:`mailer.bounces.policy.store_unverified`).

A message that cannot be read within the limits is *quarantined*: recorded, kept aside by
the caller (the quarantine folder, or ``.mailer/bounces/quarantine/``), never retried.

Each message is one transaction, keyed by its Message-ID (or a hash of its bytes): a
message processed twice records nothing the second time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mailer import files, tokens
from mailer.bounces import policy
from mailer.bounces.diagnose import Diagnosis, diagnose, limits_of, raw_key
from mailer.config import Settings
from mailer.errors import BadToken, UnreadableMessage
from mailer.sending import verp
from mailer.store import bounces as store
from mailer.store.database import Database
from mailer.store.status import BounceKind

if TYPE_CHECKING:
    from sqlmodel import Session

log = logging.getLogger("mailer.bounces")
K = BounceKind


@dataclass(frozen=True)
class Processed:
    """What one message was and what it changed."""

    key: str
    kind: BounceKind  # the most telling thing it reported; UNRECOGNISED if nothing
    new: bool  # False when it had been processed before: nothing was recorded again
    verified: bool = False  # tied to a copy by a MAC mailer made
    actions: list[str] = field(default_factory=list)  # "subscriber 12: marked bounced"
    why: str = ""  # for a quarantined message: the limit it is beyond

    @property
    def recognised(self) -> bool:
        return self.kind not in (K.UNRECOGNISED, K.QUARANTINED)

    @property
    def quarantined(self) -> bool:
        return self.kind == K.QUARANTINED


def copy_of_message_id(
    session: Session, settings: Settings, message_id: str
) -> store.Target | None:
    """The copy a Message-ID mailer set names, if its MAC is right (for reports and webhooks)."""
    found = tokens.read_message_id(tokens.keys_of(settings), message_id, settings.sender.domain)
    if found is None:
        return None
    send_id, delivery_id = found
    target = store.by_delivery(session, delivery_id)
    return target if target is not None and target.send_id == send_id else None


def copy_of_unsubscribe_token(
    session: Session, settings: Settings, token: str
) -> store.Target | None:
    """The copy an unsubscribe token names, if its MAC is right."""
    try:
        subscriber_id, send_id = tokens.read(tokens.keys_of(settings), tokens.UNSUBSCRIBE, token)
    except (BadToken, ValueError):
        return None
    if not subscriber_id or not send_id:
        return None  # a proof copy: nobody's subscription
    found = store.by_send_and_subscriber(session, send_id, subscriber_id)
    return found or store.Target(None, send_id, subscriber_id)


def authenticate(
    session: Session, settings: Settings, diagnosis: Diagnosis
) -> tuple[store.Target | None, str]:
    """The copy a MAC in the message names, and which MAC; (None, "") when there is none."""
    if diagnosis.shape == "unsubscribe":
        target = copy_of_unsubscribe_token(session, settings, diagnosis.unsubscribe_token)
        return target, "unsubscribe token" if target else ""
    for address in diagnosis.envelope:
        delivery_id = verp.delivery_of(settings, address)
        if delivery_id is not None:
            found = store.by_delivery(session, delivery_id)
            if found is not None:
                return found, "VERP address"
    for message_id in diagnosis.quoted_message_ids:
        found = copy_of_message_id(session, settings, message_id)
        if found is not None:
            return found, "Message-ID"
    for token in diagnosis.quoted_tokens:
        found = copy_of_unsubscribe_token(session, settings, token)
        if found is not None:
            return found, "unsubscribe token"
    return None, ""


def process(
    settings: Settings,
    database: Database,
    raw: bytes,
    *,
    source: str,
    recipient: str | None = None,
) -> Processed:
    """Read one message and commit what it changes; safe to call twice with the same one."""
    b = settings.bounces
    try:
        diagnosis = diagnose(
            raw,
            envelope_recipient=recipient,
            limits=limits_of(b),
            hard_statuses=b.hard_statuses,
            policy_statuses=b.policy_statuses,
        )
    except UnreadableMessage as exc:
        return quarantine(database, raw, str(exc), source=source)
    prefix = f"{diagnosis.key}#"
    with database.session(write=True) as session:
        if store.seen(session, prefix):
            before = store.kind_of(session, prefix) or K.UNRECOGNISED
            return Processed(diagnosis.key, before, False)
        target, how = authenticate(session, settings, diagnosis)
        findings = diagnosis.findings
        if target is not None:
            kind, actions, verified = policy.apply_authenticated(
                session, b, target, findings, key=diagnosis.key, source=source, how=how
            )
        else:
            events = policy.store_unverified(session, findings, key=diagnosis.key, source=source)
            kind, actions, verified = policy.worst_kind(events), [], False
    log.info("processed a %s message from %s: %s", diagnosis.shape, source, kind)
    return Processed(diagnosis.key, kind, True, verified, actions)


def quarantine(database: Database, raw: bytes, why: str, *, source: str) -> Processed:
    """Record a message that cannot be read (``why``), once. ``raw`` is the message, or as
    much of it as was downloaded (the headers of one too large to download)."""
    key = raw_key(raw)
    prefix = f"{key}#"
    with database.session(write=True) as session:
        if store.seen(session, prefix):
            return Processed(key, K.QUARANTINED, False, why=why)
        event = store.record(
            session,
            key=f"{prefix}0",
            kind=K.QUARANTINED,
            target=None,
            reason=why,
            source=source,
            verified=False,
        )
        event.action = "quarantined"
    log.warning("a message from %s was quarantined: %s", source, why)
    return Processed(key, K.QUARANTINED, True, why=why)


def keep(settings: Settings, raw: bytes, key: str, folder: str) -> Path:
    """Keep a message under .mailer/bounces/FOLDER/ (0600 in 0700 folders) for a person."""
    base = files.kept_bounces(settings.state_dir)
    path = base / folder / f"{key[:24]}.eml"
    files.private_folder(base / folder, within=settings.state_dir)
    if not path.exists():
        files.write_private(path, raw)
    return path
