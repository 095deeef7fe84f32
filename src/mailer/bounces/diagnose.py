"""What a returned message says, per recipient, read from the report itself.

:func:`classify` is the library's entry point: raw bytes in, one :class:`RecipientFinding` per
recipient out, without a database or settings. :func:`diagnose` also gives what
:mod:`mailer.bounces.process` needs to tie the message to a copy mailer sent (the
addresses it was delivered to, the Message-IDs and tokens it quotes).

A message is read under limits (:mod:`mailer.bounces.reading`); one beyond them raises
:class:`~mailer.errors.UnreadableMessage` and is quarantined by the caller.

For each recipient the status and the reason come, in this order, from:

1. its delivery-status fields (RFC 3464): ``Action``, ``Status``, ``Diagnostic-Code``;
   an ``rfc822``-typed ``Original-Recipient`` names the person before ``Final-Recipient``
   (an alias or forward may have changed it), other address types are ignored. Where the
   remote's own words or code in ``Diagnostic-Code`` disagree with ``Status``, they win;
2. the notice's own text about that recipient (the lines that name them), in a text or
   HTML part, never the quoted headers or the quoted original;
3. flufl.bounce's detectors, for the addresses of bounces in no standard shape.

The category is one of :class:`~mailer.store.status.BounceKind`: the words decide first
(:mod:`mailer.bounces.wording`), then the status code.
"""

from __future__ import annotations

import email.errors
import email.header
import hashlib
import html
import logging
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses
from typing import Any

from flufl.bounce import all_failures

from mailer import tokens, urls
from mailer.bounces import wording
from mailer.bounces.reading import Deadline, ReadingLimits, read
from mailer.config import BounceSettings
from mailer.errors import UnreadableMessage
from mailer.store.status import BounceKind

K = BounceKind
# flufl.bounce logs a traceback when one of its detectors trips on odd input (and goes on
# with the others): a returned message must never put a traceback in mailer's log.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL + 1)
# At most this many recipients are read from one message: a report naming more is a
# forgery or a list's own bounce, and it is stored unverified either way.
MAX_RECIPIENTS = 50
# Text read from a notice part, per part.
MAX_TEXT = 64 * 1024
_CODE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_REPLY = re.compile(r"(?<![\w.-])([245])\d\d(?:[ -]|$)")
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_TOKEN = re.compile(tokens.PATTERN)
_SUBJECT_WORD = urls.UNSUBSCRIBE_SUBJECT.partition("{token}")[0].strip()
_UNSUBSCRIBE = re.compile(rf"\b{re.escape(_SUBJECT_WORD)}\s+({tokens.PATTERN})", re.I)
_LINK_TOKEN = re.compile(
    re.escape(urls.UNSUBSCRIBE_PATH).replace(re.escape("{token}"), f"({tokens.PATTERN})")
)
_DAEMON = re.compile(
    r"^(mailer-daemon|postmaster|mail-daemon|mail\.delivery\.subsystem|"
    r"mailerdaemon|mdaemon|mail-?delivery|bounces?|noreply-dmarc|microsoftexchange\w*)@",
    re.I,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status notification|failure|has failed|failed|"
    r"problem|notification)|returned mail|mail delivery (failed|failure|system)|"
    r"failure notice|non[- ]?delivery|not delivered|could not be delivered|"
    r"delivery report|nondeliverable|rejected|bounce|unzustellbar|nicht zustellbar|"
    r"non remis|no entregado|non recapitat|onbestelbaar|não entregue|"
    r"配信|エラー|不能|退信|退回|не доставлено|недоставлен|warning|delayed|delay|"
    r"error sending|could not send|failed to deliver|delivery error|mail error|"
    r"returned to sender|mail system error|message not delivered|failed delivery",
    re.I,
)
# Where a notice stops and the quoted original (or its headers) starts.
_QUOTED_START = re.compile(
    r"^\s*(-{2,}|={2,}|\*{2,})?\s*("
    r"original message|this is a copy of|below this line is a copy|"
    r"copy of the (original )?message|returned message|the original message|"
    r"undelivered message|message headers? follow|headers of (the )?(original|your) message|"
    r"the header of the original message|received:|"
    r"forwarded message|start of (the )?(returned|original)|original text|message text follows|"
    r"unsent message follows|your message reads|original message follow|"
    r"(first )?\d* ?lines of (your|the) (original )?message|"
    r"元のメッセージ|原始邮件|исходное сообщение|"
    r"urspr[üu]ngliche nachricht|message d'origine|mensaje original|messaggio originale"
    r")",
    re.I,
)
_QUOTED_HEADER = re.compile(
    r"^\s*>\s*(received|return-path|message-id|x-[\w-]+|from|to|date):", re.I
)
_IN_TRANSIT = re.compile(
    r"^(return-path|received|message-id|dkim-signature|mime-version|content-type|x-[\w-]+):",
    re.I,
)
_HEADERISH = re.compile(
    r"^(return-path|received|message-id|from|to|subject|date|dkim-signature)"
    r":\s",
    re.I,
)


@dataclass(frozen=True)
class RecipientFinding:
    """What a message reports about one recipient."""

    address: str  # the person's address, lower-case; "" when the report names nobody
    category: BounceKind
    status: str = ""  # the enhanced status code (RFC 3463), such as 5.1.1
    reason: str = ""  # the remote server's words, or the complaint type
    action: str = ""  # RFC 3464 Action: failed, delayed, delivered...

    def as_dict(self) -> dict[str, str]:
        return {
            "address": self.address,
            "category": str(self.category),
            "status": self.status,
            "reason": self.reason,
            "action": self.action,
        }


@dataclass(frozen=True)
class Diagnosis:
    """Everything mailer reads from one message."""

    key: str  # stable across re-reads: a hash of the Message-ID, or of the bytes
    shape: str  # dsn, arf, text, unsubscribe, auto-reply, or unrecognised
    findings: list[RecipientFinding]
    sender: str = ""
    subject: str = ""
    # Addresses the message was delivered to, where a VERP address would be.
    envelope: list[str] = field(default_factory=list)
    # From the copy of the original that a report quotes.
    quoted_message_ids: list[str] = field(default_factory=list)
    quoted_tokens: list[str] = field(default_factory=list)
    unsubscribe_token: str = ""
    # Addresses the message names as its recipients, for the operator.
    named: list[str] = field(default_factory=list)


def message_key(msg: Message | None, raw: bytes) -> str:
    message_id = ""
    if msg is not None:
        try:
            message_id = str(msg.get("Message-ID") or "").strip()[:500]
        except Exception:  # a header mailer cannot even read: key by the bytes
            message_id = ""
    basis = f"mid:{message_id}".encode("utf-8", "replace") if message_id else b"raw:" + raw
    return hashlib.sha256(basis).hexdigest()


def raw_key(raw: bytes) -> str:
    """The key of a message that cannot be read: its Message-ID line, or its bytes."""
    found = re.search(rb"(?im)^message-id:[ \t]*(<[^>\r\n]{1,400}>)", raw[: 256 * 1024])
    if found:
        basis = b"mid:" + found.group(1)
        return hashlib.sha256(basis).hexdigest()
    return hashlib.sha256(b"raw:" + raw).hexdigest()


def limits_of(settings: BounceSettings) -> ReadingLimits:
    """The reading limits the ``[bounces]`` settings give."""
    return ReadingLimits(
        max_bytes=settings.max_message_kb * 1024,
        max_depth=settings.max_depth,
        max_parts=settings.max_parts,
        max_seconds=settings.max_seconds,
    )


def classify(raw: bytes, limits: ReadingLimits | None = None) -> list[RecipientFinding]:
    """One finding per recipient the message reports on; nothing is stored or changed.

    Raises :class:`~mailer.errors.UnreadableMessage` for a message beyond the limits.
    """
    return diagnose(raw, limits=limits).findings


def diagnose(
    raw: bytes,
    *,
    envelope_recipient: str | None = None,
    limits: ReadingLimits | None = None,
    hard_statuses: tuple[str, ...] | None = None,
    policy_statuses: tuple[str, ...] | None = None,
) -> Diagnosis:
    """Read one message: what kind it is, what it reports per recipient, whom it may be about."""
    limits = limits or ReadingLimits()
    deadline = Deadline(limits.max_seconds)
    msg = read(raw, limits, deadline)
    try:
        return _Reader(msg, raw, deadline, hard_statuses, policy_statuses).run(envelope_recipient)
    except UnreadableMessage:
        raise
    except Exception as exc:  # whatever a message does to the reader, it never stops the mailbox
        raise UnreadableMessage(f"cannot be read ({type(exc).__name__})") from None


def _header_text(value: email.header.Header) -> str:
    """A header the parser kept as 8-bit bytes: most often UTF-8, else ISO-2022-JP or Latin-1."""
    parts = []
    for data, charset in email.header.decode_header(value):
        if not isinstance(data, bytes):
            parts.append(data)
            continue
        if b"\x1b$B" in data:
            charset = "iso2022_jp"
        elif not charset or charset == "unknown-8bit":
            charset = "utf-8"
        try:
            parts.append(data.decode(charset))
        except (LookupError, UnicodeDecodeError):
            parts.append(data.decode("latin-1", "replace"))
    return " ".join(parts)


def _text(value: object) -> str:
    if isinstance(value, email.header.Header):
        return " ".join(_header_text(value).split())
    text = str(value or "")
    if any("\udc80" <= c <= "\udcff" for c in text):
        # 8-bit bytes in a header (UTF-8 most often): the parser kept them as surrogates.
        data = text.encode("utf-8", "surrogateescape")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("iso2022_jp" if b"\x1b$B" in data else "latin-1", "replace")
    return " ".join(text.split())


def _header(msg: Message, name: str) -> str:
    raw = msg.get(name)
    if raw is None:
        return ""
    try:
        return _text(email.header.make_header(email.header.decode_header(str(raw))))
    except (ValueError, LookupError, email.errors.HeaderParseError, UnicodeError):
        return _text(raw)


def _addresses(values: list[str]) -> list[str]:
    try:
        pairs = getaddresses([str(v) for v in values])
    except (ValueError, TypeError, IndexError):
        return []
    return [a.strip().strip("<>").lower() for _, a in pairs if a and "@" in a]


def _decode(part: Message) -> str:
    """The text of a leaf part, whatever its encoding or charset claims."""
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, AssertionError, LookupError, UnicodeError):
        data = None
    if not isinstance(data, bytes):
        payload = part.get_payload()
        return payload[:MAX_TEXT] if isinstance(payload, str) else ""
    data = data[:MAX_TEXT]
    if b"\x1b$B" in data:
        return data.decode("iso2022_jp", "replace")
    charset = "utf-8"
    try:
        charset = part.get_content_charset() or "utf-8"
        return data.decode(charset, "replace")
    except (LookupError, ValueError, TypeError):
        return data.decode("utf-8", "replace")


def _html_text(markup: str) -> str:
    markup = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", " ", markup)
    markup = re.sub(r"(?i)<br\s*/?>|</(p|div|tr|li|h\d|table)>", "\n", markup)
    markup = re.sub(r"<[^>]{0,2000}>", " ", markup)
    return html.unescape(markup)


def _cut_quoted(text: str) -> str:
    """The notice's own words: everything before the quoted original starts."""
    lines = text.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        if i > 3 and _QUOTED_START.match(line) and not _mentions_failure(line):
            break
        if i > 3 and _QUOTED_HEADER.match(line):
            break  # "> Received: ...": the original, quoted line by line
        # A block of header lines (Return-Path:, Received:...) is the quoted original; a
        # notice's own summary of it ("Subject: ..." / "Date: ...") is not, unless the
        # block has a header only a message in transit carries.
        if (
            i > 3
            and _HEADERISH.match(line)
            and i + 1 < len(lines)
            and (_HEADERISH.match(lines[i + 1]) or lines[i + 1][:1] in (" ", "\t"))
            and any(_IN_TRANSIT.match(n) for n in lines[i : i + 8])
        ):
            break
        out.append(line)
    return "\n".join(out)


def _mentions_failure(line: str) -> bool:
    return bool(_CODE.search(line)) or bool(re.search(r"@", line))


@dataclass
class _Recipient:
    address: str
    final: str = ""
    action: str = ""
    status: str = ""
    diagnostic: str = ""


class _Reader:
    def __init__(
        self,
        msg: Message,
        raw: bytes,
        deadline: Deadline,
        hard: tuple[str, ...] | None,
        policy: tuple[str, ...] | None,
        *,
        nested: bool = False,
    ) -> None:
        self.nested = nested
        self.msg = msg
        self.raw = raw
        self.deadline = deadline
        defaults = BounceSettings()
        self.codes: dict[str, tuple[str, ...]] = {
            "hard": defaults.hard_statuses if hard is None else hard,
            "policy": defaults.policy_statuses if policy is None else policy,
        }
        self.notice_parts: list[str] = []
        self.status_parts: list[Message] = []
        self.feedback_parts: list[Message] = []
        self.originals: list[Message] = []
        self._walk()

    # -- structure --------------------------------------------------------------------------

    def _walk(self) -> None:
        """Sort the parts: the notice, the status fields, the feedback report, the quoted original.

        A loop over a stack, not recursion; the depth is already limited by reading.py.
        """
        html_parts: list[str] = []
        stack: list[Message] = [self.msg]
        while stack:
            part = stack.pop()
            kind = part.get_content_type()
            if kind in ("message/rfc822", "message/global", "message/partial"):
                payload = part.get_payload()
                if isinstance(payload, list):
                    self.originals += [p for p in payload if isinstance(p, Message)]
                continue
            if kind in ("text/rfc822-headers", "message/global-headers"):
                text = _decode(part)
                self.originals.append(HeaderParser().parsestr(text, headersonly=True))
                continue
            if kind in ("message/delivery-status", "message/global-delivery-status"):
                self.status_parts.append(part)
                continue
            if kind == "message/feedback-report":
                self.feedback_parts.append(part)
                continue
            if part.is_multipart():
                payload = part.get_payload()
                if isinstance(payload, list):
                    stack += reversed([p for p in payload if isinstance(p, Message)])
                continue
            if kind == "text/plain" or (kind.startswith("text/") and kind != "text/html"):
                if kind not in ("text/plain", "text/enriched"):
                    continue
                self.notice_parts.append(_decode(part))
            elif kind == "text/html":
                html_parts.append(_html_text(_decode(part)))
        if not any(p.strip() for p in self.notice_parts):
            self.notice_parts = html_parts
        if not self.status_parts:
            # Delivery-status fields written into the notice's text (some servers do).
            for text in self.notice_parts:
                start = re.search(
                    r"(?im)^(reporting-mta|final-recipient|original-recipient):", text
                )
                if start and re.search(r"(?im)^final-recipient:", text):
                    pseudo = Message()
                    pseudo.set_payload(_cut_quoted(text[start.start() :]))
                    self.status_parts.append(pseudo)
                    break
        # Undeclared delivery-status fields in a text part (some servers send them so).
        self.deadline.check()

    # -- the whole message ------------------------------------------------------------------

    def run(self, envelope_recipient: str | None) -> Diagnosis:
        msg = self.msg
        key = message_key(msg, self.raw)
        subject = _header(msg, "Subject")
        sender_list = _addresses(msg.get_all("From", []) or [])
        sender = sender_list[0] if sender_list else ""
        envelope = [envelope_recipient.strip().strip("<>")] if envelope_recipient else []
        for name in ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To"):
            envelope += _addresses(msg.get_all(name, []) or [])
        ids: list[str] = []
        links: list[str] = []
        for original in self.originals[:10]:
            for value in original.get_all("Message-ID", []) or []:
                ids += re.findall(r"<[^<>\s]{1,250}>", str(value))
            for value in original.get_all("List-Unsubscribe", []) or []:
                links += _LINK_TOKEN.findall(str(value))
            envelope += _addresses(original.get_all("Return-Path", []) or [])
        # Some reports quote only the original's Message-ID in a header of their own.
        for name in ("X-Original-Message-ID", "In-Reply-To", "References"):
            for value in msg.get_all(name, []) or []:
                ids += re.findall(r"<[^<>\s]{1,250}>", str(value))
        notice = "\n".join(self.notice_parts)
        own = "\n".join(_cut_quoted(p) for p in self.notice_parts)
        if not self.originals:
            ids += re.findall(r"(?im)^message-id:\s*(<[^<>\s]{1,250}>)", notice)
        base: dict[str, Any] = {
            "key": key,
            "sender": sender,
            "subject": subject,
            "envelope": envelope,
            "quoted_message_ids": list(dict.fromkeys(ids)),
            "quoted_tokens": list(dict.fromkeys(links)),
        }
        report_type = str(msg.get_param("report-type") or "").lower() if msg.is_multipart() else ""
        if (
            self.feedback_parts
            or report_type == "feedback-report"
            or (_COMPLAINT_SUBJECT.search(subject) and self.originals)
        ):
            findings = self._feedback()
            return Diagnosis(shape="arf", findings=findings, named=_named(findings), **base)
        complained = _addresses(msg.get_all("X-HmXmrOriginalRecipient", []) or [])
        if complained and not self.status_parts:
            # Hotmail's own complaint format (JMRP) names the person in this header, which
            # only Hotmail adds; some arrive with the original alone, without a wrapper.
            findings = [
                RecipientFinding(
                    complained[0], K.COMPLAINT, "", "feedback report: abuse", "complaint"
                )
            ]
            return Diagnosis(shape="arf", findings=findings, named=complained[:1], **base)
        bounce_like = self._bounce_like(sender, subject)
        return_path = msg.get("Return-Path")
        empty_path = return_path is not None and not str(return_path).strip("<> \t\r\n")
        if self.status_parts:
            findings = self._dsn(own)
            if findings:
                return Diagnosis(shape="dsn", findings=findings, named=_named(findings), **base)
        token = self._unsubscribe_token(subject, own)
        if token and not self.status_parts:
            finding = RecipientFinding("", K.UNSUBSCRIBE, reason="unsubscribe email")
            return Diagnosis(
                shape="unsubscribe", findings=[finding], unsubscribe_token=token, **base
            )
        if _UNSUBSCRIBE_ALONE.match(subject) and not bounce_like and sender:
            # "unsubscribe" with no token (a mail program that drops it): the sender asks.
            finding = RecipientFinding(
                sender, K.UNSUBSCRIBE, reason="unsubscribe email without a token"
            )
            return Diagnosis(shape="unsubscribe", findings=[finding], named=[sender], **base)
        auto = self._auto_reply(subject)
        if bounce_like or empty_path or not auto:
            findings = self._text_bounce(own + _subject_reason(subject), notice, bounce_like)
            if findings:
                return Diagnosis(shape="text", findings=findings, named=_named(findings), **base)
        inner = self._inner_report(envelope_recipient)
        if inner is not None:
            return inner
        if (auto or wording.CHALLENGE.search(" ".join(notice[:3000].split()))) and not bounce_like:
            # An automatic reply, or a challenge-response system asking us to confirm that
            # we are a person before it delivers our mail (never a bounce).
            finding = RecipientFinding("", K.AUTO_REPLY, reason=subject[:200])
            return Diagnosis(shape="auto-reply", findings=[finding], **base)
        return Diagnosis(shape="unrecognised", findings=[], **base)

    def _inner_report(self, envelope_recipient: str | None) -> Diagnosis | None:
        """A bounce forwarded as an attachment: the report inside, read once, not deeper."""
        if self.nested:
            return None
        for original in self.originals[:3]:
            if original.get_content_type() != "multipart/report" and not _DAEMON.match(
                (_addresses(original.get_all("From", []) or []) or [""])[0]
            ):
                continue
            reader = _Reader(original, self.raw, self.deadline, None, None, nested=True)
            reader.codes = self.codes
            found = reader.run(envelope_recipient)
            if found.findings:
                return found
        return None

    def _bounce_like(self, sender: str, subject: str) -> bool:
        msg = self.msg
        # "From: <>" is the null sender's own mark: only reports are sent from it.
        null_from = msg.get("From") is not None and not sender and "<>" in _text(msg.get("From"))
        return (
            bool(self.status_parts)
            or bool(msg.get("X-Failed-Recipients"))
            or bool(_DAEMON.match(sender))
            or null_from
            or str(msg.get_content_type()) == "multipart/report"
            or (
                bool(_BOUNCE_SUBJECT.search(subject))
                and not wording.AUTO_REPLY_SUBJECT.search(subject)
            )
        )

    def _auto_reply(self, subject: str) -> bool:
        msg = self.msg
        auto = _text(msg.get("Auto-Submitted")).lower()
        if auto.startswith("auto-replied"):
            return True
        if msg.get("X-Autoreply") or msg.get("X-Autorespond") or msg.get("X-Autoresponse"):
            return True
        if _text(msg.get("Precedence")).lower() == "auto_reply":
            return True
        if _text(msg.get("X-Auto-Response-Suppress")) and wording.AUTO_REPLY_SUBJECT.search(
            subject
        ):
            return True
        return wording.AUTO_REPLY_SUBJECT.search(subject) is not None

    def _unsubscribe_token(self, subject: str, own: str) -> str:
        found = _UNSUBSCRIBE.search(subject)
        if found is None:
            # A mail program that puts the mailto's subject in the body; never a link's token.
            found = _UNSUBSCRIBE.search(own[:2000])
        return found.group(1) if found else ""

    # -- categories -------------------------------------------------------------------------

    def _names_our_side(self, text: str, recipient: str) -> bool:
        """Whether a failure names the sender's domain and not the recipient's: a refusal
        of our address ("sender.example does not exist"), never about the person."""
        code = _code_of(text)
        if not text or (code and not code.endswith((".0.0", ".1.0", ".1.7", ".1.8"))):
            return False
        local = recipient.partition("@")[0].lower()
        if local and local in text.lower():
            return False
        ours = {
            a.rpartition("@")[2]
            for a in _addresses(self.msg.get_all("To", []) or [])
            + [x for o in self.originals[:2] for x in _addresses(o.get_all("From", []) or [])]
        }
        theirs = recipient.rpartition("@")[2].lower()
        low = text.lower()
        return any(
            d and d != theirs and re.search(rf"(?<![\w.-]){re.escape(d)}(?![\w-])", low)
            for d in ours
        ) and (not theirs or theirs not in low)

    def _category(self, code: str, text: str) -> BounceKind | None:
        if wording.about_the_sender(code):
            return K.POLICY
        by_words = wording.category_of_text(text)
        if by_words is not None:
            return by_words
        return wording.category_of_code(code, **self.codes)

    # -- RFC 3464 delivery status notifications ---------------------------------------------

    def _status_blocks(self) -> list[Message]:
        blocks: list[Message] = []
        for part in self.status_parts:
            payload = part.get_payload()
            if isinstance(payload, list) and payload and not part.get("Content-Transfer-Encoding"):
                blocks += [b for b in payload if isinstance(b, Message)]
                continue
            text = (
                _decode(part)
                if not isinstance(payload, list)
                else "\n\n".join(str(b) for b in payload)
            )
            for block in re.split(r"\n[ \t]*\r?\n", text.replace("\r\n", "\n")):
                if block.strip():
                    blocks.append(HeaderParser().parsestr(block.strip() + "\n"))
        return blocks

    def _dsn(self, own: str) -> list[RecipientFinding]:
        recipients: list[_Recipient] = []
        for block in self._status_blocks():
            final = _typed_address(block.get("Final-Recipient"))
            original = _typed_address(block.get("Original-Recipient"))
            action = _text(block.get("Action")).lower()
            if not final and not original and not action:
                continue  # the per-message fields (Reporting-MTA, Arrival-Date)
            if not final and not original:
                final = _typed_address(block.get("X-Actual-Recipient"))
            address = original or final
            recipients.append(
                _Recipient(
                    address,
                    final,
                    action,
                    _text(block.get("Status")),
                    _text(block.get("Diagnostic-Code"))[:1000],
                )
            )
            if len(recipients) >= MAX_RECIPIENTS:
                break
        self.deadline.check()
        failed = _addresses(self.msg.get_all("X-Failed-Recipients", []) or [])
        if len(recipients) == 1 and not recipients[0].address and len(failed) == 1:
            recipients[0].address = failed[0]  # a path or a program, not an address
        addresses = [r.address for r in recipients if r.address]
        findings: list[RecipientFinding] = []
        seen: set[str] = set()
        for r in recipients:
            if r.address and r.address in seen:
                continue  # the same recipient twice (some servers repeat the block)
            seen.add(r.address)
            findings.append(self._judge(r, own, addresses))
        return findings

    def _judge(self, r: _Recipient, own: str, everyone: list[str]) -> RecipientFinding:
        action = r.action.split()[0] if r.action else ""
        if "\x1b$B" in r.diagnostic:
            r.diagnostic = r.diagnostic.encode("latin-1", "replace").decode("iso2022_jp", "replace")
        diagnostic = (
            r.diagnostic.partition(";")[2].strip() if ";" in r.diagnostic[:20] else (r.diagnostic)
        )
        about = _about(own, [a for a in (r.address, r.final) if a], everyone)
        status = _code_of(r.status)
        remote = _code_of(diagnostic)
        text_code = remote or _code_of(about)
        # The remote's own code decides over Status when they disagree, unless Status is
        # the more specific of the two (5.0.0 is no opinion).
        code = status
        if text_code and (not status or status.endswith(".0.0") or text_code[0] == status[0]):
            code = text_code if not text_code.endswith(".0.0") or not status else status
        if not code:
            reply = _REPLY.search(diagnostic) or _REPLY.search(about)
            if reply:
                code = f"{reply.group(1)}.0.0"
        if action in ("delivered", "relayed", "expanded"):
            return RecipientFinding(r.address, K.DELIVERED, code, diagnostic[:300], action)
        if action == "delayed" or (
            not action and status.startswith("4.") and wording.DELAYED.search(own)
        ):
            return RecipientFinding(r.address, K.DELAYED, code, diagnostic[:300], "delayed")
        # The remote's words, then a specific code, then the notice's words about them.
        category = wording.category_of_text(_inner(diagnostic))
        if wording.about_the_sender(code) or self._names_our_side(diagnostic, r.address):
            category = K.POLICY
        if category is None and code and not code.endswith(".0.0"):
            category = wording.category_of_code(code, **self.codes)
        if category is None:
            category = wording.category_of_text(about)
        if category is None:
            category = wording.category_of_code(code, **self.codes)
        if category is None:
            category = K.SOFT if action == "failed" else K.UNRECOGNISED
        if category == K.HARD and code.startswith("4.") and action != "failed":
            category = K.SOFT
        reason = diagnostic or _first_line_with(about, r.address) or about[:300]
        return RecipientFinding(r.address, category, code, reason[:300].strip(), action or "failed")

    # -- ARF complaints ---------------------------------------------------------------------

    def _feedback(self) -> list[RecipientFinding]:
        findings: list[RecipientFinding] = []
        for part in self.feedback_parts or [self.msg]:
            payload = part.get_payload()
            fields = payload[0] if isinstance(payload, list) and payload else None
            if not isinstance(fields, Message) or part is self.msg:
                fields = HeaderParser().parsestr(_decode(part).strip() + "\n")
            kind = _text(fields.get("Feedback-Type")).lower() or "abuse"
            recipients = _addresses(fields.get_all("Original-Rcpt-To", []) or [])
            if not recipients:
                recipients = _addresses(fields.get_all("Removal-Recipient", []) or [])
            if not recipients:
                for original in self.originals[:1]:
                    recipients = _addresses(original.get_all("To", []) or [])[:1]
            if kind in ("opt-out", "unsubscribe"):
                category = K.UNSUBSCRIBE
            elif kind in ("abuse", "fraud", "other", "virus"):
                category = K.COMPLAINT
            else:
                # auth-failure (DMARC and DKIM failure reports), not-spam: about our mail.
                category = K.POLICY
            for address in recipients[:MAX_RECIPIENTS] or [""]:
                findings.append(
                    RecipientFinding(address, category, "", f"feedback report: {kind}", "complaint")
                )
        return findings

    # -- bounces in no standard shape -------------------------------------------------------

    def _text_bounce(self, own: str, notice: str, bounce_like: bool) -> list[RecipientFinding]:
        msg = self.msg
        detected: list[bytes | str] = []
        try:
            temporary, permanent = all_failures(msg)
            detected = [*sorted(permanent), *sorted(temporary - permanent)]
        except Exception:  # a detector that trips on odd input must not stop the mailbox
            detected = []
        self.deadline.check()
        found: list[str] = []
        for item in detected:
            text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            found.append(text.strip().strip("<>").lower())
        found += _addresses(msg.get_all("X-Failed-Recipients", []) or [])
        ours = set(_addresses(msg.get_all("From", []) or []))
        ours |= set(_addresses(msg.get_all("To", []) or []))
        ours |= set(_addresses(msg.get_all("Reply-To", []) or []))

        def kept(addresses: list[str]) -> list[str]:
            return [
                a
                for a in dict.fromkeys(addresses)
                if a and "@" in a and a not in ours and not _MESSAGE_ID_LIKE.match(a)
            ]

        found = kept(found)
        if not found and bounce_like:
            # The detectors found nobody, or only us: the notice's own lines name them.
            found = kept(_failed_addresses(own, ours))
        if not found:
            if not bounce_like:
                return []
            category = wording.category_of_text(own)
            code = _code_of(own)
            if category is None and not code:
                return []
            if category is None:
                category = wording.category_of_code(code, **self.codes)
            if category is None:
                return []
            if wording.DELAYED.search(own) and category in (K.SOFT, None):
                category = K.DELAYED
            return [RecipientFinding("", category, code, _first_failure_line(own)[:300], "failed")]
        findings = []
        for address in found[:MAX_RECIPIENTS]:
            about = _about(own, [address], found) or own
            code = _code_of(about)
            if not code:
                reply = _REPLY.search(about)
                code = f"{reply.group(1)}.0.0" if reply else ""
            category = self._category(code, _inner(about))
            if category == K.HARD and self._names_our_side(_first_failure_line(about), address):
                category = K.POLICY
            if category is None:
                category = K.SOFT
            delayed = wording.DELAYED.search(own) and not re.search(
                r"permanent|fatal|gave up|giving up|could not be delivered|failed", own, re.I
            )
            # A warning that delivery goes on is a delay whatever reason it quotes ("451
            # SPAM not accepted ... Delivery attempts will continue").
            if (wording.STILL_TRYING.search(own) and category != K.HARD) or (
                delayed and category in (K.SOFT, K.FULL)
            ):
                category = K.DELAYED
            reason = _first_line_with(about, address) or _first_failure_line(about)
            findings.append(
                RecipientFinding(
                    address,
                    category,
                    code,
                    reason[:300].strip(),
                    "delayed" if category == K.DELAYED else "failed",
                )
            )
        return findings


_UNSUBSCRIBE_ALONE = re.compile(rf"\s*{re.escape(_SUBJECT_WORD)}\b", re.I)
_COMPLAINT_SUBJECT = re.compile(r"complaint about message|abuse report|spam report", re.I)


def _subject_reason(subject: str) -> str:
    """Sendmail's "Returned mail: User unknown" puts the reason in the subject."""
    found = re.match(r"\s*returned mail:\s*(.+)", subject, re.I)
    return f"\n{found.group(1)}" if found else ""


def _inner(text: str) -> str:
    """The remote's own words: after the last specific status code when a wrapper
    (such as "5.1.0 Unknown address error 550-'5.7.1 blocked'") quotes another."""
    codes = list(_CODE.finditer(text))
    wrapper = codes[0].group(0).endswith((".0.0", ".1.0", ".3.0")) if codes else False
    if wrapper and len(codes) > 1 and codes[-1].group(0) != codes[0].group(0):
        return text[codes[-1].start() :]
    return text


def _named(findings: list[RecipientFinding]) -> list[str]:
    return list(dict.fromkeys(f.address for f in findings if f.address))


def _typed_address(value: object) -> str:
    """The address of an RFC 3464 recipient field, if it is of type rfc822 (or untyped)."""
    text = _text(value)
    if not text:
        return ""
    kind, sep, address = text.partition(";")
    if not sep:
        address, kind = kind, "rfc822"
    if kind.strip().lower() not in ("rfc822", "utf-8", "smtp", "internet"):
        return ""
    address = address.strip().strip("<>").strip()
    found = _ADDRESS.search(address)
    return found.group(0).lower() if found else ""


def status_code(status: str, diagnostic: str) -> str:
    """The most specific enhanced status code a status and a server's words give.

    ``5.0.0`` with ``550 5.1.1 ...`` means 5.1.1; ``550 user unknown`` with no code means
    5.0.0 (the class of the reply).
    """
    code = _code_of(status)
    said = _code_of(diagnostic)
    if said and (not code or code.endswith(".0.0")):
        return said
    if not code:
        reply = _REPLY.search(diagnostic)
        if reply:
            code = f"{reply.group(1)}.0.0"
    return code


def _code_of(text: str) -> str:
    codes = [".".join(m.groups()) for m in _CODE.finditer(text[:2000])]
    if not codes:
        return ""
    # A wrapper such as "5.1.0 Unknown address error ... 5.7.1 IP blacklisted": the inner,
    # more specific code is the remote's own.
    specific = [c for c in codes if not c.endswith(".0.0") and not c.endswith(".1.0")]
    if len(specific) > 1:
        return specific[-1]
    return specific[0] if specific else codes[0]


def _about(text: str, addresses: list[str], everyone: list[str]) -> str:
    """The lines of a notice about one recipient: from a line naming them to the next one
    naming someone else."""
    if len({a.lower() for a in everyone if a}) <= 1:
        return text[:4000]
    if not text or not addresses:
        return ""
    lines = text.splitlines()
    wanted = [a.lower() for a in addresses]
    others = [a.lower() for a in everyone if a and a.lower() not in wanted]
    taken: list[str] = []
    inside = False
    count = 0
    for line in lines:
        low = line.lower()
        if any(a in low for a in wanted):
            inside = True
            count = 0
        elif inside and any(o in low for o in others):
            inside = False
        if inside:
            taken.append(line)
            count += 1
            if count > 12:
                inside = False
    if not taken and len(set(everyone)) <= 1:
        return text[:4000]
    return "\n".join(taken)[:4000]


def _first_line_with(text: str, address: str) -> str:
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if line and (_CODE.search(line) or _REPLY.search(line)):
            # The server's sentence often goes on over the next lines ("550 <x@y>:" /
            # "Destinatario desconocido"): up to the next blank line.
            taken = [line]
            for more in lines[i + 1 : i + 4]:
                if not more or sum(len(t) for t in taken) > 200:
                    break
                taken.append(more)
            return " ".join(taken)
    return ""


def _first_failure_line(text: str) -> str:
    for line in text.splitlines():
        if _CODE.search(line) or wording.category_of_text(line):
            return line.strip()
    return ""


# A Message-ID that looks like an address: a long run of hex digits and dots.
_MESSAGE_ID_LIKE = re.compile(r"^[0-9a-f.$=_-]{16,}@", re.I)
_FAILED_LINE = re.compile(
    r"^\s*<?([^\s<>@]{1,64}@[A-Za-z0-9.-]+\.[A-Za-z]{2,})>?\s*:?\s*$|"  # an address alone
    r"^\s*<([^\s<>@]{1,64}@[A-Za-z0-9.-]+\.[A-Za-z]{2,})>:|"  # qmail, Postfix text
    r"rcpt to:?\s*<([^\s<>@]{1,64}@[A-Za-z0-9.-]+\.[A-Za-z]{2,})>|"
    r"\b(?:to|for|recipient|address|destinataire|empf[äa]nger|destinatario)\s*:?\s*<?"
    r"([^\s<>@\"'(),;:]{1,64}@[A-Za-z0-9.-]+\.[A-Za-z]{2,})>?",
    re.I | re.M,
)


def _failed_addresses(text: str, ours: set[str]) -> list[str]:
    found = []
    for match in _FAILED_LINE.finditer(text[:20000]):
        address = next(g for g in match.groups() if g).lower().strip(".")
        if address not in ours and not _MESSAGE_ID_LIKE.match(address):
            found.append(address)
    return list(dict.fromkeys(found))[:MAX_RECIPIENTS]
