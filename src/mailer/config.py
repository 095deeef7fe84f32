"""Newsletter settings: ``mailer.toml`` in the newsletter folder, overridden by the environment.

Commands find ``mailer.toml`` in the current folder or its parents, like git finds ``.git``.
Secrets never come from ``mailer.toml``: the SMTP password and the DKIM key from the
environment, the signing key from ``MAILER_SECRET_KEY`` or from ``.mailer/secret_key``, a
file mailer creates once, readable only by its owner.

Every value is checked where it is read: a value that reaches an email header (names,
addresses) may hold no control character, CR or LF; numbers must be in range. A mistake is
one line naming the file (or variable) and the key.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import os
import re
import secrets
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailer.clock import utcnow
from mailer.errors import ConfigError
from mailer.files import private_folder
from mailer.images import image_kind, pixel_size
from mailer.profiles import PROFILES

CONFIG_NAME = "mailer.toml"
KEY_FILE = "secret_key"
# A key shorter than this is refused: the links it signs must not be guessable.
MIN_KEY_BYTES = 32
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
_TRANSPORTS = ("outbox", "smtp")
_SECURITY = ("none", "starttls", "tls")
_AUTH = ("password", "oauth2")
# Microsoft's token endpoint of a tenant (client-credentials flow, v2.0).
MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
# The scope of Exchange Online's SMTP and IMAP (SMTP.SendAsApp, IMAP.AccessAsApp).
OUTLOOK_SCOPE = "https://outlook.office365.com/.default"
# C0 and C1 control characters (CR and LF among them) and the Unicode line separators:
# none may reach an email header.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# What a sender address may be: one plain address, nothing around it.
_ADDRESS = re.compile(r"[^@\s<>(),;:\\\"\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_LOCAL_PART = re.compile(r"^[a-z0-9][a-z0-9._-]{0,40}$")
# IMAP folder names in printable ASCII, without the characters IMAP would need quoted.
_FOLDER = re.compile(r"^[ !#$&-)+-\[\]-~]{1,200}$")


@dataclass(frozen=True)
class SenderSettings:
    from_name: str
    from_address: str
    reply_to: str | None = None

    @property
    def domain(self) -> str:
        return self.from_address.rpartition("@")[2].lower()


@dataclass(frozen=True)
class Footer:
    postal_address: str
    contact: str = ""
    why: str = "You receive this newsletter because you subscribed to one of our mailing lists."
    # The privacy notice (UK GDPR Art. 13), linked from the sign-up form and every footer.
    privacy_url: str = ""


@dataclass(frozen=True)
class Brand:
    primary: str = "#5b2a86"
    accent: str = "#0f766e"
    background: str = "#f3f1f6"
    logo: str | None = None
    # What the logo says, for people who cannot see it: required with a logo.
    logo_alt: str = ""
    # The width it is shown at in the masthead, in pixels.
    logo_width: int = 160


# The logo is fetched with every email opened: keep it small, and a sensible size.
LOGO_MAX_KB = 100
LOGO_MAX_PIXELS = 2000
LOGO_WIDTH = (16, 600)


@dataclass(frozen=True)
class OAuthSettings:
    """An application's OAuth 2.0 client credentials (``auth = "oauth2"``), all from the
    environment: mailer gets access tokens for SMTP and IMAP with them (mailer.oauth)."""

    client_id: str
    token_url: str
    tenant: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    # A PEM file with the certificate's private key and the certificate, instead of a secret.
    certificate_file: str | None = None
    scope: str = OUTLOOK_SCOPE


@dataclass(frozen=True)
class SMTPSettings:
    host: str = "localhost"
    port: int = 25
    security: str = "none"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # "password", or "oauth2" (AUTH XOAUTH2 with a token from ``oauth``).
    auth: str = "password"
    oauth: OAuthSettings | None = None
    # The relay profile the settings came from (mailer.profiles), "generic" for none.
    profile: str = "generic"
    connections: int = 4
    rate_per_second: float | None = None
    rate_per_minute: int | None = None
    rate_per_hour: int | None = None
    # Recipients a day: a send larger than what is left of it is refused, or spread.
    rate_per_day: int | None = None
    timeout: float = 30.0
    # A CA bundle to trust for STARTTLS/TLS, for relays with a private certificate authority.
    ca_file: str | None = None
    # AUTH over an unencrypted connection, allowed only to a loopback address, on request.
    plain_auth_on_loopback: bool = False


@dataclass(frozen=True)
class Limits:
    """Sizes mailer refuses (or warns about) before they reach an inbox."""

    # Gmail clips a message whose HTML is over about 102 KB, hiding the unsubscribe link.
    html_warn_kb: int = 90
    html_max_kb: int = 102
    issue_file_max_kb: int = 1024
    # YAML anchors and aliases can make a small file expand enormously.
    yaml_max_nodes: int = 20_000
    image_max_kb: int = 2048


@dataclass(frozen=True)
class TransportSettings:
    name: str = "outbox"
    smtp: SMTPSettings = field(default_factory=SMTPSettings)
    # A temporary failure is retried this many times per recipient within one run.
    max_attempts: int = 3
    # Backoff before the n-th retry is ``retry_backoff * 2 ** (n - 1)`` seconds.
    retry_backoff: float = 1.0
    # After this many failures in a row the send pauses itself.
    pause_after_errors: int = 20


@dataclass(frozen=True)
class ChecksSettings:
    """The ``[checks]`` table: which preflight checks to silence, and whose bank holidays."""

    # Codes of checks that are never reported (see docs/check.md).
    ignore: tuple[str, ...] = ()
    # Whose bank holidays a session should avoid: ENG, WLS, SCT or NIR.
    bank_holidays: str = "ENG"
    # Whether approve, send and the worker refuse an issue with errors.
    enforce: bool = True


@dataclass(frozen=True)
class BounceSettings:
    """Where bounces, complaints and unsubscribe emails arrive, and what they change.

    See docs/bounces.md. With no ``domain`` the From address stays the envelope sender;
    with no ``imap_host`` there is nothing for ``mailer bounces fetch`` to read.
    """

    # Messages go out with the envelope sender local_part+TOKEN@domain (VERP).
    domain: str | None = None
    local_part: str = "bounces"
    imap_host: str | None = None
    imap_port: int = 993
    imap_security: str = "tls"
    imap_username: str | None = None
    imap_password: str | None = field(default=None, repr=False)
    imap_ca_file: str | None = None
    # "password", or "oauth2" (AUTH XOAUTH2 with a token from ``imap_oauth``).
    imap_auth: str = "password"
    imap_oauth: OAuthSettings | None = None
    folder: str = "INBOX"
    processed_folder: str = "processed"
    unrecognised_folder: str = "unrecognised"
    # Where a message that cannot be read within the limits below is moved (IMAP).
    quarantine_folder: str = "quarantine"
    # How much of one message is read before it is quarantined (docs/bounces.md).
    max_message_kb: int = 10240
    max_depth: int = 16
    max_parts: int = 500
    max_seconds: float = 10.0
    # How often `mailer worker` reads the mailbox, in minutes.
    fetch_every: float = 5.0
    # A person is marked bounced after temporary failures on this many sends in a row.
    soft_limit: int = 3
    # Status codes (prefixes) that mean the address itself is gone: bounced at once.
    hard_statuses: tuple[str, ...] = ("5.1.", "5.2.1", "5.4.1", "5.4.4")
    # Status codes (prefixes) of policy or reputation refusals: the send is flagged.
    policy_statuses: tuple[str, ...] = ("5.7.",)

    @property
    def mailbox(self) -> bool:
        return bool(self.imap_host)


@dataclass(frozen=True)
class WebSettings:
    """The public web side (``mailer serve``): sign-up, its abuse limits, click counting."""

    # Shown beside the sign-up form's tick box and stored with each confirmed sign-up.
    consent: str = (
        "I agree to receive this newsletter by email. I can unsubscribe at any time with "
        "the link in every issue."
    )
    # A confirmation link works for this many days; unsubscribe links never expire.
    confirm_days: int = 7
    # At most one confirmation (or preferences) email per address in this many minutes.
    cooling_off_minutes: int = 60
    # Emails the sign-up and "manage" forms send per network (an IPv4 address or an IPv6
    # /64) per hour, and per mailbox per day.
    per_ip_per_hour: int = 10
    per_address_per_day: int = 5
    # Confirmation emails the whole site sends per hour; past it, alerts_to is told once.
    confirmations_per_hour: int = 200
    # A file of disposable email domains (one a line) whose addresses the form refuses.
    blocklist: str | None = None
    # Count clicks per link of each issue, without recording who clicked (off by default).
    track_clicks: bool = False
    # The parts of the accessibility statement only the operator can write: how to report
    # a problem (default: the footer's contact), and the enforcement procedure that
    # applies to the organisation. `mailer doctor` warns while they are empty.
    accessibility_contact: str = ""
    accessibility_enforcement: str = ""
    # The reverse proxies whose X-Forwarded-For and X-Forwarded-Proto mailer serve believes
    # (addresses or networks): the client address of rate limits is the forwarded one only
    # for a request from one of them.
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class ApprovalSettings:
    """The ``[approval]`` table: who must approve an issue before it goes to lists."""

    # The addresses of the people who approve (the chair, the business manager). When set,
    # a send to lists needs an approval given through the link mailed to one of them.
    approvers: tuple[str, ...] = ()
    # How many different approvers must approve the same content: 1, or 2 for two pairs
    # of eyes.
    required: int = 1
    # An approval link works once, for this many days.
    link_days: int = 7
    # Who is told when an approver asks for changes; alerts_to when empty.
    notify: tuple[str, ...] = ()
    # Whether `mailer approve --by NAME` still counts once there are approvers.
    allow_self_approval: bool = False

    @property
    def by_approvers(self) -> bool:
        return bool(self.approvers)


# The shortest lease a worker may have on a send, in seconds.
MIN_LEASE = 3.0


@dataclass(frozen=True)
class WorkerSettings:
    """The ``[worker]`` table: how processes share the sends (see docs/scaling.md)."""

    # Whether `mailer worker` joins a send that other workers are sending, with its own
    # connections; a send nobody is working on any more is taken over either way.
    help_other_senders: bool = True
    # Seconds a worker's lease on a send lasts without renewal: a worker on another machine
    # that stays silent this long is presumed dead, and its send taken over.
    lease: float = 30.0


@dataclass(frozen=True)
class Settings:
    root: Path
    name: str
    organisation: str
    base_url: str
    sender: SenderSettings
    footer: Footer
    brand: Brand = field(default_factory=Brand)
    timezone: str = "Europe/London"
    transport: TransportSettings = field(default_factory=TransportSettings)
    database_url: str = ""
    misfire_grace_hours: float = 6.0
    limits: Limits = field(default_factory=Limits)
    secret_key: str | None = field(default=None, repr=False)
    secret_key_previous: str | None = field(default=None, repr=False)
    # Where the key came from: "MAILER_SECRET_KEY", or "" for the key file (or none yet).
    secret_key_from: str = ""
    checks: ChecksSettings = field(default_factory=ChecksSettings)
    bounces: BounceSettings = field(default_factory=BounceSettings)
    web: WebSettings = field(default_factory=WebSettings)
    # Who is emailed when a scheduled send fails, pauses for a person, or is missed.
    alerts_to: tuple[str, ...] = ()
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    approval: ApprovalSettings = field(default_factory=ApprovalSettings)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def today(self) -> dt.date:
        """Today in the newsletter's time zone, on the one clock mailer reads."""
        return utcnow().astimezone(self.tz).date()

    @property
    def issues_dir(self) -> Path:
        return self.root / "issues"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def build_dir(self) -> Path:
        return self.root / "build"

    @property
    def preview_dir(self) -> Path:
        """Where drafts build (``.mailer/preview/SLUG/``): never inside build/, which is
        what gets published (see mailer.site.build.output_dir)."""
        return self.state_dir / "preview"

    @property
    def outbox_dir(self) -> Path:
        return self.root / "outbox"

    @property
    def state_dir(self) -> Path:
        """Machine-local state that never goes into git (demo key, logs, drafts' previews)."""
        return self.root / ".mailer"

    @property
    def key_file(self) -> Path:
        return self.state_dir / KEY_FILE

    @property
    def has_secret_key(self) -> bool:
        return bool(self.secret_key) or self.key_file.is_file()

    def require_secret_key(self) -> bytes:
        """The signing key: MAILER_SECRET_KEY, else .mailer/secret_key, created on first use.

        The database remembers the key's fingerprint (see mailer.store.keys), so a key that
        is lost or replaced is refused there rather than silently breaking links.
        """
        if not self.secret_key:
            object.__setattr__(self, "secret_key", _read_or_create_key(self.key_file))
        assert self.secret_key
        return self.secret_key.encode()

    def reload_key_file(self) -> None:
        """Read ``.mailer/secret_key`` again, after ``mailer key rotate`` replaced it while
        this process runs (see mailer.store.keyring.Watch); the previous key is read from
        its own file on each use already."""
        if not self.secret_key_from and self.key_file.is_file():
            object.__setattr__(self, "secret_key", _read_key(self.key_file))

    def previous_secret_key(self) -> bytes | None:
        """The key before a deliberate rotation, so links signed with it keep working."""
        if self.secret_key_previous:
            return self.secret_key_previous.encode()
        previous = self.key_file.with_name(KEY_FILE + ".previous")
        if previous.is_file():
            return _read_key(previous).encode()
        return None


def _read_key(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{path} can be read by other users of this machine: run chmod 600 {path}"
            )
        key = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not a mailer key file (not text)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the signing key: {exc.strerror}") from None
    _check_key(key, str(path))
    return key


def _check_key(key: str, where: str) -> None:
    if len(key.encode()) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{where}: the signing key is too short ({len(key.encode())} bytes; at least "
            f"{MIN_KEY_BYTES}): make one with: python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'"
        )


def _read_or_create_key(path: Path) -> str:
    """The key in ``path``; a new random one, written with mode 0600, if there is none."""
    if path.is_file():
        return _read_key(path)
    key = secrets.token_urlsafe(32)
    try:
        private_folder(path.parent)
        # O_EXCL: two processes starting at once never both write a key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the signing key: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key + "\n")
        out.flush()
        os.fsync(out.fileno())
    return key


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (where a password may travel without TLS)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def find_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` that holds a ``mailer.toml``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise ConfigError(
        f"no {CONFIG_NAME} in {here} or any folder above it: run mailer inside a newsletter folder"
    )


def load(start: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings of the newsletter folder that contains ``start``."""
    env = os.environ if env is None else env
    root = Path(env["MAILER_ROOT"]).resolve() if env.get("MAILER_ROOT") else find_root(start)
    path = root / CONFIG_NAME
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise toml_error(path, exc) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: is not UTF-8 text (byte {exc.start}): save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return _parse(root, path, data, env)


def from_text(root: Path, text: str, env: Mapping[str, str] | None = None) -> Settings:
    """The settings ``text`` would give as ``root/mailer.toml``: checks a file before it is
    written (``mailer init``)."""
    path = root / CONFIG_NAME
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise toml_error(path, exc) from None
    return _parse(root, path, data, {} if env is None else env)


class _Table:
    """Reads one TOML table, remembering which keys were used so leftovers can be reported."""

    def __init__(self, path: Path, name: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        self.path, self.name, self.data = path, name, data
        self.used: set[str] = set()

    def _where(self, key: str) -> str:
        return f"{self.path}: {self.name + '.' if self.name else ''}{key}"

    def get(self, key: str, kind: type, default: Any = None, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(f"{self._where(key)}: is required")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{self._where(key)}: must be a {kind.__name__}, not {value!r}")
        return value

    def text(self, key: str, default: Any = None, required: bool = False) -> Any:
        """A string that may reach an email header: no control characters, CR or LF."""
        value = self.get(key, str, default, required)
        if isinstance(value, str) and CONTROL.search(value):
            raise ConfigError(f"{self._where(key)}: must be one line with no control characters")
        return value

    def number(self, key: str, kind: type, default: Any, env: Mapping[str, str], var: str) -> Any:
        """A number from the environment (``var``) or the file, which must be positive."""
        raw = env.get(var)
        if raw:
            try:
                value: Any = kind(raw)
            except ValueError:
                raise ConfigError(f"{var}={raw!r}: must be a {_KIND[kind]}") from None
            where = var
        else:
            value = self.get(key, kind, default)
            where = self._where(key)
        if value is not None and (value <= 0 or value != value):
            raise ConfigError(f"{where}: must be more than 0, not {value!r}")
        return value

    def table(self, key: str) -> _Table:
        self.used.add(key)
        return _Table(
            self.path, key if not self.name else f"{self.name}.{key}", self.data.get(key, {})
        )

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, sorted(self.used), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else "is it misspelt?"
            line = _line_of(self.path, self.name, key)
            where = f"{self.path}:{line}" if line else str(self.path)
            dotted = f"{self.name}.{key}" if self.name else key
            raise ConfigError(f"{where}: {dotted}: unknown setting ({hint})")


def _line_of(path: Path, table: str, key: str) -> int | None:
    """The line of ``key`` in ``[table]`` of the file at ``path`` (None if not found)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    current = ""
    for number, line in enumerate(lines, 1):
        header = re.match(r"\s*\[+\s*([^\]]+?)\s*\]+", line)
        if header:
            current = header[1]
        elif current == table and re.match(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=", line):
            return number
    return None


# What a TOML mistake usually is, by the parser's words: the fix to suggest.
_TOML_HINTS = (
    ("Invalid value", 'put text in double quotes, like name = "CSCP Newsletter"'),
    ("Expected '=' after a key", "write each setting as key = value, like port = 587"),
    ("Cannot overwrite a value", "a setting is written twice: keep one"),
    ("Cannot declare", "a [table] is written twice: keep one"),
    ("Unterminated string", "close the quotes at the end of the value"),
    ("Illegal character", "a value has a character TOML does not allow: put text in quotes"),
)


def toml_error(path: Path, exc: tomllib.TOMLDecodeError) -> ConfigError:
    """A TOML syntax error as one line: the file and line, what is wrong, and the fix."""
    message = str(exc)
    found = re.search(r"\s*\(at line (\d+), column \d+\)$", message)
    where = f"{path}:{found[1]}" if found else str(path)
    what = message[: found.start()] if found else message
    fix = next((hint for words, hint in _TOML_HINTS if what.startswith(words)), "")
    return ConfigError(f"{where}: {what}{': ' + fix if fix else ''}")


_KIND = {int: "whole number", float: "number"}


def is_address(value: str) -> bool:
    """Whether ``value`` is one plain email address, as a sender or reply-to must be."""
    return bool(_ADDRESS.fullmatch(value)) and not CONTROL.search(value)


def is_colour(value: str) -> bool:
    """Whether ``value`` is a colour like ``#5b2a86``, as the brand's colours must be."""
    return bool(_COLOUR.match(value))


def _address(value: str, where: str) -> str:
    """A sender or reply-to address: one plain address, nothing else."""
    if not is_address(value):
        raise ConfigError(f"{where}: {value!r} is not one email address (like news@example.org)")
    return value


def _env_str(env: Mapping[str, str], key: str, default: Any) -> Any:
    return env.get(key) or default


def _env_float(env: Mapping[str, str], key: str, default: float | None) -> float | None:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r}: must be a number") from None


def _check_logo(path: Path, root: Path, brand: Brand) -> None:
    """The logo is a real PNG, JPEG or GIF in the folder, small, with alt text."""
    assert brand.logo
    where = f"{path}: brand.logo"
    logo = (root / brand.logo).resolve()
    if not logo.is_relative_to(root.resolve()) or not logo.is_file():
        raise ConfigError(f"{where}: {brand.logo} must be a file inside the newsletter folder")
    size = logo.stat().st_size
    if size > LOGO_MAX_KB * 1024:
        raise ConfigError(
            f"{where}: {brand.logo} is {size // 1024:,} KB: make it at most {LOGO_MAX_KB} KB "
            "(every reader's mail program fetches it)"
        )
    with logo.open("rb") as f:
        kind = image_kind(f.read(16))
    if kind not in ("PNG", "JPEG", "GIF"):
        raise ConfigError(
            f"{where}: {brand.logo} is not a PNG, JPEG or GIF picture (Outlook shows no other)"
        )
    pixels = pixel_size(logo)
    if pixels is None:
        raise ConfigError(f"{where}: {brand.logo}: its size cannot be read: save it again")
    width, height = pixels
    if width > LOGO_MAX_PIXELS or height > LOGO_MAX_PIXELS:
        raise ConfigError(
            f"{where}: {brand.logo} is {width}×{height} pixels: make it at most "
            f"{LOGO_MAX_PIXELS}×{LOGO_MAX_PIXELS} (twice the width it is shown at is plenty)"
        )
    low, high = LOGO_WIDTH
    if not low <= brand.logo_width <= high:
        raise ConfigError(
            f"{path}: brand.logo_width: {brand.logo_width} is not a width from {low} to {high} "
            "pixels"
        )
    if width < brand.logo_width:
        raise ConfigError(
            f"{where}: {brand.logo} is {width} pixels wide, narrower than it is shown "
            f"(brand.logo_width = {brand.logo_width}): use a wider picture, or a smaller "
            "logo_width"
        )
    if not brand.logo_alt.strip():
        raise ConfigError(
            f"{path}: brand.logo_alt: is required with a logo: write what the logo says, "
            'e.g. logo_alt = "Cumberland Safeguarding Children Partnership"'
        )


def web_address(value: str, where: str) -> str:
    """base_url as it is used: an http(s) address without a trailing slash, or ConfigError."""
    value = value.rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname or " " in value:
        raise ConfigError(f"{where}: must be a web address like https://news.example.org")
    return value


def sender_address(value: str, where: str) -> str:
    """A sender or reply-to address: one plain address, nothing else."""
    return _address(value, where)


def https_url(value: str, where: str) -> str:
    """``value`` if it is empty or an https:// web address, else ConfigError at ``where``;
    the one rule for addresses people give mailer to link to."""
    value = value.strip()
    parts = urlsplit(value)
    if value and (parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in value)):
        raise ConfigError(
            f"{where}: must be a web address starting https://, like https://example.org/privacy"
        )
    return value


def _parse(root: Path, path: Path, data: dict[str, Any], env: Mapping[str, str]) -> Settings:
    top = _Table(path, "", data)
    name = top.text("name", required=True)
    organisation = top.text("organisation", required=True)
    base_url = web_address(top.text("base_url", required=True), f"{path}: base_url")
    timezone = top.get("timezone", str, "Europe/London")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{path}: timezone: unknown time zone {timezone!r}") from None
    database_url = _env_str(env, "MAILER_DATABASE_URL", top.get("database_url", str, ""))
    if not database_url:
        # Built from the folder's path, never parsed as a URL: a folder named "q?mark" or
        # "pct%41dir" must not move the database elsewhere.
        database_url = f"sqlite:///{root / 'subscribers.sqlite'}"
    misfire = top.number("misfire_grace", float, 6.0, {}, "")
    alerts_to = _alerts_to(top)

    s = top.table("sender")
    sender = SenderSettings(
        from_name=s.text("from_name", required=True),
        from_address=_address(s.text("from_address", required=True), s._where("from_address")),
        reply_to=s.text("reply_to"),
    )
    if sender.reply_to is not None:
        _address(sender.reply_to, s._where("reply_to"))
    s.finish()

    f = top.table("footer")
    footer = Footer(
        postal_address=f.text("postal_address", required=True),
        contact=f.text("contact", ""),
        why=f.text("why", Footer.why),
        privacy_url=https_url(f.text("privacy_url", ""), f._where("privacy_url")),
    )
    f.finish()

    lim = top.table("limits")
    limits = Limits(
        html_warn_kb=lim.number("html_warn_kb", int, Limits.html_warn_kb, {}, ""),
        html_max_kb=lim.number("html_max_kb", int, Limits.html_max_kb, {}, ""),
        issue_file_max_kb=lim.number("issue_file_max_kb", int, Limits.issue_file_max_kb, {}, ""),
        yaml_max_nodes=lim.number("yaml_max_nodes", int, Limits.yaml_max_nodes, {}, ""),
        image_max_kb=lim.number("image_max_kb", int, Limits.image_max_kb, {}, ""),
    )
    lim.finish()

    b = top.table("brand")
    brand = Brand(
        primary=b.get("primary", str, Brand.primary),
        accent=b.get("accent", str, Brand.accent),
        background=b.get("background", str, Brand.background),
        logo=b.get("logo", str),
        logo_alt=b.text("logo_alt", ""),
        logo_width=b.number("logo_width", int, Brand.logo_width, {}, ""),
    )
    b.finish()
    for key in ("primary", "accent", "background"):
        if not _COLOUR.match(getattr(brand, key)):
            raise ConfigError(f"{path}: brand.{key}: must be a colour like #5b2a86")
    if brand.logo:
        _check_logo(path, root, brand)

    transport = _transport(top.table("transport"), env)
    checks = _checks(path, top.table("checks"))
    bounces = _bounces(path, top.table("bounces"), env, transport.smtp.oauth)
    web = _web(path, root, top.table("web"))
    worker = _worker(top.table("worker"), env)
    approval = _approval(path, top.table("approval"))
    top.finish()

    state = root / ".mailer"
    if state.exists() and not state.is_dir():
        raise ConfigError(
            f"{state} is a file, but mailer keeps its key and log in a folder of that name: "
            "move the file away"
        )
    secret = env.get("MAILER_SECRET_KEY") or None
    if secret:
        _check_key(secret, "MAILER_SECRET_KEY")
    previous = env.get("MAILER_SECRET_KEY_PREVIOUS") or None
    if previous:
        _check_key(previous, "MAILER_SECRET_KEY_PREVIOUS")
    return Settings(
        root=root,
        name=name,
        organisation=organisation,
        base_url=base_url,
        sender=sender,
        footer=footer,
        brand=brand,
        timezone=timezone,
        transport=transport,
        database_url=database_url,
        misfire_grace_hours=misfire,
        limits=limits,
        secret_key=secret
        or (
            _read_key(root / ".mailer" / KEY_FILE)
            if (root / ".mailer" / KEY_FILE).is_file()
            else None
        ),
        secret_key_previous=previous,
        secret_key_from="MAILER_SECRET_KEY" if secret else "",
        checks=checks,
        bounces=bounces,
        web=web,
        alerts_to=alerts_to,
        worker=worker,
        approval=approval,
    )


def _transport(t: _Table, env: Mapping[str, str]) -> TransportSettings:
    """The [transport] table: a relay profile's settings, overridden by the file's, overridden
    by the environment's. Every key is read before the environment overrides it, so none is
    reported as unknown."""
    profile_name = env.get("MAILER_SMTP_PROFILE") or t.get("profile", str, "generic")
    profile = PROFILES.get(profile_name)
    if profile is None:
        raise ConfigError(
            f"{t._where('profile')}: {profile_name!r} is not one of {', '.join(PROFILES)}"
        )
    transport_name = t.get("name", str, "outbox")
    transport_name = env.get("MAILER_TRANSPORT") or transport_name
    if transport_name not in _TRANSPORTS:
        raise ConfigError(
            f"transport {transport_name!r} is not one of {', '.join(_TRANSPORTS)} "
            "(set in mailer.toml [transport] name or MAILER_TRANSPORT)"
        )
    security = t.get("security", str, profile.security or "none")
    security = env.get("MAILER_SMTP_SECURITY") or security
    if security not in _SECURITY:
        raise ConfigError(
            f"MAILER_SMTP_SECURITY={security!r}: must be one of {', '.join(_SECURITY)}"
        )
    auth = env.get("MAILER_SMTP_AUTH") or t.get("auth", str, profile.auth or "password")
    if auth not in _AUTH:
        raise ConfigError(f"MAILER_SMTP_AUTH={auth!r}: must be one of {', '.join(_AUTH)}")
    # A port set with the profile's own security keeps it; another security has its own.
    default_port = {"none": 25, "starttls": 587, "tls": 465}[security]
    if profile.port and security == profile.security:
        default_port = profile.port
    host = _env_str(env, "MAILER_SMTP_HOST", t.text("host", profile.host or "localhost"))
    if CONTROL.search(host) or " " in host:
        raise ConfigError(f"MAILER_SMTP_HOST={host!r}: must be a host name or address")
    port = t.number("port", int, default_port, env, "MAILER_SMTP_PORT")
    if port > 65535:
        raise ConfigError(f"{t._where('port')}: {port} is not a port number (1 to 65535)")
    plain_auth = t.get("plain_auth_on_loopback", bool, False)
    if env.get("MAILER_SMTP_PLAIN_AUTH_ON_LOOPBACK"):
        plain_auth = env["MAILER_SMTP_PLAIN_AUTH_ON_LOOPBACK"].lower() in ("1", "true", "yes")
    username = _env_str(env, "MAILER_SMTP_USERNAME", t.text("username", profile.username))
    # A rehearsal through the outbox is not held to the relay's limits.
    p = profile if transport_name == "smtp" else PROFILES["generic"]
    rates: dict[str, Any] = {
        "rate_per_second": t.number(
            "rate_per_second", float, p.rate_per_second, env, "MAILER_SMTP_RATE_PER_SECOND"
        ),
        "rate_per_minute": t.number(
            "rate_per_minute", int, p.rate_per_minute, env, "MAILER_SMTP_RATE_PER_MINUTE"
        ),
        "rate_per_hour": t.number(
            "rate_per_hour", int, p.rate_per_hour, env, "MAILER_SMTP_RATE_PER_HOUR"
        ),
        "rate_per_day": t.number(
            "rate_per_day", int, p.rate_per_day, env, "MAILER_SMTP_RATE_PER_DAY"
        ),
    }
    connections = t.number("connections", int, p.connections or 4, env, "MAILER_SMTP_CONNECTIONS")
    # The credentials are needed (and checked) only when mail goes out through SMTP.
    oauth_wanted = auth == "oauth2" and transport_name == "smtp"
    smtp = SMTPSettings(
        host=host,
        port=port,
        security=security,
        username=username,
        password=env.get("MAILER_SMTP_PASSWORD") or None,
        auth=auth,
        oauth=_oauth(env, '[transport] auth = "oauth2"') if oauth_wanted else None,
        profile=profile.name,
        connections=connections,
        timeout=t.number("timeout", float, 30.0, env, "MAILER_SMTP_TIMEOUT"),
        ca_file=_env_str(env, "MAILER_SMTP_CA_FILE", t.text("ca_file")),
        plain_auth_on_loopback=plain_auth,
        **rates,
    )
    logs_in = bool(smtp.username) or auth == "oauth2"
    unencrypted = transport_name == "smtp" and logs_in and security == "none"
    if unencrypted and not (plain_auth and is_loopback(smtp.host)):
        what = "token" if auth == "oauth2" else "password"
        raise ConfigError(
            f"the SMTP {what} would be sent unencrypted to {smtp.host}: set "
            '[transport] security = "starttls" (or "tls"), or MAILER_SMTP_SECURITY'
        )
    if auth == "oauth2" and transport_name == "smtp" and not smtp.username:
        raise ConfigError(
            'MAILER_SMTP_USERNAME is not set: with auth = "oauth2" it is the mailbox that '
            "sends (such as newsletter@example.org)"
        )
    backoff = _env_float(env, "MAILER_RETRY_BACKOFF", t.get("retry_backoff", float, 1.0))
    if backoff is None or backoff < 0 or backoff != backoff:
        raise ConfigError(f"MAILER_RETRY_BACKOFF={backoff!r}: must be 0 or more seconds")
    transport = TransportSettings(
        name=transport_name,
        smtp=smtp,
        max_attempts=t.number("max_attempts", int, 3, {}, ""),
        retry_backoff=backoff,
        pause_after_errors=t.number("pause_after_errors", int, 20, {}, ""),
    )
    t.finish()
    return transport


def _oauth(env: Mapping[str, str], wanted_by: str) -> OAuthSettings:
    """The OAuth 2.0 client credentials from the environment, for ``wanted_by`` (the
    setting that asks for them). No value is ever echoed: they may be secrets."""
    client_id = (env.get("MAILER_OAUTH_CLIENT_ID") or "").strip()
    tenant = (env.get("MAILER_OAUTH_TENANT") or "").strip() or None
    token_url = (env.get("MAILER_OAUTH_TOKEN_URL") or "").strip()
    secret = env.get("MAILER_OAUTH_CLIENT_SECRET") or None
    certificate = env.get("MAILER_OAUTH_CERTIFICATE_FILE") or None
    why = f"{wanted_by} asks for OAuth 2.0"
    if not client_id:
        raise ConfigError(
            f"MAILER_OAUTH_CLIENT_ID is not set: {why}; set it to the application (client) "
            "ID of the app registration"
        )
    if not token_url:
        if not tenant:
            raise ConfigError(
                f"MAILER_OAUTH_TENANT is not set: {why}; set it to the directory (tenant) "
                "ID, or MAILER_OAUTH_TOKEN_URL for an identity provider other than Microsoft"
            )
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,100}", tenant):
            raise ConfigError(
                "MAILER_OAUTH_TENANT: must be the directory (tenant) ID or a domain such as "
                "example.onmicrosoft.com"
            )
        token_url = MICROSOFT_TOKEN_URL.format(tenant=tenant)
    parts = urlsplit(token_url)
    if parts.scheme != "https" or not parts.hostname or not parts.path.strip("/"):
        raise ConfigError(
            "MAILER_OAUTH_TOKEN_URL: must be an https:// address with a path, such as "
            "https://login.microsoftonline.com/TENANT/oauth2/v2.0/token"
        )
    if CONTROL.search(client_id) or " " in client_id:
        raise ConfigError("MAILER_OAUTH_CLIENT_ID: must be one word, such as a GUID")
    if bool(secret) == bool(certificate):
        raise ConfigError(
            "set one of MAILER_OAUTH_CLIENT_SECRET (a client secret of the app registration) "
            "and MAILER_OAUTH_CERTIFICATE_FILE (a PEM file with its certificate and key)"
        )
    if certificate and not Path(certificate).is_file():
        raise ConfigError(f"MAILER_OAUTH_CERTIFICATE_FILE: {certificate} is not a file")
    return OAuthSettings(
        client_id=client_id,
        token_url=token_url,
        tenant=tenant,
        client_secret=secret,
        certificate_file=certificate,
        scope=(env.get("MAILER_OAUTH_SCOPE") or "").strip() or OUTLOOK_SCOPE,
    )


def _worker(w: _Table, env: Mapping[str, str]) -> WorkerSettings:
    """The [worker] table; MAILER_WORKER_LEASE overrides the lease of one process."""
    d = WorkerSettings()
    settings = WorkerSettings(
        help_other_senders=w.get("help_other_senders", bool, d.help_other_senders),
        lease=w.number("lease", float, d.lease, env, "MAILER_WORKER_LEASE"),
    )
    w.finish()
    if settings.lease < MIN_LEASE:
        # A lease is renewed every few tenths of a second at best: shorter ones would
        # expire while their worker lives.
        raise ConfigError(
            f"{w._where('lease')}: must be at least {MIN_LEASE:g} seconds, not {settings.lease:g}"
        )
    return settings


def _alerts_to(top: _Table) -> tuple[str, ...]:
    """``alerts_to``: one address, or a list of them."""
    top.used.add("alerts_to")
    value = top.data.get("alerts_to", [])
    found = [value] if isinstance(value, str) else value
    if not isinstance(found, list) or not all(isinstance(a, str) for a in found):
        raise ConfigError(
            f"{top._where('alerts_to')}: must be an address or a list of addresses, like "
            '"comms@example.org"'
        )
    return tuple(_address(a.strip(), top._where("alerts_to")) for a in found)


def _addresses(table: _Table, key: str) -> tuple[str, ...]:
    """A list of addresses (or one), each checked, without repeats."""
    table.used.add(key)
    value = table.data.get(key, [])
    found = [value] if isinstance(value, str) else value
    if not isinstance(found, list) or not all(isinstance(a, str) for a in found):
        raise ConfigError(
            f"{table._where(key)}: must be a list of addresses, like "
            '["chair@example.org", "manager@example.org"]'
        )
    checked = [_address(a.strip(), table._where(key)) for a in found]
    return tuple(dict.fromkeys(checked))


def _approval(path: Path, a: _Table) -> ApprovalSettings:
    d = ApprovalSettings()
    settings = ApprovalSettings(
        approvers=_addresses(a, "approvers"),
        required=a.get("required", int, d.required),
        link_days=a.get("link_days", int, d.link_days),
        notify=_addresses(a, "notify"),
        allow_self_approval=a.get("allow_self_approval", bool, d.allow_self_approval),
    )
    a.finish()
    if settings.required not in (1, 2):
        raise ConfigError(f"{path}: approval.required: must be 1 or 2, not {settings.required}")
    if settings.approvers and settings.required > len(settings.approvers):
        raise ConfigError(
            f"{path}: approval.required: {settings.required} different approvers are required "
            f"but approval.approvers names {len(settings.approvers)}: add another or require 1"
        )
    if not 1 <= settings.link_days <= 60:
        raise ConfigError(f"{path}: approval.link_days: must be from 1 to 60 days")
    return settings


_BANK_HOLIDAYS = ("ENG", "WLS", "SCT", "NIR")


def _checks(path: Path, c: _Table) -> ChecksSettings:
    ignore = c.get("ignore", list, [])
    if not all(isinstance(code, str) for code in ignore):
        raise ConfigError(f'{path}: checks.ignore: must be a list of codes like ["link-generic"]')
    region = c.get("bank_holidays", str, "ENG").upper()
    if region not in _BANK_HOLIDAYS:
        raise ConfigError(
            f"{path}: checks.bank_holidays: must be one of {', '.join(_BANK_HOLIDAYS)}, "
            f"not {region!r}"
        )
    enforce = c.get("enforce", bool, True)
    c.finish()
    return ChecksSettings(ignore=tuple(ignore), bank_holidays=region, enforce=enforce)


def _statuses(path: Path, key: str, value: Any, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    codes = tuple(value)
    if not codes or not all(
        isinstance(c, str) and re.match(r"^[245](\.\d{1,3}){0,2}\.?$", c) for c in codes
    ):
        raise ConfigError(
            f'{path}: bounces.{key}: must be a list of status codes like ["5.1.", "5.2.1"]'
        )
    return codes


def _bounces(
    path: Path, b: _Table, env: Mapping[str, str], oauth: OAuthSettings | None
) -> BounceSettings:
    """The [bounces] table; the IMAP password only ever comes from the environment, and
    with imap_auth = "oauth2" the token from the OAuth settings SMTP uses."""
    d = BounceSettings()
    if "imap_password" in b.data:
        raise ConfigError(
            f"{path}: bounces.imap_password: secrets never live in {CONFIG_NAME}: "
            "set MAILER_BOUNCES_IMAP_PASSWORD in the environment instead"
        )
    domain = _env_str(env, "MAILER_BOUNCES_DOMAIN", b.get("domain", str))
    if domain is not None:
        domain = domain.strip().lower()
        if not _DOMAIN.match(domain):
            raise ConfigError(f"{path}: bounces.domain: {domain!r} is not a domain name")
    local_part = b.get("local_part", str, d.local_part)
    if not _LOCAL_PART.match(local_part):
        raise ConfigError(
            f"{path}: bounces.local_part: use lower-case letters, digits, '.', '_' or '-'"
        )
    security = b.get("imap_security", str, d.imap_security)
    if security not in _SECURITY:
        raise ConfigError(f"{path}: bounces.imap_security: must be one of {', '.join(_SECURITY)}")
    default_port = {"none": 143, "starttls": 143, "tls": 993}[security]
    folders = {}
    for key in ("folder", "processed_folder", "unrecognised_folder", "quarantine_folder"):
        folders[key] = b.get(key, str, getattr(d, key))
        if not _FOLDER.match(folders[key]):
            raise ConfigError(f"{path}: bounces.{key}: {folders[key]!r} is not a folder name")
    imap_auth = env.get("MAILER_BOUNCES_IMAP_AUTH") or b.get("imap_auth", str, d.imap_auth)
    if imap_auth not in _AUTH:
        raise ConfigError(f"{path}: bounces.imap_auth: must be one of {', '.join(_AUTH)}")
    imap_oauth = None
    if imap_auth == "oauth2" and (env.get("MAILER_BOUNCES_IMAP_HOST") or b.get("imap_host", str)):
        imap_oauth = oauth or _oauth(env, '[bounces] imap_auth = "oauth2"')
    settings = BounceSettings(
        domain=domain,
        local_part=local_part,
        imap_host=_env_str(env, "MAILER_BOUNCES_IMAP_HOST", b.text("imap_host")),
        imap_port=b.number("imap_port", int, default_port, env, "MAILER_BOUNCES_IMAP_PORT"),
        imap_security=security,
        imap_username=_env_str(env, "MAILER_BOUNCES_IMAP_USERNAME", b.text("imap_username")),
        imap_password=env.get("MAILER_BOUNCES_IMAP_PASSWORD") or None,
        imap_ca_file=_env_str(env, "MAILER_BOUNCES_IMAP_CA_FILE", b.get("imap_ca_file", str)),
        imap_auth=imap_auth,
        imap_oauth=imap_oauth,
        fetch_every=b.get("fetch_every", float, d.fetch_every),
        soft_limit=b.get("soft_limit", int, d.soft_limit),
        hard_statuses=_statuses(
            path, "hard_statuses", b.get("hard_statuses", list), d.hard_statuses
        ),
        policy_statuses=_statuses(
            path, "policy_statuses", b.get("policy_statuses", list), d.policy_statuses
        ),
        max_message_kb=b.get("max_message_kb", int, d.max_message_kb),
        max_depth=b.get("max_depth", int, d.max_depth),
        max_parts=b.get("max_parts", int, d.max_parts),
        max_seconds=b.get("max_seconds", float, d.max_seconds),
        **folders,
    )
    b.finish()
    for key in ("max_message_kb", "max_depth", "max_parts", "max_seconds"):
        if getattr(settings, key) <= 0:
            raise ConfigError(f"{path}: bounces.{key}: must be a number above 0")
    if settings.soft_limit < 1:
        raise ConfigError(f"{path}: bounces.soft_limit: must be at least 1")
    if settings.fetch_every <= 0:
        raise ConfigError(f"{path}: bounces.fetch_every: must be a number of minutes above 0")
    if settings.imap_host and not settings.imap_username:
        raise ConfigError(f"{path}: bounces.imap_username: is required with bounces.imap_host")
    return settings


def _web(path: Path, root: Path, w: _Table) -> WebSettings:
    d = WebSettings()
    web = WebSettings(
        consent=w.text("consent", d.consent).strip(),
        confirm_days=w.get("confirm_days", int, d.confirm_days),
        cooling_off_minutes=w.get("cooling_off_minutes", int, d.cooling_off_minutes),
        per_ip_per_hour=w.get("per_ip_per_hour", int, d.per_ip_per_hour),
        per_address_per_day=w.get("per_address_per_day", int, d.per_address_per_day),
        confirmations_per_hour=w.get("confirmations_per_hour", int, d.confirmations_per_hour),
        blocklist=w.text("blocklist"),
        track_clicks=w.get("track_clicks", bool, d.track_clicks),
        accessibility_contact=w.get("accessibility_contact", str, "").strip(),
        accessibility_enforcement=w.get("accessibility_enforcement", str, "").strip(),
        trusted_proxies=_networks(w, "trusted_proxies", d.trusted_proxies),
    )
    w.finish()
    if not web.consent:
        raise ConfigError(f"{path}: web.consent: must not be empty")
    for key in (
        "confirm_days",
        "cooling_off_minutes",
        "per_ip_per_hour",
        "per_address_per_day",
        "confirmations_per_hour",
    ):
        if getattr(web, key) < 1:
            raise ConfigError(f"{path}: web.{key}: must be at least 1")
    if web.blocklist and not (root / web.blocklist).is_file():
        raise ConfigError(f"{path}: web.blocklist: file {web.blocklist} does not exist")
    return web


def _networks(table: _Table, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A list of IP addresses or networks, like ["127.0.0.1", "10.0.0.0/8"]."""
    table.used.add(key)
    value = table.data.get(key, list(default))
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ConfigError(
            f'{table._where(key)}: must be a list of addresses, like ["127.0.0.1", "::1"]'
        )
    for item in value:
        try:
            ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise ConfigError(
                f"{table._where(key)}: {item!r} is not an IP address or network "
                '(like "127.0.0.1" or "10.0.0.0/8")'
            ) from None
    return tuple(item.strip() for item in value)
