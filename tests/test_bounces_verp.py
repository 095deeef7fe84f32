"""VERP: each copy's envelope sender names it, and the bounce processor reads it back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bounce_helpers import BOUNCE_DOMAIN, CORPUS, enable_bounces, events, subscriber_status
from mailer import config
from mailer.errors import ConfigError
from mailer.sending import verp
from send_helpers import addresses, make_list, smtp_env
from smtp_server import SMTPServer

PEOPLE = addresses(5)


@pytest.fixture
def server() -> Any:
    with SMTPServer() as s:
        yield s


def send_through(cli: Any, root: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    make_list(cli, root, "practitioners", PEOPLE)
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    smtp_env(monkeypatch, server.port)
    r = cli("send", "2025-11", "--list", "practitioners", "--yes")
    assert r.exit_code == 0, r.output


def test_a_bounce_to_the_verp_address_finds_the_copy(
    cli: Any, newsletter: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_bounces(newsletter)
    send_through(cli, newsletter, server, monkeypatch)
    received = {r.rcpt_tos[0]: r for r in server.received}
    assert set(received) == set(PEOPLE)
    senders = {r.mail_from for r in received.values()}
    assert len(senders) == len(PEOPLE)  # one return path per copy
    for r in received.values():
        local, _, domain = r.mail_from.partition("@")
        assert domain == BOUNCE_DOMAIN and local.startswith("bounces+"), r.mail_from
        message = r.message
        # The headers a reader sees do not change.
        assert message["From"] == (
            "Cumberland Safeguarding Children Partnership <newsletter@example.org>"
        )
        assert message["Reply-To"] == "cscp@example.org"
        assert "<mailto:cscp@example.org?subject=unsubscribe%20" in message["List-Unsubscribe"]
    # A bounce that quotes nothing of the original, sent to the copy's return path.
    victim = PEOPLE[3]
    address = received[victim].mail_from
    dsn = (CORPUS / "postfix-4.4.1-failed.eml").read_text(encoding="utf-8")
    dsn = dsn.split(
        "--4Nq2bX1yZ3z9sRr.1762334401/relay.example.org\nContent-Description: Undelivered"
    )[0]
    # Forwarded by the school to an address mailer never mailed, which does not exist.
    dsn = dsn.replace("%VERP%", address).replace("%RCPT%", "someone@elsewhere.example")
    dsn = dsn.replace("Status: 4.4.1", "Status: 5.1.1")
    dsn = dsn.replace("connect to mx.school", "550 5.1.1 user unknown at mx.school")
    assert "%MSGID%" not in dsn
    # Some systems report the address in capitals: the token still reads.
    r = cli("bounces", "process", "-", "--recipient", address.upper(), input=dsn)
    assert r.exit_code == 0, r.output
    assert subscriber_status(newsletter, victim) == "bounced"
    assert [e[:2] for e in events(newsletter)] == [("hard", victim)]


def test_without_a_bounce_domain_the_from_address_is_the_envelope_sender(
    cli: Any, newsletter: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    send_through(cli, newsletter, server, monkeypatch)
    assert {r.mail_from for r in server.received} == {"newsletter@example.org"}


def test_an_altered_return_path_names_nobody(newsletter: Path) -> None:
    enable_bounces(newsletter)
    settings = config.load(newsletter)
    address = verp.envelope_sender(settings, 41)
    assert verp.delivery_of(settings, address) == 41
    local, _, domain = address.partition("@")
    assert verp.delivery_of(settings, address.replace("+41.", "+42.")) is None
    assert verp.delivery_of(settings, f"{local}@other.example.org") is None
    other = "a" if local[-1] != "a" else "b"
    assert verp.delivery_of(settings, f"{local[:-1]}{other}@{domain}") is None
    assert verp.delivery_of(settings, "bounces@" + BOUNCE_DOMAIN) is None


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ('domain = "not a domain"', "bounces.domain: 'not a domain' is not a domain name"),
        ('imap_password = "x"', "secrets never live in mailer.toml"),
        ("soft_limit = 0", "bounces.soft_limit: must be at least 1"),
        ('hard_statuses = ["five"]', "bounces.hard_statuses: must be a list of status codes"),
        ('folder = "a*b"', "bounces.folder: 'a*b' is not a folder name"),
        ('imap_host = "mail.example.org"', "bounces.imap_username: is required"),
        ("soft_limt = 3", "bounces.soft_limt: unknown setting"),
    ],
)
def test_bounce_settings_are_checked(newsletter: Path, lines: str, error: str) -> None:
    with (newsletter / "mailer.toml").open("a", encoding="utf-8") as f:
        f.write(f"\n[bounces]\n{lines}\n")
    with pytest.raises(ConfigError) as raised:
        config.load(newsletter)
    assert error in str(raised.value)
