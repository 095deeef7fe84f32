"""Signed, URL-safe tokens for unsubscribe and preference links.

A token names its purpose and a few integers (a subscriber id, a send id) and carries a
truncated HMAC-SHA256 made with ``MAILER_SECRET_KEY``, so nobody can unsubscribe someone
else by editing a number in a link. Tokens are deterministic: the same subscriber gets
the same link in every copy, which keeps resends and retries identical.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from mailer.config import Settings
from mailer.errors import BadToken

_MAC_BYTES = 12


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, purpose: str, payload: str) -> bytes:
    return hmac.new(key, f"{purpose}:{payload}".encode(), hashlib.sha256).digest()[:_MAC_BYTES]


def make(key: bytes, purpose: str, *ids: int) -> str:
    """``make(key, "unsubscribe", subscriber_id, send_id)`` -> ``"12-7.Zx3..."``."""
    payload = "-".join(str(int(i)) for i in ids)
    return f"{payload}.{_b64(_mac(key, purpose, payload))}"


def read(key: bytes | Sequence[bytes], purpose: str, token: str) -> tuple[int, ...]:
    """The integers a valid token carries; :class:`BadToken` otherwise.

    ``key`` may be several keys, the current one first: after a deliberate rotation, links
    signed with the previous key (``MAILER_SECRET_KEY_PREVIOUS``) keep working.
    """
    payload, _, mac = token.partition(".")
    try:
        given = _unb64(mac)
        ids = tuple(int(part) for part in payload.split("-"))
    except ValueError:
        raise BadToken("this link is not valid") from None
    keys = [key] if isinstance(key, bytes) else list(key)
    if not any(hmac.compare_digest(given, _mac(k, purpose, payload)) for k in keys):
        raise BadToken("this link is not valid")
    return ids


def keys_of(settings: Settings) -> list[bytes]:
    """The keys a link may be signed with: the current one, then the previous one."""
    found = [settings.require_secret_key()]
    previous = settings.previous_secret_key()
    if previous is not None:
        found.append(previous)
    return found


# -- tokens inside email addresses ----------------------------------------------------------

_ADDRESS_MAC_CHARS = 13  # 13 base32 characters: 65 bits of the HMAC


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
    payload, _, mac = token.lower().rpartition(".")
    try:
        ids = tuple(int(part) for part in payload.split("."))
    except ValueError:
        raise BadToken("this address token is not valid") from None
    if not ids or not hmac.compare_digest(
        mac, make_for_address(key, purpose, *ids).rpartition(".")[2]
    ):
        raise BadToken("this address token is not valid")
    return ids
