"""Newsletter settings: ``mailer.toml`` in the newsletter folder, overridden by the environment.

Commands find ``mailer.toml`` in the current folder or its parents, like git finds ``.git``.
Secrets (the SMTP password, the signing key, the DKIM key) only ever come from the
environment, never from the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailer.errors import ConfigError

CONFIG_NAME = "mailer.toml"
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
_TRANSPORTS = ("outbox", "smtp")
_SECURITY = ("none", "starttls", "tls")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_LOCAL_PART = re.compile(r"^[a-z0-9][a-z0-9._-]{0,40}$")
# IMAP folder names in printable ASCII, without the characters IMAP would need quoted.
_FOLDER = re.compile(r"^[ !#$&-)+-\[\]-~]{1,200}$")


@dataclass(frozen=True)
class Sender:
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


@dataclass(frozen=True)
class Brand:
    primary: str = "#5b2a86"
    accent: str = "#0f766e"
    background: str = "#f3f1f6"
    logo: str | None = None


@dataclass(frozen=True)
class SMTPSettings:
    host: str = "localhost"
    port: int = 25
    security: str = "none"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    connections: int = 4
    rate_per_second: float | None = None
    rate_per_hour: int | None = None
    timeout: float = 30.0
    # A CA bundle to trust for STARTTLS/TLS, for relays with a private certificate authority.
    ca_file: str | None = None


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
    folder: str = "INBOX"
    processed_folder: str = "processed"
    unrecognised_folder: str = "unrecognised"
    # How often `mailer worker` reads the mailbox, in minutes.
    fetch_every: float = 5.0
    # A person is marked bounced after temporary failures on this many sends in a row.
    soft_limit: int = 3
    # Status codes (prefixes) that mean the address itself is gone: bounced at once.
    hard_statuses: tuple[str, ...] = ("5.1.", "5.2.1", "5.4.")
    # Status codes (prefixes) of policy or reputation refusals: the send is flagged.
    policy_statuses: tuple[str, ...] = ("5.7.",)

    @property
    def mailbox(self) -> bool:
        return bool(self.imap_host)


@dataclass(frozen=True)
class Settings:
    root: Path
    name: str
    organisation: str
    base_url: str
    sender: Sender
    footer: Footer
    brand: Brand = field(default_factory=Brand)
    timezone: str = "Europe/London"
    transport: TransportSettings = field(default_factory=TransportSettings)
    database_url: str = ""
    misfire_grace_hours: float = 6.0
    secret_key: str | None = field(default=None, repr=False)
    bounces: BounceSettings = field(default_factory=BounceSettings)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

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
    def outbox_dir(self) -> Path:
        return self.root / "outbox"

    @property
    def state_dir(self) -> Path:
        """Machine-local state that never goes into git (demo key, logs)."""
        return self.root / ".mailer"

    def require_secret_key(self) -> bytes:
        if not self.secret_key:
            raise ConfigError(
                "MAILER_SECRET_KEY is not set: export a long random value "
                "(for example: export MAILER_SECRET_KEY=$(python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'))"
            )
        return self.secret_key.encode()

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


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
        raise ConfigError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return _parse(root, path, data, env)


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

    def table(self, key: str) -> _Table:
        self.used.add(key)
        return _Table(
            self.path, key if not self.name else f"{self.name}.{key}", self.data.get(key, {})
        )

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self._where(unknown[0])}: unknown setting (is it misspelt?)")


def _env_str(env: Mapping[str, str], key: str, default: Any) -> Any:
    return env.get(key) or default


def _env_int(env: Mapping[str, str], key: str, default: int | None) -> int | None:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r}: must be a whole number") from None


def _env_float(env: Mapping[str, str], key: str, default: float | None) -> float | None:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r}: must be a number") from None


def _parse(root: Path, path: Path, data: dict[str, Any], env: Mapping[str, str]) -> Settings:
    top = _Table(path, "", data)
    name = top.get("name", str, required=True)
    organisation = top.get("organisation", str, required=True)
    base_url = top.get("base_url", str, required=True).rstrip("/")
    if not base_url.startswith(("https://", "http://")):
        raise ConfigError(f"{path}: base_url: must start with https://, not {base_url!r}")
    timezone = top.get("timezone", str, "Europe/London")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{path}: timezone: unknown time zone {timezone!r}") from None
    database_url = _env_str(env, "MAILER_DATABASE_URL", top.get("database_url", str, ""))
    if not database_url:
        database_url = f"sqlite:///{root / 'subscribers.sqlite'}"
    misfire = top.get("misfire_grace", float, 6.0)

    s = top.table("sender")
    sender = Sender(
        from_name=s.get("from_name", str, required=True),
        from_address=s.get("from_address", str, required=True),
        reply_to=s.get("reply_to", str),
    )
    s.finish()
    if "@" not in sender.from_address:
        raise ConfigError(f"{path}: sender.from_address: not an email address")

    f = top.table("footer")
    footer = Footer(
        postal_address=f.get("postal_address", str, required=True),
        contact=f.get("contact", str, ""),
        why=f.get("why", str, Footer.why),
    )
    f.finish()

    b = top.table("brand")
    brand = Brand(
        primary=b.get("primary", str, Brand.primary),
        accent=b.get("accent", str, Brand.accent),
        background=b.get("background", str, Brand.background),
        logo=b.get("logo", str),
    )
    b.finish()
    for key in ("primary", "accent", "background"):
        if not _COLOUR.match(getattr(brand, key)):
            raise ConfigError(f"{path}: brand.{key}: must be a colour like #5b2a86")
    if brand.logo and not (root / brand.logo).is_file():
        raise ConfigError(f"{path}: brand.logo: file {brand.logo} does not exist")

    t = top.table("transport")
    # Every key is read before the environment overrides it, so none is reported as unknown.
    transport_name = t.get("name", str, "outbox")
    transport_name = env.get("MAILER_TRANSPORT") or transport_name
    if transport_name not in _TRANSPORTS:
        raise ConfigError(
            f"transport {transport_name!r} is not one of {', '.join(_TRANSPORTS)} "
            "(set in mailer.toml [transport] name or MAILER_TRANSPORT)"
        )
    security = t.get("security", str, "none")
    security = env.get("MAILER_SMTP_SECURITY") or security
    if security not in _SECURITY:
        raise ConfigError(
            f"MAILER_SMTP_SECURITY={security!r}: must be one of {', '.join(_SECURITY)}"
        )
    default_port = {"none": 25, "starttls": 587, "tls": 465}[security]
    smtp = SMTPSettings(
        host=_env_str(env, "MAILER_SMTP_HOST", t.get("host", str, "localhost")),
        port=_env_int(env, "MAILER_SMTP_PORT", t.get("port", int, default_port)) or default_port,
        security=security,
        username=_env_str(env, "MAILER_SMTP_USERNAME", t.get("username", str)),
        password=env.get("MAILER_SMTP_PASSWORD") or None,
        connections=_env_int(env, "MAILER_SMTP_CONNECTIONS", t.get("connections", int, 4)) or 4,
        rate_per_second=_env_float(
            env, "MAILER_SMTP_RATE_PER_SECOND", t.get("rate_per_second", float)
        ),
        rate_per_hour=_env_int(env, "MAILER_SMTP_RATE_PER_HOUR", t.get("rate_per_hour", int)),
        timeout=_env_float(env, "MAILER_SMTP_TIMEOUT", t.get("timeout", float, 30.0)) or 30.0,
        ca_file=_env_str(env, "MAILER_SMTP_CA_FILE", t.get("ca_file", str)),
    )
    if smtp.connections < 1:
        raise ConfigError("MAILER_SMTP_CONNECTIONS must be at least 1")
    transport = TransportSettings(
        name=transport_name,
        smtp=smtp,
        max_attempts=t.get("max_attempts", int, 3),
        retry_backoff=_env_float(env, "MAILER_RETRY_BACKOFF", t.get("retry_backoff", float, 1.0))
        or 0.0,
        pause_after_errors=t.get("pause_after_errors", int, 20),
    )
    t.finish()
    bounces = _bounces(path, top.table("bounces"), env)
    top.finish()

    secret = env.get("MAILER_SECRET_KEY") or _demo_key(root)
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
        secret_key=secret,
        bounces=bounces,
    )


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


def _bounces(path: Path, b: _Table, env: Mapping[str, str]) -> BounceSettings:
    """The [bounces] table; the IMAP password only ever comes from the environment."""
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
    for key in ("folder", "processed_folder", "unrecognised_folder"):
        folders[key] = b.get(key, str, getattr(d, key))
        if not _FOLDER.match(folders[key]):
            raise ConfigError(f"{path}: bounces.{key}: {folders[key]!r} is not a folder name")
    settings = BounceSettings(
        domain=domain,
        local_part=local_part,
        imap_host=_env_str(env, "MAILER_BOUNCES_IMAP_HOST", b.get("imap_host", str)),
        imap_port=_env_int(env, "MAILER_BOUNCES_IMAP_PORT", b.get("imap_port", int, default_port))
        or default_port,
        imap_security=security,
        imap_username=_env_str(env, "MAILER_BOUNCES_IMAP_USERNAME", b.get("imap_username", str)),
        imap_password=env.get("MAILER_BOUNCES_IMAP_PASSWORD") or None,
        imap_ca_file=_env_str(env, "MAILER_BOUNCES_IMAP_CA_FILE", b.get("imap_ca_file", str)),
        fetch_every=b.get("fetch_every", float, d.fetch_every),
        soft_limit=b.get("soft_limit", int, d.soft_limit),
        hard_statuses=_statuses(
            path, "hard_statuses", b.get("hard_statuses", list), d.hard_statuses
        ),
        policy_statuses=_statuses(
            path, "policy_statuses", b.get("policy_statuses", list), d.policy_statuses
        ),
        **folders,
    )
    b.finish()
    if settings.soft_limit < 1:
        raise ConfigError(f"{path}: bounces.soft_limit: must be at least 1")
    if settings.fetch_every <= 0:
        raise ConfigError(f"{path}: bounces.fetch_every: must be a number of minutes above 0")
    if settings.imap_host and not settings.imap_username:
        raise ConfigError(f"{path}: bounces.imap_username: is required with bounces.imap_host")
    return settings


def _demo_key(root: Path) -> str | None:
    """The key ``make demo`` generated for this machine, kept in .mailer/ outside git."""
    path = root / ".mailer" / "secret_key"
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None
