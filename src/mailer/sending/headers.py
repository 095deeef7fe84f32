"""Every header line mailer writes, built from typed values; nothing else writes header bytes.

A value that reached this far has been validated where it was read (mailer.toml, issue.yaml,
the subscriber import), but header injection is too costly to rest on that alone: here
every value is refused if it holds a CR, LF or other control character, and anything that
is not plain ASCII, or looks like an RFC 2047 encoded word (``=?``), is encoded, so the
inbox shows exactly what the archive shows. Lines are folded to stay within 78 characters.
"""

from __future__ import annotations

import base64
import json
import re

from mailer.errors import InvalidInput

# C0 and C1 controls (CR and LF among them), and the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SPECIALS = set('()<>@,;:\\".[]')
# Header names are printable ASCII without a colon (RFC 5322 section 2.2).
_NAME = re.compile(r"[!-9;-~]+")
_LINE = 78


def clean(value: str, what: str) -> str:
    """``value`` if it may stand in a header; :class:`InvalidInput` if it holds a control
    character, which could start a header of its own."""
    if _CONTROL.search(value):
        raise InvalidInput(f"{what} contains a line break or control character")
    return value


def strip_controls(value: str) -> str:
    """A display name with control characters replaced by spaces (names typed by people)."""
    return " ".join(_CONTROL.sub(" ", value).split())


def _needs_encoding(word: str) -> bool:
    return not word.isascii() or "=?" in word


def encoded_words(run: str) -> list[str]:
    """``run`` as RFC 2047 base64 words of at most 75 characters, split between characters."""
    words, chunk = [], ""
    for char in run:
        if len((chunk + char).encode()) > 45:  # 45 bytes -> 60 base64 characters + 12 framing
            words.append(chunk)
            chunk = ""
        chunk += char
    words.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(w.encode()).decode('ascii')}?=" for w in words]


def _atoms(text: str, *, phrase: bool) -> list[str]:
    """Words as header atoms: plain ASCII words as they are, every run of other words (with
    the spaces inside it, which RFC 2047 would otherwise drop) encoded. In a phrase (a
    display name) RFC 5322 specials must be encoded too."""

    def plain(word: str) -> bool:
        return not _needs_encoding(word) and not (phrase and _SPECIALS & set(word))

    atoms: list[str] = []
    run: list[str] = []
    for word in text.split():
        if plain(word):
            if run:
                atoms += encoded_words(" ".join(run))
                run = []
            atoms.append(word)
        else:
            run.append(word)
    if run:
        atoms += encoded_words(" ".join(run))
    return atoms


def fold(name: str, atoms: list[str]) -> bytes:
    """``Name: atom atom ...`` folded at spaces so lines stay within 78 characters."""
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"{name!r} is not a header name")
    for atom in atoms:
        clean(atom, f"the {name} header")
    lines, line = [], f"{name}:"
    for atom in atoms:
        if len(line) + 1 + len(atom) > _LINE and line != f"{name}:":
            lines.append(line)
            line = ""
        line += f" {atom}"
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def text(name: str, value: str) -> bytes:
    """An unstructured header (Subject): encoded where needed, folded."""
    clean(value, f"the {name}")
    return fold(name, _atoms(value, phrase=False) or [""])


# A display name of plain words (no RFC 5322 specials, nothing to encode) and an ASCII
# address: the header is written as it is, which is what the general path below gives
# for them, in a fraction of the time (it is built for every copy of a send).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9'-]+(?: [A-Za-z0-9'-]+)*")
_PLAIN_ADDRESS = re.compile(r"[!#-'*+\-/-9=?A-Z^-~]+@[A-Za-z0-9.-]+")


def address(name: str, display: str, email: str) -> bytes:
    """An address header with an optional display name. An internationalised mailbox
    (RFC 6531) travels as UTF-8; only the name is encoded."""
    if (
        _PLAIN_ADDRESS.fullmatch(email)
        and _PLAIN_NAME.fullmatch(display)
        and len(name) + len(display) + len(email) + 5 <= _LINE
        and _NAME.fullmatch(name)
    ):
        return f"{name}: {display} <{email}>\r\n".encode("ascii")
    clean(email, f"the {name} address")
    if any(c in email for c in "<>, "):
        raise InvalidInput(f"the {name} address {email!r} is not one plain address")
    atoms = _atoms(strip_controls(display), phrase=True) if display else []
    return fold(name, [*atoms, f"<{email}>" if atoms else email])


def list_id(title: str, identifier: str) -> bytes:
    """``List-Id: Title <identifier>`` (RFC 2919)."""
    clean(identifier, "the List-Id")
    if not re.fullmatch(r"[A-Za-z0-9.-]+", identifier):
        raise InvalidInput(f"{identifier!r} is not a list identifier")
    return fold("List-Id", [*_atoms(title, phrase=True), f"<{identifier}>"])


def raw(name: str, value: str) -> bytes:
    """A header whose value mailer made itself from checked parts (Message-ID, Date, the
    List-Unsubscribe URLs); still refused if a control character got in."""
    clean(value, f"the {name} header")
    if not value.isascii():
        raise InvalidInput(f"the {name} header must be ASCII")
    return f"{name}: {value}\r\n".encode("ascii")


def list_unsubscribe(https: str, mailto: str) -> bytes:
    """One-click unsubscribe (RFC 8058 needs the https URL; the mailto is the fallback)."""
    for url in (https, mailto):
        clean(url, "the List-Unsubscribe URL")
        if not url.isascii() or any(c in url for c in "<>, "):
            raise InvalidInput(f"{url!r} cannot stand in List-Unsubscribe")
    return f"List-Unsubscribe: <{https}>,\r\n <{mailto}>\r\n".encode("ascii")


ONE_CLICK = b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
MIME_VERSION = b"MIME-Version: 1.0\r\n"


def multipart_alternative(boundary: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9=_.-]{1,70}", boundary):
        raise InvalidInput(f"{boundary!r} is not a MIME boundary")
    return f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'.encode("ascii")


# The name under which a relay hands the copy's id back in its webhook events: Postmark
# returns ``X-PM-Metadata-mailer-id`` as the event's Metadata, SendGrid the X-SMTPAPI
# unique argument as a field of each event (mailer.bounces.events reads them).
RELAY_ID = "mailer-id"


def relay_id(profile: str, message_id: str) -> bytes:
    """The header that carries the copy's id through ``profile``'s webhooks, or nothing
    for a relay whose events quote the Message-ID itself. Only the id's part before the
    "@" travels (Postmark keeps 80 characters of a value)."""
    local = message_id.strip().strip("<>").partition("@")[0]
    if profile == "postmark":
        return raw(f"X-PM-Metadata-{RELAY_ID}", local)
    if profile == "sendgrid":
        return raw("X-SMTPAPI", json.dumps({"unique_args": {RELAY_ID: local}}))
    return b""
