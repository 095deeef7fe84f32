"""Newsletter settings: ``mailer.toml`` in the newsletter folder, overridden by the environment.

Commands find ``mailer.toml`` in the current folder or its parents, like git finds ``.git``.
Secrets (the SMTP password, the signing key, the DKIM key) only ever come from the
environment, never from the file.
"""

from __future__ import annotations

import datetime as dt
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
    # Sign-up and "manage" form posts allowed per IP address per hour, and per address per day.
    per_ip_per_hour: int = 10
    per_address_per_day: int = 5
    # A file of disposable email domains (one a line) whose addresses the form refuses.
    blocklist: str | None = None
    # Count clicks per link of each issue, without recording who clicked (off by default).
    track_clicks: bool = False
    # When the accessibility statement was last reviewed (YYYY-MM-DD).
    accessibility_reviewed: str = "2026-12-01"


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
    web: WebSettings = field(default_factory=WebSettings)

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
    web = _web(path, root, top.table("web"))
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
        web=web,
    )


def _web(path: Path, root: Path, w: _Table) -> WebSettings:
    d = WebSettings()
    web = WebSettings(
        consent=w.get("consent", str, d.consent).strip(),
        confirm_days=w.get("confirm_days", int, d.confirm_days),
        cooling_off_minutes=w.get("cooling_off_minutes", int, d.cooling_off_minutes),
        per_ip_per_hour=w.get("per_ip_per_hour", int, d.per_ip_per_hour),
        per_address_per_day=w.get("per_address_per_day", int, d.per_address_per_day),
        blocklist=w.get("blocklist", str),
        track_clicks=w.get("track_clicks", bool, d.track_clicks),
        accessibility_reviewed=w.get("accessibility_reviewed", str, d.accessibility_reviewed),
    )
    w.finish()
    if not web.consent:
        raise ConfigError(f"{path}: web.consent: must not be empty")
    for key in ("confirm_days", "cooling_off_minutes", "per_ip_per_hour", "per_address_per_day"):
        if getattr(web, key) < 1:
            raise ConfigError(f"{path}: web.{key}: must be at least 1")
    try:
        dt.date.fromisoformat(web.accessibility_reviewed)
    except ValueError:
        raise ConfigError(
            f"{path}: web.accessibility_reviewed: must be a date like 2026-12-01"
        ) from None
    if web.blocklist and not (root / web.blocklist).is_file():
        raise ConfigError(f"{path}: web.blocklist: file {web.blocklist} does not exist")
    return web


def _demo_key(root: Path) -> str | None:
    """The key ``make demo`` generated for this machine, kept in .mailer/ outside git."""
    path = root / ".mailer" / "secret_key"
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None
