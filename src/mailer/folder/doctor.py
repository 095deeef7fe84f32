"""``mailer doctor``: is this newsletter folder ready to send? One line per check.

It reads what every command reads (the folder, mailer.toml and the environment, the
signing key, the database, the templates), says what it found, and with ``--smtp``
connects and logs in to the configured server without sending anything; with ``--web``
asks base_url whether this folder's ``mailer serve`` answers there. Nothing is
changed, except that a missing database is created, as any command would.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from mailer import config
from mailer.config import CONFIG_NAME, Settings
from mailer.errors import MailerError
from mailer.render.compile import LAYOUT
from mailer.sending import transports
from mailer.sending.message import DkimSigner
from mailer.site import reach
from mailer.store import people
from mailer.store.database import exists, open_db
from mailer.subscribers import posting
from mailer.web import webhooks

# Domains reserved for examples (RFC 2606): a setting still on one was never filled in.
_EXAMPLE_DOMAINS = ("example.org", "example.com", "example.net")


class Verdict(StrEnum):
    OK = "ok"
    NOTE = "note"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Line:
    verdict: Verdict
    topic: str
    message: str

    def __str__(self) -> str:
        return f"{self.verdict:<4}  {self.topic:<10}  {self.message}"


def diagnose(
    start: Path | None = None,
    *,
    smtp: bool = False,
    web: bool = False,
    env: dict[str, str] | None = None,
    factory: Callable[[Settings], transports.TransportFactory] | None = None,
) -> Iterator[Line]:
    """Every check, in the order a problem would stop a send."""
    try:
        root = config.find_root(start)
    except MailerError as exc:
        yield Line(Verdict.FAIL, "folder", f"{exc} (make one with: mailer init FOLDER)")
        return
    yield Line(Verdict.OK, "folder", f"{root}")
    try:
        settings = config.load(root, env=os.environ if env is None else env)
    except MailerError as exc:
        yield Line(Verdict.FAIL, "settings", str(exc))
        return
    yield from _settings(settings)
    yield from _public_pages(settings)
    yield from _key(settings)
    yield from _database(settings)
    yield from _web_mail(settings)
    yield from _webhooks(os.environ if env is None else env)
    yield from _templates(settings)
    yield from _transport(settings, smtp, factory)
    if web:
        yield from _web(settings)


def _web(s: Settings) -> Iterator[Line]:
    """--web: what a send asks base_url first (mailer.site.reach)."""
    for answer in reach.ask(s):
        if answer.ok:
            yield Line(Verdict.OK, "web", _WEB_OK[answer.what].format(url=s.base_url))
        else:
            yield Line(Verdict.FAIL, "web", f"{answer.problem}: {reach.FIX}")


_WEB_OK = {
    "challenge": "{url}/ is this folder's mailer serve (it answered the challenge with this key)",
    "one-click": "{url}/unsubscribe/ honours one-click POSTs (a forged one got mailer's 400)",
}


def _settings(s: Settings) -> Iterator[Line]:
    yield Line(Verdict.OK, "settings", f"{CONFIG_NAME}: {s.name}, {s.organisation}, {s.timezone}")
    for what, value in (("base_url", s.base_url), ("from_address", s.sender.from_address)):
        if any(value.rstrip("/").endswith(d) for d in _EXAMPLE_DOMAINS):
            yield Line(
                Verdict.NOTE,
                "settings",
                f"{what} is still an example address ({value}): put your own in {CONFIG_NAME}",
            )
    if s.alerts_to:
        yield Line(Verdict.OK, "alerts", f"alerts go to {', '.join(s.alerts_to)}")
    else:
        yield Line(
            Verdict.NOTE,
            "alerts",
            f"nobody is emailed when a scheduled send fails: set alerts_to in {CONFIG_NAME}",
        )


def _public_pages(s: Settings) -> Iterator[Line]:
    """What the public pages need that only the operator can write."""
    if s.footer.privacy_url:
        yield Line(Verdict.OK, "privacy", f"the privacy notice is {s.footer.privacy_url}")
    else:
        yield Line(
            Verdict.NOTE,
            "privacy",
            "no privacy notice: the sign-up form and every footer need one (UK GDPR Art. 13): "
            f'set privacy_url = "https://..." under [footer] in {CONFIG_NAME}',
        )
    missing = [
        key
        for key, value in (
            ("accessibility_contact", s.web.accessibility_contact or s.footer.contact),
            ("accessibility_enforcement", s.web.accessibility_enforcement),
        )
        if not value
    ]
    if missing:
        yield Line(
            Verdict.NOTE,
            "statement",
            "the accessibility statement (/accessibility) says it has not been written: set "
            f"{' and '.join(missing)} under [web] in {CONFIG_NAME} (docs/web.md)",
        )
    else:
        yield Line(Verdict.OK, "statement", "the accessibility statement's own parts are written")


def _key(s: Settings) -> Iterator[Line]:
    if s.secret_key_from:
        yield Line(Verdict.OK, "key", f"the signing key comes from {s.secret_key_from}")
        return
    path = s.key_file
    if not path.is_file():
        yield Line(
            Verdict.NOTE,
            "key",
            f"no signing key yet: the first send or mailer serve creates {path}",
        )
        return
    # A key others can read was refused with the settings already (config._read_key).
    yield Line(Verdict.OK, "key", f"{path} (mode 600): back it up (docs/security.md)")


def _database(s: Settings) -> Iterator[Line]:
    new = not exists(s)
    try:
        with open_db(s) as database, database.session() as session:
            lists = people.list_summaries(session)
    except MailerError as exc:
        yield Line(Verdict.FAIL, "database", str(exc))
        return
    made = " (created now)" if new else ""
    if not lists:
        yield Line(
            Verdict.NOTE,
            "database",
            f"no lists yet{made}: mailer lists create practitioners --name Practitioners",
        )
        return
    counts = ", ".join(f"{lst.slug} ({lst.subscribed} subscribed)" for lst in lists[:8])
    yield Line(Verdict.OK, "database", f"{len(lists)} list(s){made}: {counts}")


def _web_mail(s: Settings) -> Iterator[Line]:
    try:
        well, said = posting.health(s)
    except MailerError as exc:
        yield Line(Verdict.FAIL, "web mail", str(exc))
        return
    yield Line(Verdict.OK if well else Verdict.FAIL, "web mail", said)


def _webhooks(env: Mapping[str, str]) -> Iterator[Line]:
    """Which relays' webhooks mailer serve takes (by name: a key is never shown)."""
    try:
        keys = webhooks.keys_from(env)
    except MailerError as exc:
        yield Line(Verdict.FAIL, "webhooks", str(exc))
        return
    said = f"{', '.join(keys)} configured" if keys else "none"
    yield Line(Verdict.OK, "webhooks", said)


def _templates(s: Settings) -> Iterator[Line]:
    own = sorted(
        str(p.relative_to(s.templates_dir)) for p in s.templates_dir.rglob("*.j2") if p.is_file()
    )
    if not own:
        yield Line(Verdict.OK, "templates", "mailer's own (no templates/ folder)")
        return
    layout = " (the layout too: compare it with each new mailer)" if LAYOUT in own else ""
    yield Line(Verdict.OK, "templates", f"{len(own)} of your own in templates/{layout}")


def _transport(
    s: Settings, smtp: bool, factory: Callable[[Settings], transports.TransportFactory] | None
) -> Iterator[Line]:
    try:
        DkimSigner.from_environment()
    except MailerError as exc:
        yield Line(Verdict.FAIL, "dkim", str(exc))
    if s.transport.name == "outbox":
        yield Line(
            Verdict.NOTE,
            "transport",
            "outbox: nobody is emailed; messages are written to outbox/ (set [transport] "
            f'name = "smtp" in {CONFIG_NAME}, or MAILER_TRANSPORT=smtp, to email people)',
        )
        if smtp:
            yield Line(Verdict.FAIL, "smtp", "--smtp: the transport is the outbox, not smtp")
        return
    server = s.transport.smtp
    login = f" as {server.username}" if server.username else " without a login"
    method = "with a password" if server.username else "without a login"
    if server.auth == "oauth2" and server.oauth is not None:
        host = urlsplit(server.oauth.token_url).hostname
        login += " with OAuth 2.0"
        method = f"with an OAuth 2.0 token from {host} (AUTH XOAUTH2)"
    where = f"{server.host}:{server.port} ({server.security}){login}"
    if not smtp:
        yield Line(Verdict.OK, "transport", f"smtp to {where} (check the login: --smtp)")
        return
    opened = (factory or (lambda st: transports.factory(st, "_doctor")))(s)
    try:
        with opened() as transport:
            transport.open()
    except MailerError as exc:
        yield Line(Verdict.FAIL, "smtp", f"{where}: {exc}")
        return
    yield Line(Verdict.OK, "smtp", f"connected to {where}; nothing was sent (logged in {method})")
