"""Rotating the signing key: the key files and the database move together.

With ``.mailer/secret_key``: the new key is written beside it first, the database is
re-keyed in one transaction, then the old key becomes ``secret_key.previous`` and the new
one takes its place. With ``MAILER_SECRET_KEY``: the operator has already set the new key
there and the old one in ``MAILER_SECRET_KEY_PREVIOUS``; only the database moves.

Links signed with the previous key keep working until the next rotation (the grace period:
one rotation). A running ``mailer serve`` picks the new key up by itself (:class:`Watch`).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import threading

from mailer.config import KEY_FILE, Settings
from mailer.errors import ConfigError
from mailer.store import keys
from mailer.store.database import open_db


def rotate(settings: Settings) -> str:
    """Re-key the database to a new signing key; says where the new key lives."""
    if settings.secret_key_from:
        previous = settings.previous_secret_key()
        if previous is None:
            raise ConfigError(
                "MAILER_SECRET_KEY is set: set it to the new key and MAILER_SECRET_KEY_PREVIOUS "
                "to the old one, then run mailer key rotate again"
            )
        with open_db(settings, check_key=False) as db, db.session(write=True) as session:
            keys.rotate(session, settings, previous)
        return "MAILER_SECRET_KEY"
    path = settings.key_file
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: there is no key to rotate")
    old = settings.require_secret_key()
    new = secrets.token_urlsafe(32)
    staged = path.with_name(KEY_FILE + ".new")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(new + "\n")
        out.flush()
        os.fsync(out.fileno())
    rotated = dataclasses.replace(settings, secret_key=new, secret_key_previous=old.decode())
    try:
        with open_db(rotated, check_key=False) as db, db.session(write=True) as session:
            keys.rotate(session, rotated, old)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    os.replace(path, path.with_name(KEY_FILE + ".previous"))
    os.replace(staged, path)
    return str(path)


class Watch:
    """Notices that ``mailer key rotate`` replaced the key file under a running process.

    :meth:`refresh` costs one ``stat``; when the file is another one (rotation replaces it,
    so its inode and time change), the settings read the new key. While the file is missing
    (the instant between rotation's two renames) the key in memory is kept, never a new
    one made.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._stamp = self._now()

    def _now(self) -> tuple[int, int, int] | None:
        try:
            found = self.settings.key_file.stat()
        except OSError:
            return None
        return (found.st_ino, found.st_mtime_ns, found.st_size)

    def refresh(self) -> bool:
        """True when a new key was read."""
        if self.settings.secret_key_from:
            return False
        stamp = self._now()
        if stamp is None or stamp == self._stamp:
            return False
        with self._lock:
            if stamp == self._stamp:
                return False
            self.settings.reload_key_file()
            self._stamp = stamp
        return True
