"""The bounce mailbox read with an OAuth 2.0 token (AUTHENTICATE XOAUTH2), as Exchange
Online requires, against a real Dovecot whose oauth2 passdb asks an identity provider on
loopback (tests/oauth_server.py) about each token."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bounce_helpers import CASES, copies, render, setup_sent
from dovecot_server import USER, Dovecot
from oauth_server import SECRET, IdentityProvider
from send_helpers import addresses

PEOPLE = addresses(20)


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[IdentityProvider]:
    with IdentityProvider(tmp_path, mailbox=USER) as running:
        yield running


@pytest.fixture
def server(idp: IdentityProvider) -> Iterator[Dovecot]:
    with Dovecot(introspection_url=idp.introspection_url) as running:
        yield running


@pytest.fixture
def sent(
    cli: Any,
    newsletter: Path,
    server: Dovecot,
    idp: IdentityProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    for key, value in idp.env().items():
        monkeypatch.setenv(key, value)
    setup_sent(cli, newsletter, PEOPLE, extra=server.settings_toml() + 'imap_auth = "oauth2"\n')
    return newsletter


def test_fetch_logs_in_with_a_token(
    cli: Any,
    sent: Path,
    server: Dovecot,
    idp: IdentityProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    name, who, *_ = CASES[0]
    server.append(render(name, copies(sent)[PEOPLE[who]], sent))
    r = cli("bounces", "fetch")
    assert r.exit_code == 0, r.output
    assert "Read 1 message: 1 new, 0 processed before." in r.stdout
    assert server.messages("INBOX") == []
    assert len(idp.issued) == 1
    said = r.output + caplog.text
    assert SECRET not in said and idp.issued[0] not in said


def test_a_token_the_mailbox_refuses_says_what_to_change_in_the_tenant(
    cli: Any, sent: Path, idp: IdentityProvider
) -> None:
    idp.mailbox = "someone-else"  # a token for another mailbox
    r = cli("bounces", "fetch")
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1
    assert f"refused the login of {USER} with an OAuth 2.0 token" in r.stderr
    assert "IMAP.AccessAsApp" in r.stderr
    assert idp.issued[0] not in r.output


def test_a_wrong_secret_is_one_line(
    cli: Any, sent: Path, idp: IdentityProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILER_OAUTH_CLIENT_SECRET", "wrong-Kq2~secret")
    r = cli("bounces", "fetch")
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1
    assert "refused (invalid_client, AADSTS7000215): the client secret is wrong" in r.stderr
    assert "wrong-Kq2~secret" not in r.output and idp.issued == []
