"""Helpers for the preflight-check tests: small issues written to order, checks run one by one."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import socket
from pathlib import Path

from mailer import checks, config
from mailer.checks import Finding
from mailer.checks.fetch import Network
from mailer.config import Settings
from mailer.render import compile_slug

SUBJECT = "CSCP Newsletter – March 2026"
PREHEADER = "Training dates for March, news from the partnership and the latest from NSPCC Learning"


def enforce(root: Path, extra: str = "") -> None:
    """Turn the checks on before sending, as in a real newsletter folder."""
    path = root / "mailer.toml"
    text = path.read_text(encoding="utf-8").replace("enforce = false", "enforce = true")
    path.write_text(text + extra, encoding="utf-8")


def write_issue(
    root: Path,
    sections: str,
    *,
    slug: str = "2026-03",
    date: str = "2026-03-02",
    subject: str = SUBJECT,
    preheader: str | None = PREHEADER,
    intro: str = "Welcome to the March newsletter from the partnership.",
) -> str:
    """Write issues/SLUG/issue.yaml with these sections (YAML, indented by two spaces)."""
    folder = root / "issues" / slug
    (folder / "images").mkdir(parents=True, exist_ok=True)
    example = root / "issues" / "2021-12" / "images" / "ofsted.png"
    if example.is_file():
        shutil.copy(example, folder / "images" / "ofsted.png")
    head = [f'subject: "{subject}"']
    if preheader is not None:
        head.append(f'preheader: "{preheader}"')
    head += [f"date: {date}", f'intro: "{intro}"', "sections:"]
    (folder / "issue.yaml").write_text("\n".join(head) + "\n" + sections, encoding="utf-8")
    return slug


def only(settings: Settings, code: str) -> Settings:
    """Settings that run one check and silence every other one."""
    others = tuple(c for c in checks.CHECKS if c != code)
    return dataclasses.replace(settings, checks=dataclasses.replace(settings.checks, ignore=others))


def run_one(
    root: Path,
    slug: str,
    code: str,
    send_date: str = "2026-03-02",
    *,
    online: bool = False,
    network: Network | None = None,
) -> list[Finding]:
    settings = only(config.load(root), code)
    report = checks.run(
        settings,
        compile_slug(settings, slug, limits=False),
        dt.date.fromisoformat(send_date),
        online=online,
        network=network,
    )
    assert {f.code for f in report.findings} <= {code}
    return report.findings


NEWS = """\
  - type: news
    title: "{title}"
    body: |
      {body}
"""

TRAINING = """\
  - type: training
    title: "Understanding the Levels of Need"
    body: |
      {body}
    booking_url: "https://example.org/cscp/training/levels-of-need"
    sessions:
{sessions}
"""


def news(body: str, title: str = "Partnership news") -> str:
    return NEWS.format(title=title, body=body.replace("\n", "\n      "))


def training(sessions: list[str], body: str = "Who the course is for and what it covers.") -> str:
    rows = "\n".join(f"      - {{{s}}}" for s in sessions)
    return TRAINING.format(body=body, sessions=rows)


def session(day: str, start: str = "09:30", end: str = "12:30", venue: str = "Carlisle") -> str:
    return f'date: {day}, start: "{start}", end: "{end}", venue: {venue}'


# A public address (documentation ranges are not public, and mailer check refuses them)
# standing for a web site whose far side is a local test server.
PUBLIC_IP = "93.184.215.14"
SITE_HOST = "news.test"


class FarSide:
    """The network as a test sees it: names resolve as ``names`` says (SITE_HOST to
    PUBLIC_IP by default), and a connection to PUBLIC_IP reaches 127.0.0.1:``port``.
    Every address mailer connected to is in ``connected``."""

    def __init__(self, port: int, names: dict[str, list[str]] | None = None) -> None:
        self.port = port
        self.names = names if names is not None else {SITE_HOST: [PUBLIC_IP]}
        self.connected: list[str] = []
        self.network = Network(self.resolve, self.connect)

    def resolve(self, host: str, _port: int) -> list[str]:
        if host not in self.names:
            raise socket.gaierror(f"no such host {host}")
        return self.names[host]

    def connect(self, address: str, _port: int, timeout: float) -> socket.socket:
        self.connected.append(address)
        target = "127.0.0.1" if address == PUBLIC_IP else address
        return socket.create_connection((target, self.port), timeout)
