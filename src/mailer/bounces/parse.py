"""What a message that came back says, read with the standard library and flufl.bounce.

One pass recognises, in this order:

1. delivery status notifications (RFC 3464, ``multipart/report; report-type=delivery-status``):
   each recipient's ``Action``, ``Status`` and ``Diagnostic-Code``;
2. complaints (ARF, RFC 5965, ``report-type=feedback-report``);
3. unsubscribe requests sent by the ``mailto:`` of ``List-Unsubscribe`` (the subject, or the
   body, carries ``unsubscribe TOKEN``);
4. bounces in no standard shape, by flufl.bounce's detectors (old Exim, qmail, Exchange);
5. automatic replies (RFC 3834 ``Auto-Submitted``, "out of office"), which are never bounces.

Anything else is unrecognised. Parsing changes nothing: :mod:`mailer.bounces.process`
decides who a message is about and :mod:`mailer.bounces.policy` what to do.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.policy
import hashlib
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses

from flufl.bounce import all_failures

from mailer.store.status import BounceKind

# Reading stops here: a bounce quoting a huge original is still recognised from its start.
MAX_BYTES = 20 * 1024 * 1024
_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY = re.compile(r"\b([45])\d\d\b")
# The token is tokens.make(key, "unsubscribe", subscriber_id, send_id).
_UNSUBSCRIBE = re.compile(r"\bunsubscribe\s+(\d{1,18}-\d{1,18}\.[A-Za-z0-9_-]{16})(?![\w-])", re.I)
_LINK_TOKEN = re.compile(r"/unsubscribe/(\d{1,18}-\d{1,18}\.[A-Za-z0-9_-]{16})(?![\w-])")
# Words servers use when the address does not exist but they give no enhanced status code.
_GONE = re.compile(
    r"user unknown|unknown user|no such (user|recipient|mailbox)|does not exist|"
    r"recipient not found|invalid recipient|mailbox unavailable|address rejected|"
    r"recipientnotfound|recipnotfound|not a valid mailbox",
    re.I,
)
_AUTO_SUBJECT = re.compile(
    r"^\s*(automatic reply|auto[- ]?reply|autoreply|auto:|out of (the )?office|"
    r"abwesenheitsnotiz|r[ée]ponse automatique|absence|on leave|away from)",
    re.I,
)
_DAEMON = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mail\.delivery\.subsystem)@", re.I)
# Headers that may hold the address the message was delivered to (the VERP address).
ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")


@dataclass(frozen=True)
class Finding:
    """One thing a message reports about one recipient."""

    kind: BounceKind
    recipient: str = ""  # the address the report names (Final-Recipient), lower-case
    status: str = ""  # an enhanced status code such as 5.1.1
    action: str = ""  # RFC 3464 Action: failed, delayed, delivered...
    reason: str = ""  # the server's words, or the complaint type


@dataclass(frozen=True)
class Parsed:
    """Everything mailer reads from one message."""

    key: str  # stable across re-reads: a hash of the Message-ID, or of the bytes
    shape: str  # "dsn", "arf", "unsubscribe", "heuristic", "auto-reply" or "unrecognised"
    findings: list[Finding]
    # Addresses the message was delivered to: the VERP address, when there is one.
    envelope: list[str] = field(default_factory=list)
    # From the copy of the original that a report quotes.
    original_message_ids: list[str] = field(default_factory=list)
    original_tokens: list[str] = field(default_factory=list)
    unsubscribe_token: str = ""
    sender: str = ""


def message_key(msg: Message, raw: bytes) -> str:
    message_id = (msg.get("Message-ID") or "").strip()
    basis = f"mid:{message_id}".encode() if message_id else b"raw:" + raw
    return hashlib.sha256(basis).hexdigest()


def parse(raw: bytes, *, envelope_recipient: str | None = None) -> Parsed:
    """Read one message: what kind it is, what it reports, and whom it may be about."""
    msg = email.message_from_bytes(raw[:MAX_BYTES], policy=email.policy.compat32)
    key = message_key(msg, raw)
    envelope = [envelope_recipient] if envelope_recipient else []
    for header in ENVELOPE_HEADERS:
        envelope += [a for _, a in getaddresses(msg.get_all(header, [])) if a]
    sender = (getaddresses(msg.get_all("From", [])) or [("", "")])[0][1].lower()
    report_type = (msg.get_param("report-type") or "") if msg.is_multipart() else ""
    originals = _originals(msg)
    ids = [m for o in originals for m in _ids(o.get_all("Message-ID", []))]
    links = [t for o in originals for t in _LINK_TOKEN.findall(str(o.get("List-Unsubscribe", "")))]
    envelope += [a for o in originals for _, a in getaddresses(o.get_all("Return-Path", [])) if a]
    if (
        msg.get_content_type() == "multipart/report"
        and str(report_type).lower() == "feedback-report"
    ):
        findings, mail_from = _arf(msg)
        envelope += mail_from
        return Parsed(
            key,
            "arf",
            findings,
            envelope,
            sender=sender,
            original_message_ids=ids,
            original_tokens=links,
        )
    dsn = _dsn(msg)
    if dsn:
        return Parsed(
            key,
            "dsn",
            dsn,
            envelope,
            sender=sender,
            original_message_ids=ids,
            original_tokens=links,
        )
    token = _unsubscribe_token(msg)
    if token and not _is_auto_reply(msg):
        return Parsed(
            key,
            "unsubscribe",
            [Finding(BounceKind.UNSUBSCRIBE)],
            envelope,
            sender=sender,
            unsubscribe_token=token,
        )
    if _looks_like_bounce(msg, sender) or not _is_auto_reply(msg):
        heuristic = _heuristic(msg)
        if heuristic:
            return Parsed(
                key,
                "heuristic",
                heuristic,
                envelope,
                sender=sender,
                original_message_ids=ids,
                original_tokens=links,
            )
    if _is_auto_reply(msg):
        return Parsed(key, "auto-reply", [Finding(BounceKind.AUTO_REPLY)], envelope, sender=sender)
    return Parsed(
        key,
        "unrecognised",
        [],
        envelope,
        sender=sender,
        original_message_ids=ids,
        original_tokens=links,
    )


def _ids(values: list[str]) -> list[str]:
    return [m for v in values for m in re.findall(r"<[^<>\s]+>", str(v))]


def _text(value: object) -> str:
    return " ".join(str(value or "").split())


# -- RFC 3464 delivery status notifications ---------------------------------------------------


def _status_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [b for b in payload if isinstance(b, Message)]
    # Some generators send the fields as one text body; parse its blank-line-separated blocks.
    text = payload if isinstance(payload, str) else ""
    return [HeaderParser().parsestr(block.strip() + "\n") for block in re.split(r"\n\s*\n", text)]


def status_code(status: str, diagnostic: str) -> str:
    """The most specific enhanced status code a report gives.

    ``Status: 5.0.0`` with ``Diagnostic-Code: smtp; 550 5.1.1 ...`` means 5.1.1; a bare
    ``550 user unknown`` with no code at all means 5.1.1 too.
    """
    found = _CODE.search(status)
    code = ".".join(found.groups()) if found else ""
    if not code or code.endswith(".0.0"):
        better = _CODE.search(diagnostic)
        if better:
            return ".".join(better.groups())
    if not code:
        reply = _REPLY.search(diagnostic)
        if reply:
            code = f"{reply.group(1)}.0.0"
    if code == "5.0.0" and _GONE.search(diagnostic):
        return "5.1.1"
    return code


def _dsn(msg: Message) -> list[Finding]:
    findings: list[Finding] = []
    for part in msg.walk():
        if part.get_content_type() not in (
            "message/delivery-status",
            "message/global-delivery-status",
        ):
            continue
        for block in _status_blocks(part):
            recipient = str(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
            action = _text(block.get("Action")).lower()
            if not recipient and not action:
                continue  # the per-message fields (Reporting-MTA, Arrival-Date)
            diagnostic = _text(block.get("Diagnostic-Code"))
            code = status_code(_text(block.get("Status")), diagnostic)
            findings.append(
                Finding(
                    BounceKind.SOFT,  # policy.classify decides by the status and action
                    recipient.rpartition(";")[2].strip().strip("<>").lower(),
                    code,
                    action or "failed",
                    diagnostic.partition(";")[2].strip() or diagnostic,
                )
            )
    return findings


# -- ARF complaints ----------------------------------------------------------------------------


def _arf(msg: Message) -> tuple[list[Finding], list[str]]:
    for part in msg.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        payload = part.get_payload()
        fields = payload[0] if isinstance(payload, list) and payload else None
        if not isinstance(fields, Message):
            fields = HeaderParser().parsestr(str(payload).strip() + "\n")
        kind = _text(fields.get("Feedback-Type")).lower()
        recipients = [a for _, a in getaddresses(fields.get_all("Original-Rcpt-To", [])) if a]
        mail_from = [a for _, a in getaddresses(fields.get_all("Original-Mail-From", [])) if a]
        complaint = kind in ("abuse", "fraud", "other", "virus", "")
        finding = Finding(
            BounceKind.COMPLAINT if complaint else BounceKind.UNRECOGNISED,
            (recipients[0] if recipients else "").lower(),
            "",
            "complaint",
            f"feedback report: {kind or 'abuse'}",
        )
        return [finding], mail_from
    return [Finding(BounceKind.COMPLAINT, "", "", "complaint", "feedback report")], []


def _originals(msg: Message) -> list[Message]:
    """The copies (or headers) of the original message that a report quotes."""
    found: list[Message] = []
    for part in msg.walk():
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list):
                found += [p for p in payload if isinstance(p, Message)]
        elif kind in ("text/rfc822-headers", "message/global-headers"):
            text = part.get_payload(decode=True) or b""
            found.append(HeaderParser().parsestr(bytes(text).decode("utf-8", "replace")))
    return found


# -- mailto unsubscribes ------------------------------------------------------------------------


def _plain_text(msg: Message, limit: int = 20_000) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain" and not part.is_multipart():
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                charset = part.get_content_charset() or "utf-8"
                try:
                    return data[:limit].decode(charset, "replace")
                except LookupError:
                    return data[:limit].decode("utf-8", "replace")
    return ""


def _subject(msg: Message) -> str:
    raw = msg.get("Subject") or ""
    try:
        return str(email.header.make_header(email.header.decode_header(str(raw))))
    except (ValueError, LookupError, email.errors.HeaderParseError):
        return str(raw)


def _unsubscribe_token(msg: Message) -> str:
    found = _UNSUBSCRIBE.search(_subject(msg))
    if found is None and msg.get_content_maintype() in ("text", "multipart"):
        # A mail program that puts the mailto's subject in the body; never a link's token.
        found = _UNSUBSCRIBE.search(_plain_text(msg, 2000))
    return found.group(1) if found else ""


# -- automatic replies and bounces in no standard shape -------------------------------------


def _is_auto_reply(msg: Message) -> bool:
    auto = _text(msg.get("Auto-Submitted")).lower()
    if auto and auto != "no":
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond") or msg.get("X-Autoresponse"):
        return True
    if _text(msg.get("Precedence")).lower() == "auto_reply":
        return True
    if _text(msg.get("X-Auto-Response-Suppress")) and _AUTO_SUBJECT.search(_subject(msg)):
        return True
    return _AUTO_SUBJECT.search(_subject(msg)) is not None


def _looks_like_bounce(msg: Message, sender: str) -> bool:
    return (
        bool(msg.get("X-Failed-Recipients"))
        or bool(_DAEMON.match(sender))
        or (
            not (msg.get("Return-Path") or "").strip("<> \t") and msg.get("Return-Path") is not None
        )
    )


def _heuristic(msg: Message) -> list[Finding]:
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector that trips on odd input must not stop the mailbox
        return []
    text = _plain_text(msg)
    reason = next((line.strip() for line in text.splitlines() if _CODE.search(line)), "")
    findings = []
    for address in sorted(permanent):
        code = status_code("5.0.0", text)
        findings.append(Finding(BounceKind.SOFT, _decode(address), code, "failed", reason[:300]))
    for address in sorted(temporary - permanent):
        code = status_code("4.0.0", text)
        findings.append(Finding(BounceKind.SOFT, _decode(address), code, "failed", reason[:300]))
    return findings


def _decode(address: bytes | str) -> str:
    text = address.decode("utf-8", "replace") if isinstance(address, bytes) else address
    return text.strip().strip("<>").lower()
