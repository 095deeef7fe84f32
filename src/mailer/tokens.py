"""Signed, URL-safe tokens for every personal link: unsubscribe, preferences, confirmation,
and the aggregate click counter.

A token names its purpose and a few integers (a subscriber id, a send id) and carries a
truncated HMAC-SHA256 made with ``MAILER_SECRET_KEY``, so nobody can unsubscribe someone
else by editing a number in a link, and a token made for one purpose is refused for any
other. Tokens are deterministic: the same subscriber gets the same link in every copy,
which keeps resends and retries identical.

Unsubscribe and preferences tokens never expire (RFC 8058 and the law expect an
unsubscribe link to keep working). A confirmation token carries the minute it was made
and expires (:func:`make_expiring`, :func:`read_expiring`), and so does the preferences
link that "manage by email" sends (``PREFERENCES_FRESH``), the only one that shows
everything held about a person: the link in every issue may be forwarded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence

from mailer.config import Settings
from mailer.errors import BadToken, ExpiredToken

_MAC_BYTES = 12

# Every purpose a token can have. Two of them are in emails already sent, so their names
# and payloads never change: UNSUBSCRIBE (subscriber id, send id) and PREFERENCES
# (subscriber id).
UNSUBSCRIBE = "unsubscribe"
PREFERENCES = "preferences"
CONFIRM = "confirm"  # (sign-up id, minute made): expires
CLICK = "click"  # a link of an issue: (slug, URL) as text
MESSAGE_ID = "message-id"  # (send id, delivery id): not a link, a stable Message-ID
FORM = "form"  # (minute made): a form of the site, for a browser that sends no Origin
APPROVAL = "approval"  # (approval request id, minute made): expires; the row says once
WEB_CHALLENGE = "web-challenge"  # a nonce sent to base_url: proves this folder's key answers
# (subscriber id, minute made): expires within hours; opens the full record (data.json)
PREFERENCES_FRESH = "preferences-fresh"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# The text form of a :func:`make` token: integers joined by "-", a dot, the MAC in URL-safe
# base64. PATTERN finds one inside other text (an email's subject, a quoted header).
_MAC_CHARS = len(_b64(bytes(_MAC_BYTES)))
_FORM = rf"[0-9]{{1,18}}(?:-[0-9]{{1,18}})*\.[A-Za-z0-9_-]{{{_MAC_CHARS}}}"
_EXACT = re.compile(_FORM)
PATTERN = rf"(?<![\w.-]){_FORM}(?![\w-])"
# A sign_text token: the text and the MAC, each in URL-safe base64.
_TEXT_EXACT = re.compile(rf"[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{{{_MAC_CHARS}}}")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, purpose: str, payload: str) -> bytes:
    # The one-shot digest: the same bytes as hmac.new(...).digest(), without building an
    # HMAC object (a send makes three of these per copy).
    return hmac.digest(key, f"{purpose}:{payload}".encode(), hashlib.sha256)[:_MAC_BYTES]


def make(key: bytes, purpose: str, *ids: int) -> str:
    """``make(key, "unsubscribe", subscriber_id, send_id)`` -> ``"12-7.Zx3..."``."""
    payload = "-".join(str(int(i)) for i in ids)
    return f"{payload}.{_b64(_mac(key, purpose, payload))}"


def read(key: bytes | Sequence[bytes], purpose: str, token: str) -> tuple[int, ...]:
    """The integers a valid token carries; :class:`BadToken` otherwise.

    The token must be exactly what :func:`make` writes: anything added, even characters
    that base64 decoding or ``int()`` would pass over, makes it invalid.

    ``key`` may be several keys, the current one first: after a deliberate rotation, links
    signed with the previous key (``MAILER_SECRET_KEY_PREVIOUS``) keep working.
    """
    if _EXACT.fullmatch(token) is None:
        raise BadToken("this link is not valid")
    payload, _, mac = token.partition(".")
    given = _unb64(mac)
    ids = tuple(int(part) for part in payload.split("-"))
    keys = [key] if isinstance(key, bytes) else list(key)
    if not any(hmac.compare_digest(given, _mac(k, purpose, payload)) for k in keys):
        raise BadToken("this link is not valid")
    return ids


def make_message_id(key: bytes, send_id: int, delivery_id: int, domain: str) -> str:
    """The Message-ID of one ledger row's copy: the send, the row and a MAC of both.

    The same for every copy of one row, so a copy sent again after a crash carries the
    Message-ID of the first. A report that quotes it names its copy (:func:`read_message_id`).
    """
    tag = make(key, MESSAGE_ID, send_id, delivery_id)
    nonce = tag.partition(".")[2][:10].lower().replace("-", "x").replace("_", "y")
    return f"<{int(send_id)}.{int(delivery_id)}.{nonce}@{domain}>"


def read_message_id(
    key: bytes | Sequence[bytes], message_id: str, domain: str
) -> tuple[int, int] | None:
    """``(send_id, delivery_id)`` of a Message-ID :func:`make_message_id` made, else None."""
    local, _, at = message_id.strip().strip("<>").partition("@")
    parts = local.split(".")
    if len(parts) != 3 or at.lower() != domain.lower() or len(local) > 60:
        return None
    try:
        send_id, delivery_id = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    if send_id <= 0 or delivery_id <= 0:
        return None
    keys = [key] if isinstance(key, bytes) else list(key)
    for k in keys:
        expected = make_message_id(k, send_id, delivery_id, domain)
        if hmac.compare_digest(expected.strip("<>").partition("@")[0], local):
            return send_id, delivery_id
    return None


def answer_challenge(key: bytes, nonce: str) -> str:
    """What this folder's ``mailer serve`` answers to ``nonce`` (see mailer.site.reach): a MAC
    bound to its own purpose, so no link of an email can be made from it, or it from one."""
    return _b64(_mac(key, WEB_CHALLENGE, nonce))


def keys_of(settings: Settings) -> list[bytes]:
    """The keys a link may be signed with: the current one, then the previous one."""
    found = [settings.require_secret_key()]
    previous = settings.previous_secret_key()
    if previous is not None:
        found.append(previous)
    return found


# -- tokens inside email addresses ----------------------------------------------------------

_ADDRESS_MAC_CHARS = 13  # 13 base32 characters: 65 bits of the HMAC
_ADDRESS_EXACT = re.compile(rf"[0-9]{{1,18}}(?:\.[0-9]{{1,18}})*\.[a-z2-7]{{{_ADDRESS_MAC_CHARS}}}")


def make_for_address(key: bytes, purpose: str, *ids: int) -> str:
    """A token for the local part of an address: lower-case letters, digits and '.'.

    Base64 is case-sensitive, and some mail systems change the case of an address they
    report back, so the MAC is written in lower-case base32: ``"412.k3v...``.
    """
    payload = ".".join(str(int(i)) for i in ids)
    mac = base64.b32encode(_mac(key, purpose, payload)).decode("ascii").lower()
    return f"{payload}.{mac[:_ADDRESS_MAC_CHARS]}"


def read_for_address(key: bytes, purpose: str, token: str) -> tuple[int, ...]:
    """The integers a :func:`make_for_address` token carries; :class:`BadToken` if not valid."""
    if _ADDRESS_EXACT.fullmatch(token.lower()) is None:
        raise BadToken("this address token is not valid")
    payload, _, mac = token.lower().rpartition(".")
    ids = tuple(int(part) for part in payload.split("."))
    if not ids or not hmac.compare_digest(
        mac, make_for_address(key, purpose, *ids).rpartition(".")[2]
    ):
        raise BadToken("this address token is not valid")
    return ids


def make_expiring(key: bytes, purpose: str, now: float, *ids: int) -> str:
    """A token that :func:`read_expiring` refuses once it is too old; ``now`` in epoch seconds."""
    return make(key, purpose, *ids, int(now // 60))


def read_expiring(
    key: bytes | Sequence[bytes], purpose: str, token: str, *, now: float, max_age_seconds: float
) -> tuple[int, ...]:
    """The ids of a valid token made less than ``max_age_seconds`` ago.

    :class:`ExpiredToken` when it is genuine but too old, :class:`BadToken` otherwise.
    """
    *ids, minute = read(key, purpose, token)
    age = now - minute * 60
    if age > max_age_seconds + 60 or age < -120:
        raise ExpiredToken("this link has expired")
    return tuple(ids)


def sign_text(key: bytes, purpose: str, text: str) -> str:
    """``text`` and its signature as one URL-safe token: for values that are not numbers."""
    body = _b64(text.encode("utf-8"))
    return f"{body}.{_b64(_mac(key, purpose, body))}"


def read_text(key: bytes | Sequence[bytes], purpose: str, token: str) -> str:
    """The text a valid :func:`sign_text` token carries; :class:`BadToken` otherwise."""
    if _TEXT_EXACT.fullmatch(token) is None:
        raise BadToken("this link is not valid")
    body, _, mac = token.partition(".")
    try:
        given = _unb64(mac)
        text = _unb64(body).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise BadToken("this link is not valid") from None
    keys = [key] if isinstance(key, bytes) else list(key)
    if not any(hmac.compare_digest(given, _mac(k, purpose, body)) for k in keys):
        raise BadToken("this link is not valid")
    return text
