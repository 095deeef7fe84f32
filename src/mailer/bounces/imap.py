"""``mailer bounces fetch``: read the bounce mailbox over IMAP, one message at a time.

For each message in the folder: read it without marking it seen, process it and commit
(:func:`mailer.bounces.process.process`), and only then move it to the "processed" folder,
to "unrecognised" when it could not be understood, or to "quarantine" when it could not
be read within the limits (it is never read again, and the next message is). Nothing is
ever deleted. Killed at
any point, a run loses nothing: a message not yet committed is still in the folder, and
one committed but not yet moved is recognised by its key next time and only moved.
"""

from __future__ import annotations

import contextlib
import imaplib
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mailer.bounces.process import Processed, process
from mailer.config import BounceSettings, Settings
from mailer.errors import ConfigError, MailboxError
from mailer.store.database import Database

log = logging.getLogger("mailer.bounces")
TIMEOUT = 60.0
_FETCHED = re.compile(rb"BODY\[\] \{\d+\}")


@dataclass
class FetchSummary:
    """What one run of ``mailer bounces fetch`` did."""

    read: int = 0
    new: int = 0  # messages not processed before
    unrecognised: int = 0
    unverified: int = 0  # recognised, but tied to no copy by a MAC: changed nobody
    quarantined: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    actions: list[str] = field(default_factory=list)

    def add(self, result: Processed) -> None:
        self.read += 1
        if result.new:
            self.new += 1
            self.kinds[str(result.kind)] = self.kinds.get(str(result.kind), 0) + 1
            self.actions += result.actions
        if result.quarantined:
            self.quarantined += 1
        elif not result.recognised:
            self.unrecognised += 1
        elif result.new and not result.verified:
            self.unverified += 1


def _quote(folder: str) -> str:
    # config.py allows only printable ASCII without quotes or backslashes in folder names.
    return f'"{folder}"'


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect(b: BounceSettings) -> imaplib.IMAP4:
    """A logged-in connection to the bounce mailbox."""
    if not b.imap_host or not b.imap_username:
        raise ConfigError(
            "no bounce mailbox is configured: set imap_host and imap_username in mailer.toml "
            "[bounces] (see docs/bounces.md)"
        )
    if not b.imap_password:
        raise ConfigError("MAILER_BOUNCES_IMAP_PASSWORD is not set: export the mailbox password")
    if b.imap_security == "none" and not _loopback(b.imap_host):
        raise ConfigError(
            "bounces.imap_security = none would send the mailbox password in clear text: "
            "use tls or starttls (none is only for a server on this machine)"
        )
    context = ssl.create_default_context(cafile=b.imap_ca_file)
    where = f"{b.imap_host}:{b.imap_port}"
    try:
        if b.imap_security == "tls":
            imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                b.imap_host, b.imap_port, ssl_context=context, timeout=TIMEOUT
            )
        else:
            imap = imaplib.IMAP4(b.imap_host, b.imap_port, timeout=TIMEOUT)
            if b.imap_security == "starttls":
                imap.starttls(context)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"cannot reach the bounce mailbox at {where}: {_why(exc)}") from exc
    try:
        imap.login(b.imap_username, b.imap_password)
    except imaplib.IMAP4.error as exc:
        _close(imap)
        raise MailboxError(
            f"the bounce mailbox at {where} refused the login of {b.imap_username}: "
            "check imap_username and MAILER_BOUNCES_IMAP_PASSWORD"
        ) from exc
    except OSError as exc:
        _close(imap)
        raise MailboxError(f"the bounce mailbox at {where} dropped the line: {_why(exc)}") from exc
    return imap


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its certificate is not trusted ({exc.verify_message}); see imap_ca_file"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "no answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).strip()
    return text or type(exc).__name__


def _close(imap: imaplib.IMAP4) -> None:
    with contextlib.suppress(OSError, imaplib.IMAP4.error):
        imap.logout()


def _check(reply: tuple[str, list[Any]], what: str) -> list[Any]:
    status, data = reply
    if status != "OK":
        detail = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
        raise MailboxError(f"the bounce mailbox refused to {what}: {detail or status}")
    return data


def _ensure_folders(imap: imaplib.IMAP4, b: BounceSettings) -> None:
    for folder in (b.processed_folder, b.unrecognised_folder, b.quarantine_folder):
        status, data = imap.list('""', _quote(folder))
        if status == "OK" and any(d for d in data if d):
            continue
        _check(imap.create(_quote(folder)), f"create the folder {folder}")
        imap.subscribe(_quote(folder))


def _move(imap: imaplib.IMAP4, uid: bytes, folder: str, can_move: bool) -> None:
    if can_move:
        _check(imap.uid("MOVE", uid.decode(), _quote(folder)), f"move a message to {folder}")
        return
    # Without MOVE (RFC 6851): copy, then flag the original deleted and expunge it.
    _check(imap.uid("COPY", uid.decode(), _quote(folder)), f"copy a message to {folder}")
    _check(imap.uid("STORE", uid.decode(), "+FLAGS.SILENT", r"(\Deleted)"), "flag a message")
    if "UIDPLUS" in imap.capabilities:
        _check(imap.uid("EXPUNGE", uid.decode()), "expunge a message")
    else:
        _check(imap.expunge(), "expunge")


def _body(data: list[Any]) -> bytes | None:
    for item in data:
        if isinstance(item, tuple) and len(item) == 2 and _FETCHED.search(bytes(item[0])):
            return bytes(item[1])
    return None


def fetch(
    settings: Settings,
    database: Database,
    *,
    limit: int | None = None,
    on_committed: Callable[[Processed], None] | None = None,
) -> FetchSummary:
    """Process every message in the bounce folder (at most ``limit``), oldest first."""
    b = settings.bounces
    imap = connect(b)
    summary = FetchSummary()
    source = f"imap {b.imap_host} {b.folder}"
    try:
        _ensure_folders(imap, b)
        _check(imap.select(_quote(b.folder)), f"open the folder {b.folder}")
        can_move = "MOVE" in imap.capabilities
        # A message flagged deleted is on its way out (a move cut short leaves one): skip it.
        (found,) = _check(imap.uid("SEARCH", "UNDELETED"), "list the messages")[:1] or [b""]
        uids = bytes(found or b"").split()
        for uid in uids[:limit] if limit else uids:
            data = _check(imap.uid("FETCH", uid.decode(), "(BODY.PEEK[])"), "read a message")
            raw = _body(data)
            if raw is None:
                continue  # deleted by someone else meanwhile
            result = process(settings, database, raw, source=source)
            if on_committed is not None:
                on_committed(result)
            if result.quarantined:
                target = b.quarantine_folder
            else:
                target = b.processed_folder if result.recognised else b.unrecognised_folder
            _move(imap, uid, target, can_move)
            summary.add(result)
        imap.close()
    except (OSError, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"the bounce mailbox stopped answering: {_why(exc)}") from exc
    finally:
        _close(imap)
    if summary.read:
        log.info(
            "bounce mailbox: %d read, %d new, %d unrecognised, %d quarantined",
            summary.read,
            summary.new,
            summary.unrecognised,
            summary.quarantined,
        )
    return summary
