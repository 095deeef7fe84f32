"""The signing key as the database knows it: a fingerprint, and the suppression key.

The database keeps an HMAC of a fixed text made with the signing key (its fingerprint), so
a mailer started with another key, or with none because the key file was lost, is refused
with one clear line instead of silently breaking every link and letting erased people be
imported again.

Erasure keeps a keyed hash of the address (:mod:`.suppression`). Its key (the suppression
key) is stored here wrapped with the signing key, so rotating the signing key re-wraps one
value and every hash stays valid. A database from before this table uses the signing key
itself as its suppression key, which keeps its existing hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from sqlmodel import Session

from mailer.config import Settings
from mailer.errors import ConfigError
from mailer.store.connections import KEY_LOCK, one_at_a_time
from mailer.store.models import Meta

FINGERPRINT = "key_fingerprint"
SUPPRESSION_KEY = "suppression_key"


def fingerprint(key: bytes) -> str:
    return hmac.new(key, b"mailer signing key fingerprint", hashlib.sha256).hexdigest()[:32]


def _pad(key: bytes, length: int) -> bytes:
    stream = b""
    counter = 0
    while len(stream) < length:
        stream += hmac.new(key, f"mailer wrap {counter}".encode(), hashlib.sha256).digest()
        counter += 1
    return stream[:length]


def wrap(data: bytes, key: bytes) -> str:
    return base64.b64encode(
        bytes(a ^ b for a, b in zip(data, _pad(key, len(data)), strict=True))
    ).decode()


def unwrap(wrapped: str, key: bytes) -> bytes:
    data = base64.b64decode(wrapped)
    return bytes(a ^ b for a, b in zip(data, _pad(key, len(data)), strict=True))


def _get(session: Session, name: str) -> str | None:
    row = session.get(Meta, name)
    return row.value if row is not None else None


def _put(session: Session, name: str, value: str) -> None:
    row = session.get(Meta, name) or Meta(name=name, value=value)
    row.value = value
    session.add(row)


def _mismatch(settings: Settings) -> ConfigError:
    source = (
        "MAILER_SECRET_KEY"
        if settings.secret_key and not settings.key_file.is_file()
        else (str(settings.key_file))
    )
    return ConfigError(
        f"the signing key ({source}) is not the one this database was used with: restore the "
        "right key from your backup, or after a deliberate change set MAILER_SECRET_KEY_PREVIOUS "
        "to the old key and run: mailer key rotate"
    )


def check(session: Session, settings: Settings) -> bool:
    """Refuse a key that is not the database's; True if the database knows no key yet."""
    stored = _get(session, FINGERPRINT)
    if stored is None:
        return True
    if not settings.has_secret_key:
        raise ConfigError(
            f"the signing key is missing ({settings.key_file} does not exist and "
            "MAILER_SECRET_KEY is not set): restore it from your backup"
        )
    if not hmac.compare_digest(stored, fingerprint(settings.require_secret_key())):
        raise _mismatch(settings)
    return False


def remember(session: Session, settings: Settings) -> None:
    """On first use: the key's fingerprint, and the suppression key (the signing key itself,
    which keeps the hashes of a database made before this table)."""
    # Two processes opening a new database at once would both write them.
    one_at_a_time(session.connection(), KEY_LOCK)
    if _get(session, FINGERPRINT) is not None:
        return
    key = settings.require_secret_key()
    _put(session, FINGERPRINT, fingerprint(key))
    _put(session, SUPPRESSION_KEY, wrap(key, key))


def suppression_key(session: Session, settings: Settings) -> bytes:
    """The key of the suppression hashes, unwrapped with the signing key."""
    wrapped = _get(session, SUPPRESSION_KEY)
    key = settings.require_secret_key()
    if wrapped is None:
        return key
    return unwrap(wrapped, key)


def rotate(session: Session, settings: Settings, previous: bytes) -> None:
    """Make the database follow the current key, proving knowledge of the previous one."""
    stored = _get(session, FINGERPRINT)
    current = settings.require_secret_key()
    if stored is not None and hmac.compare_digest(stored, fingerprint(current)):
        raise ConfigError("the database already uses this signing key: nothing to rotate")
    if stored is not None and not hmac.compare_digest(stored, fingerprint(previous)):
        raise ConfigError(
            "the previous key is not the one this database was used with either: "
            "set MAILER_SECRET_KEY_PREVIOUS to the key the database knows"
        )
    wrapped = _get(session, SUPPRESSION_KEY)
    data = unwrap(wrapped, previous) if wrapped is not None else previous
    _put(session, FINGERPRINT, fingerprint(current))
    _put(session, SUPPRESSION_KEY, wrap(data, current))
