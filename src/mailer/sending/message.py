"""Per-recipient message bytes from an issue compiled once.

:class:`MessageTemplate` encodes everything that is the same for every recipient once:
the shared headers and both MIME parts, quoted-printable encoded and split around the
per-recipient placeholders. Making a recipient's message is then a join of pre-encoded
byte segments with a few small encoded values (about 10 µs), instead of building an
``EmailMessage`` (about 7 ms) or running Jinja, MJML or premailer again.

Splicing works because each static segment ends with a quoted-printable soft line break
(``=\\r\\n``), which decodes to nothing: the substituted value starts on a fresh encoded
line and no line ever exceeds 76 characters.
"""

from __future__ import annotations

import binascii
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate

from mailer.config import Settings
from mailer.errors import ConfigError
from mailer.sending import headers
from mailer.site import tokens, urls

# Token purposes, named in mailer.site.tokens with every other purpose.
UNSUBSCRIBE = tokens.UNSUBSCRIBE
PREFERENCES = tokens.PREFERENCES
_SOFT_BREAK = b"=\r\n"


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
    data = text.replace("\r\n", "\n").encode("utf-8")
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
            tag = tokens.make(self._key, tokens.MESSAGE_ID, self.send_id, recipient.delivery_id)
            nonce = tag.partition(".")[2][:10].lower().replace("-", "x").replace("_", "y")
        else:
            nonce = secrets.token_hex(5)  # proofs: every one is a new message
        return f"<{self.send_id}.{recipient.delivery_id}.{nonce}@{self._domain}>"

    def render(self, recipient: Recipient) -> tuple[str, bytes]:
        """``(message_id, message bytes)`` for one recipient."""
        token = self.unsubscribe_token(recipient)
        unsubscribe = urls.unsubscribe_url(self.settings, token)
        preferences = urls.preferences_url(
            self.settings, tokens.make(self._key, PREFERENCES, recipient.subscriber_id)
        )
        # Filled only where the templates put a placeholder as a whole line of the text
        # part or a whole attribute value in the HTML (see mailer.render.compile).
        values = (
            _qp_open(f"\n{unsubscribe}\n"),
            _qp_open(f"\n{preferences}\n"),
            _qp_open(f'"{unsubscribe}"'),
            _qp_open(f'"{preferences}"'),
        )
        message_id = self.message_id(recipient)
        mailto = urls.unsubscribe_mailto(self.settings, token)
        head = b"".join(
            (
                headers.address("To", recipient.name, recipient.email),
                self._date_header(),
                headers.raw("Message-ID", message_id),
                headers.list_unsubscribe(unsubscribe, mailto),
                self._shared,
            )
        )
        body = b"".join(values[p] if isinstance(p, int) else p for p in self._body)
        return message_id, head + body


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
