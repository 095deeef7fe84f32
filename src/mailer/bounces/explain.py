"""``mailer bounces explain``: what mailer reads from one message and what it would do.

Nothing is stored and no database is opened: the message is read exactly as
:mod:`mailer.bounces.process` reads it, its MACs are checked with the newsletter's key
(when there is a newsletter folder), and the policy is described, not applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mailer import tokens
from mailer.bounces.diagnose import Diagnosis, diagnose, limits_of
from mailer.bounces.policy import SEVERITY
from mailer.config import BounceSettings, Settings
from mailer.errors import BadToken, ConfigError, UnreadableMessage
from mailer.sending import verp
from mailer.store.status import BounceKind

K = BounceKind
# What the policy does with each category, for an authenticated copy (docs/bounces.md).
WOULD = {
    K.HARD: "mark the person bounced",
    K.FULL: "count a failed send (bounced after soft_limit sends in a row)",
    K.SOFT: "count a failed send (bounced after soft_limit sends in a row)",
    K.POLICY: "flag the send; the person is not changed",
    K.COMPLAINT: "unsubscribe the person from everything (complained)",
    K.UNSUBSCRIBE: "unsubscribe the person from the lists of that send",
    K.DELAYED: "record it; nothing changes",
    K.DELIVERED: "record it; nothing changes",
    K.AUTO_REPLY: "record it; never a bounce",
    K.UNRECOGNISED: "keep it in the unrecognised folder; nothing changes",
}


@dataclass
class Explanation:
    shape: str
    subject: str
    sender: str
    findings: list[dict[str, str]]
    authenticated_by: str  # "" when nothing mailer signed was found
    copy: str  # which copy the MAC names, e.g. "ledger row 412"
    would: str
    quarantined: str = ""  # why, for a message beyond the limits
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _mac(settings: Settings | None, d: Diagnosis) -> tuple[str, str]:
    if settings is None:
        return "", ""
    try:
        keys = tokens.keys_of(settings)
    except ConfigError:
        return "", ""
    if d.shape == "unsubscribe":
        try:
            subscriber_id, send_id = tokens.read(keys, tokens.UNSUBSCRIBE, d.unsubscribe_token)
            return "unsubscribe token", f"subscriber {subscriber_id}, send {send_id}"
        except (BadToken, ValueError):
            return "", ""
    for address in d.envelope:
        delivery_id = verp.delivery_of(settings, address)
        if delivery_id is not None:
            return "VERP address", f"ledger row {delivery_id}"
    for message_id in d.quoted_message_ids:
        found = tokens.read_message_id(keys, message_id, settings.sender.domain)
        if found is not None:
            return "Message-ID", f"send {found[0]}, ledger row {found[1]}"
    for token in d.quoted_tokens:
        try:
            subscriber_id, send_id = tokens.read(keys, tokens.UNSUBSCRIBE, token)
            return "unsubscribe token", f"subscriber {subscriber_id}, send {send_id}"
        except (BadToken, ValueError):
            continue
    return "", ""


def explain(settings: Settings | None, raw: bytes, recipient: str | None = None) -> Explanation:
    """Read ``raw`` as the bounce processor would; ``settings`` None outside a newsletter."""
    b = settings.bounces if settings is not None else BounceSettings()
    try:
        d = diagnose(
            raw,
            envelope_recipient=recipient,
            limits=limits_of(b),
            hard_statuses=b.hard_statuses,
            policy_statuses=b.policy_statuses,
        )
    except UnreadableMessage as exc:
        return Explanation(
            "unreadable", "", "", [], "", "", "quarantine it; nothing changes", quarantined=str(exc)
        )
    how, copy = _mac(settings, d)
    kinds = [f.category for f in d.findings] or [K.UNRECOGNISED]
    notes = []
    if settings is None:
        notes.append("not in a newsletter folder: no MAC was checked")
    if how:
        worst = max(kinds, key=lambda k: SEVERITY.get(k, 0))
        would = f"if that copy exists: {WOULD[worst]}"
        if len(d.findings) > 1:
            notes.append("several recipients: only the one the copy went to is acted on")
    else:
        would = "store it as unverified; it changes nobody unless applied with mailer bounces apply"
    return Explanation(
        d.shape,
        d.subject,
        d.sender,
        [f.as_dict() for f in d.findings],
        how,
        copy,
        would,
        notes=notes,
    )
