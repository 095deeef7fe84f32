"""Per-recipient message bytes from an issue compiled once.

:class:`MessageTemplate` encodes everything that is the same for every recipient once:
the shared headers and both MIME parts, quoted-printable encoded and split around the
per-recipient placeholders. Making a recipient's message is then a join of pre-encoded
byte segments with a few small encoded values (about 10 µs), instead of building an
``EmailMessage`` (about 7 ms) or running Jinja, MJML or premailer again.

Splicing works because each static segment ends with a quoted-printable soft line break
(``=\\r\\n``), which decodes to nothing: the substituted value starts on a fresh encoded
line and no line ever exceeds 76 characters.

For SMTP the template also keeps the segments as they travel after DATA: line endings
made CRLF and every line that starts with a dot doubled (RFC 5321 section 4.5.2), once
per issue, so a message is ready for the wire without the scan over the whole message
that an SMTP client library makes for each copy. A segment that begins a line is stuffed
as a line start, so a dot right after a splice point is never missed; the few bytes that
change per recipient are checked when they are spliced in.
"""

from __future__ import annotations

import binascii
import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate

from mailer import tokens, urls
from mailer.config import Settings
from mailer.errors import ConfigError
from mailer.sending import headers

# Token purposes, named in mailer.tokens with every other purpose.
UNSUBSCRIBE = tokens.UNSUBSCRIBE
PREFERENCES = tokens.PREFERENCES
_SOFT_BREAK = b"=\r\n"
_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")


def crlf(data: bytes) -> bytes:
    """Every line ending as CRLF, the only one SMTP knows."""
    return _LINE_ENDINGS.sub(b"\r\n", data)


def stuff(data: bytes, at_line_start: bool = True) -> bytes:
    """``data`` with a dot added before each line that starts with one (dot-stuffing), so no
    line of a message can be read as the end of the data. ``at_line_start`` says whether
    ``data`` begins a line of the message, as a segment after a line break does."""
    out = data.replace(b"\n.", b"\n..")
    return b"." + out if at_line_start and out.startswith(b".") else out


def unstuff(data: bytes) -> bytes:
    """The message as stored, from the bytes that travel after DATA (tests use this)."""
    out = data.replace(b"\n..", b"\n.")
    return out[1:] if out.startswith(b"..") else out


def _wire_segments(segments: list[bytes | int], at_line_start: bool) -> list[bytes | int]:
    """The segments dot-stuffed for the wire. Each spliced value ends a line (a soft line
    break), so the segment after it starts one."""
    out: list[bytes | int] = []
    for piece in segments:
        if isinstance(piece, int):
            out.append(piece)
            at_line_start = True
            continue
        out.append(stuff(crlf(piece), at_line_start))
        at_line_start = piece.endswith(b"\n") if piece else at_line_start
    return out


@dataclass(frozen=True)
class Recipient:
    """Who one copy goes to, and the ids its links and Message-ID are made from."""

    email: str
    name: str = ""
    subscriber_id: int = 0
    delivery_id: int = 0


@dataclass(frozen=True)
class Content:
    """What a send delivers: frozen when the send is created, so a resume sends the same."""

    slug: str
    subject: str
    html: str
    text: str


def _qp(text: str) -> bytes:
    # A lone CR is a line break to a reader but not to quoted-printable: make it LF first.
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    # b2a_qp writes its soft line breaks with LF; the wire format wants CRLF throughout.
    return encoded.replace(b"\n", b"\r\n")


def _qp_open(text: str) -> bytes:
    """Quoted-printable that ends in a soft line break, so a value can be spliced after it.

    The break's "=" must keep the last line within 76 characters: a full last line is split
    first, never inside an "=XX" escape.
    """
    encoded = _qp(text)
    start = encoded.rfind(b"\r\n") + 2 if b"\r\n" in encoded else 0
    last = encoded[start:]
    if len(last) >= 76:
        cut = 75
        while cut > 72 and b"=" in last[cut - 2 : cut]:
            cut -= 1
        encoded = encoded[:start] + last[:cut] + _SOFT_BREAK + last[cut:]
    return encoded + _SOFT_BREAK


# What quoted-printable leaves as it is: printable ASCII but "=" (and no space, which it
# would encode at a line's end). Personal links are made of these.
_PLAIN_QP = re.compile(r"[!-<>-~]*")


def _link_line(url: str) -> bytes:
    """``_qp_open(f"\\n{url}\\n")``, a link on a line of its own in the text part."""
    if len(url) < 76 and _PLAIN_QP.fullmatch(url):
        return b"\r\n" + url.encode("ascii") + b"\r\n" + _SOFT_BREAK
    return _qp_open(f"\n{url}\n")


def _link_attribute(url: str) -> bytes:
    """``_qp_open(f'"{url}"')``, a link as an attribute value in the HTML part."""
    if len(url) < 74 and _PLAIN_QP.fullmatch(url):
        return b'"' + url.encode("ascii") + b'"' + _SOFT_BREAK
    return _qp_open(f'"{url}"')


def _segments(text: str, placeholders: Sequence[str], offset: int = 0) -> list[bytes | int]:
    """Quoted-printable segments of ``text``, with placeholder indexes between them."""
    out: list[bytes | int] = []
    rest = text
    while True:
        found = [(rest.find(p), i) for i, p in enumerate(placeholders) if p in rest]
        if not found:
            out.append(_qp(rest))
            return out
        at, index = min(found)
        out.append(_qp_open(rest[:at]))
        out.append(index + offset)
        rest = rest[at + len(placeholders[index]) :]


class MessageTemplate:
    """Builds each recipient's RFC 5322 message from byte segments encoded once."""

    def __init__(
        self,
        settings: Settings,
        content: Content,
        *,
        list_id: str,
        send_id: int = 0,
        subject_prefix: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.send_id = send_id
        self.clock = clock
        self._key = settings.require_secret_key()
        self._domain = settings.sender.domain
        self._profile = settings.transport.smtp.profile
        self._placeholders = urls.PLACEHOLDERS
        self._boundary = f"=_mailer_{secrets.token_hex(12)}"
        sender = settings.sender
        shared = [
            headers.address("From", sender.from_name, sender.from_address),
            headers.text("Subject", subject_prefix + content.subject),
        ]
        if sender.reply_to:
            shared.append(headers.address("Reply-To", "", sender.reply_to))
        shared += [
            headers.list_id(settings.name, list_id),
            headers.ONE_CLICK,
            headers.MIME_VERSION,
            headers.multipart_alternative(self._boundary),
        ]
        self._shared = b"".join(shared)
        part = (
            '--{b}\r\nContent-Type: text/{kind}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        b = self._boundary
        self._body: list[bytes | int] = [
            b"\r\nThis is a multipart message in MIME format.\r\n\r\n",
            part.format(b=b, kind="plain").encode(),
            *_segments(content.text, [f"\n{p}\n" for p in self._placeholders]),
            f"\r\n{part.format(b=b, kind='html')}".encode(),
            *_segments(content.html, [f'"{p}"' for p in self._placeholders], offset=2),
            f"\r\n--{b}--\r\n".encode(),
        ]
        # The shared headers come first after the per-recipient ones, which end a line.
        self._wire_shared = stuff(crlf(self._shared))
        self._wire_body = _wire_segments(self._body, at_line_start=True)
        self._date_second = -1
        self._date = b""

    def unsubscribe_token(self, recipient: Recipient) -> str:
        return tokens.make(self._key, UNSUBSCRIBE, recipient.subscriber_id, self.send_id)

    def _date_header(self) -> bytes:
        # Formatting a date costs more than the whole splice: do it once per second.
        now = self.clock()
        second = int(now)
        if second != self._date_second:
            self._date_second = second
            self._date = headers.raw("Date", formatdate(now, localtime=False, usegmt=True))
        return self._date

    def message_id(self, recipient: Recipient) -> str:
        """The same for every copy of one ledger row, so a copy sent again after a crash
        carries the Message-ID of the first and mail programs can drop the duplicate."""
        if recipient.delivery_id:
            return tokens.make_message_id(
                self._key, self.send_id, recipient.delivery_id, self._domain
            )
        nonce = secrets.token_hex(5)  # proofs: every one is a new message
        return f"<{self.send_id}.{recipient.delivery_id}.{nonce}@{self._domain}>"

    def render(
        self, recipient: Recipient, *, wire: bool = False, address: str | None = None
    ) -> tuple[str, bytes]:
        """``(message_id, message bytes)`` for one recipient.

        ``wire``: the bytes as they travel after SMTP's DATA (dot-stuffed), without the
        final ``.`` line. ``address``: the form of the address to show in To, when it
        differs from the stored one (the ASCII form of an international domain, for a
        server without SMTPUTF8).
        """
        token = self.unsubscribe_token(recipient)
        unsubscribe = urls.unsubscribe_url(self.settings, token)
        preferences = urls.preferences_url(
            self.settings, tokens.make(self._key, PREFERENCES, recipient.subscriber_id)
        )
        # Filled only where the templates put a placeholder as a whole line of the text
        # part or a whole attribute value in the HTML (see mailer.render.compile).
        values = (
            _link_line(unsubscribe),
            _link_line(preferences),
            _link_attribute(unsubscribe),
            _link_attribute(preferences),
        )
        message_id = self.message_id(recipient)
        mailto = urls.unsubscribe_mailto(self.settings, token)
        head = b"".join(
            (
                headers.address("To", recipient.name, address or recipient.email),
                self._date_header(),
                headers.raw("Message-ID", message_id),
                headers.relay_id(self._profile, message_id),
                headers.list_unsubscribe(unsubscribe, mailto),
            )
        )
        # One join for the whole message: the body is most of its 80 KB, copied once.
        if not wire:
            pieces = [head, self._shared]
            pieces += [values[p] if isinstance(p, int) else p for p in self._body]
            return message_id, b"".join(pieces)
        # Header lines start with a name or, folded, a space, and each value starts on a
        # fresh line of its own; checking costs less than a microsecond per copy.
        if b"\n." in head:
            head = stuff(head)
        ready = [stuff(v) if v.startswith(b".") or b"\n." in v else v for v in values]
        pieces = [head, self._wire_shared]
        pieces += [ready[p] if isinstance(p, int) else p for p in self._wire_body]
        return message_id, b"".join(pieces)


# DKIM covers every header a receiver or a filter relies on, the unsubscribe ones included.
DKIM_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"mime-version",
    b"content-type",
)


class DkimSigner:
    """Signs finished messages when MAILER_DKIM_SELECTOR, _DOMAIN and _KEY_FILE are set."""

    def __init__(self, selector: str, domain: str, private_key: bytes) -> None:
        self.selector, self.domain, self.private_key = (
            selector.encode(),
            domain.encode(),
            private_key,
        )

    @classmethod
    def from_environment(cls, env: dict[str, str] | None = None) -> DkimSigner | None:
        env = dict(os.environ) if env is None else env
        names = ("MAILER_DKIM_SELECTOR", "MAILER_DKIM_DOMAIN", "MAILER_DKIM_KEY_FILE")
        given = [n for n in names if env.get(n)]
        if not given:
            return None
        if len(given) != len(names):
            missing = ", ".join(n for n in names if n not in given)
            raise ConfigError(f"DKIM signing needs {missing} as well")
        path = env["MAILER_DKIM_KEY_FILE"]
        try:
            with open(path, "rb") as f:
                key = f.read()
        except OSError as exc:
            raise ConfigError(f"MAILER_DKIM_KEY_FILE={path}: {exc.strerror}") from exc
        return cls(env["MAILER_DKIM_SELECTOR"], env["MAILER_DKIM_DOMAIN"], key)

    def sign(self, message: bytes) -> bytes:
        import dkim

        try:
            signature = dkim.sign(
                message,
                self.selector,
                self.domain,
                self.private_key,
                include_headers=list(DKIM_HEADERS),
                linesep=b"\r\n",
            )
        except dkim.DKIMException as exc:
            raise ConfigError(f"DKIM signing failed: {exc}") from exc
        return bytes(signature) + message
