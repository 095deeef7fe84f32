"""One message in, its result committed: who it is about, and what changes.

Who a message is about is found, most reliable first:

1. the VERP address it was delivered to (:mod:`mailer.sending.verp`), which names the copy;
2. the Message-ID of the original that a report quotes: mailer's Message-IDs carry the send,
   the ledger row and an HMAC of both, so a quoted one is checked, never trusted;
3. the signed unsubscribe token in the quoted original's ``List-Unsubscribe``;
4. the address a report names, tied to the newest copy sent to it.

Each message is one transaction, keyed by its Message-ID (or a hash of its bytes): a
message processed twice, because a run was killed between the commit and the move to the
"processed" folder, records nothing the second time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mailer.bounces import policy
from mailer.bounces.parse import Finding, Parsed, parse
from mailer.config import Settings
from mailer.errors import BadToken
from mailer.sending import verp
from mailer.site import tokens
from mailer.store import bounces as store
from mailer.store.database import Database
from mailer.store.status import BounceKind

if TYPE_CHECKING:
    from sqlmodel import Session

log = logging.getLogger("mailer.bounces")
K = BounceKind
# Kinds that are about a person and change something when the person is known.
_ABOUT_SOMEONE = (K.HARD, K.SOFT, K.POLICY, K.COMPLAINT, K.UNSUBSCRIBE)


@dataclass(frozen=True)
class Processed:
    """What one message was and what it changed."""

    key: str
    kind: BounceKind  # the most telling thing it reported; UNRECOGNISED if nothing
    new: bool  # False when it had been processed before: nothing was recorded again
    actions: list[str] = field(default_factory=list)  # "subscriber 12: marked bounced"

    @property
    def recognised(self) -> bool:
        return self.kind != K.UNRECOGNISED


def _message_id_target(
    session: Session, settings: Settings, message_id: str
) -> store.Target | None:
    """The copy a quoted Message-ID names, if mailer made it (see MessageTemplate.message_id)."""
    local, _, domain = message_id.strip("<>").partition("@")
    parts = local.split(".")
    if len(parts) != 3 or domain.lower() != settings.sender.domain:
        return None
    try:
        send_id, delivery_id = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    tag = tokens.make(settings.require_secret_key(), "message-id", send_id, delivery_id)
    nonce = tag.partition(".")[2][:10].lower().replace("-", "x").replace("_", "y")
    if not delivery_id or parts[2] != nonce:
        return None
    target = store.by_delivery(session, delivery_id)
    return target if target is not None and target.send_id == send_id else None


def _token_target(session: Session, settings: Settings, token: str) -> store.Target | None:
    try:
        subscriber_id, send_id = tokens.read(settings.require_secret_key(), "unsubscribe", token)
    except (BadToken, ValueError):
        return None
    if not subscriber_id or not send_id:
        return None  # a proof copy: nobody's subscription
    found = store.by_send_and_subscriber(session, send_id, subscriber_id)
    return found or store.Target(None, send_id, subscriber_id)


def identify(session: Session, settings: Settings, parsed: Parsed) -> store.Target | None:
    """The copy the whole message is about, when the message itself says so."""
    for address in parsed.envelope:
        delivery_id = verp.delivery_of(settings, address)
        if delivery_id is not None:
            found = store.by_delivery(session, delivery_id)
            if found is not None:
                return found
    for message_id in parsed.original_message_ids:
        found = _message_id_target(session, settings, message_id)
        if found is not None:
            return found
    for token in parsed.original_tokens:
        found = _token_target(session, settings, token)
        if found is not None:
            return found
    return None


def _kind(settings: Settings, finding: Finding) -> BounceKind:
    if finding.kind in (K.HARD, K.SOFT):
        return policy.classify(settings.bounces, finding.status, finding.action)
    return finding.kind


def _resolve(
    session: Session, settings: Settings, parsed: Parsed
) -> list[tuple[BounceKind, Finding, store.Target | None]]:
    """Each finding with its kind and the copy it is about (None when nobody is known)."""
    if parsed.shape == "unsubscribe":
        target = _token_target(session, settings, parsed.unsubscribe_token)
        finding = parsed.findings[0]
        return [(K.UNSUBSCRIBE if target else K.UNRECOGNISED, finding, target)]
    found = [(_kind(settings, f), f) for f in parsed.findings]
    whole = identify(session, settings, parsed)
    if whole is not None and found:
        # One message, one copy (mailer sends each copy to one recipient): the worst wins.
        kind, finding = max(found, key=lambda kf: policy.SEVERITY.get(kf[0], 0))
        return [(kind, finding, whole)]
    resolved: list[tuple[BounceKind, Finding, store.Target | None]] = []
    for kind, finding in found:
        target = store.latest_to(session, finding.recipient) if finding.recipient else None
        resolved.append((kind, finding, target))
    return resolved


def process(
    settings: Settings,
    database: Database,
    raw: bytes,
    *,
    source: str,
    recipient: str | None = None,
) -> Processed:
    """Read one message and commit what it changes; safe to call twice with the same one."""
    parsed = parse(raw, envelope_recipient=recipient)
    prefix = f"{parsed.key}#"
    with database.session(write=True) as session:
        if store.seen(session, prefix):
            return Processed(parsed.key, store.kind_of(session, prefix) or K.UNRECOGNISED, False)
        resolved = _resolve(session, settings, parsed) if parsed.findings else []
        actions: list[str] = []
        kinds: list[BounceKind] = []
        for i, (kind, finding, target) in enumerate(resolved):
            if kind in _ABOUT_SOMEONE and target is None:
                kind = K.UNRECOGNISED
                reason = f"{finding.status} about an address mailer has no copy for".strip()
            else:
                reason = finding.reason
            event = store.record(
                session,
                key=f"{prefix}{i}",
                kind=kind,
                target=target,
                status=finding.status,
                reason=reason,
                source=source,
            )
            if target is not None and kind in _ABOUT_SOMEONE:
                event.action = policy.apply(session, settings.bounces, kind, target)
                actions.append(f"subscriber {target.subscriber_id}: {event.action}")
            else:
                event.action = "none"
            kinds.append(kind)
        if not resolved:
            store.record(session, key=f"{prefix}0", kind=K.UNRECOGNISED, target=None, source=source)
            kinds.append(K.UNRECOGNISED)
    recognised = [k for k in kinds if k != K.UNRECOGNISED]
    kind = (
        max(recognised, key=lambda k: policy.SEVERITY.get(k, 0)) if recognised else K.UNRECOGNISED
    )
    log.info("processed a %s message from %s: %s", parsed.shape, source, kind)
    return Processed(parsed.key, kind, True, actions)


def keep_unrecognised(settings: Settings, raw: bytes, key: str) -> Path:
    """Keep a message nobody could read under .mailer/bounces/unrecognised/ for a person."""
    folder = settings.state_dir / "bounces" / "unrecognised"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{key[:24]}.eml"
    if not path.exists():
        partial = path.with_suffix(".part")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
        os.replace(partial, path)
    return path
