"""Relay profiles and a relay's day limit: the settings a profile gives, overridden by the
folder's; a send larger than what is left of the day refused with the arithmetic, or
spread over days, paused when the day's quota is used and taken up by the worker when the
window has room again. Against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mailer import config
from mailer.errors import ConfigError
from mailer.scheduling import resume
from mailer.sending import ratelimit
from mailer.store.database import open_db
from send_helpers import addresses, ledger, make_list, smtp_env, sql
from smtp_server import Handler, SMTPServer

SLUG = "2025-11"
ENV = {"MAILER_SECRET_KEY": "k" * 40}


def _settings(root: Path, transport: str, **env: str) -> config.Settings:
    text = (root / "mailer.toml").read_text(encoding="utf-8")
    text = text.split("[transport]")[0] + "[transport]\n" + transport
    return config.from_text(root, text, {**ENV, **env})


def test_a_profile_sets_host_port_security_and_limits(newsletter: Path) -> None:
    s = _settings(newsletter, 'name = "smtp"\nprofile = "microsoft365"\n', **_OAUTH)
    smtp = s.transport.smtp
    assert (smtp.host, smtp.port, smtp.security) == ("smtp.office365.com", 587, "starttls")
    assert (smtp.rate_per_minute, smtp.rate_per_day, smtp.auth) == (30, 10_000, "oauth2")
    ses = _settings(newsletter, 'name = "smtp"\nprofile = "ses"\n').transport.smtp
    assert (ses.host, ses.rate_per_second, ses.rate_per_day) == (
        "email-smtp.eu-west-2.amazonaws.com",
        14,
        50_000,
    )
    assert _settings(newsletter, 'profile = "sendgrid"\n').transport.smtp.username == "apikey"
    # A rehearsal through the outbox is not held to the relay's limits.
    outbox = _settings(newsletter, 'profile = "ses"\n').transport.smtp
    assert (outbox.host, outbox.rate_per_second, outbox.rate_per_day) == (
        "email-smtp.eu-west-2.amazonaws.com",
        None,
        None,
    )


def test_explicit_settings_override_the_profile(newsletter: Path) -> None:
    s = _settings(
        newsletter,
        'name = "smtp"\nprofile = "microsoft365"\nauth = "password"\nrate_per_day = 2000\n'
        'host = "smtp.example.org"\n',
        MAILER_SMTP_RATE_PER_MINUTE="10",
    )
    smtp = s.transport.smtp
    assert (smtp.host, smtp.port, smtp.auth) == ("smtp.example.org", 587, "password")
    assert (smtp.rate_per_minute, smtp.rate_per_day) == (10, 2000)
    # Another security has its own port, not the profile's.
    tls = _settings(newsletter, 'profile = "ses"\nsecurity = "tls"\n').transport.smtp
    assert tls.port == 465


def test_an_unknown_profile_names_the_known_ones(newsletter: Path) -> None:
    with pytest.raises(ConfigError, match="'office365' is not one of microsoft365, ses, mailgun"):
        _settings(newsletter, 'profile = "office365"\n')


_OAUTH = {
    "MAILER_OAUTH_TENANT": "contoso.onmicrosoft.com",
    "MAILER_OAUTH_CLIENT_ID": "6731de76-14a6-49ae-97bc-6eba6914391e",
    "MAILER_OAUTH_CLIENT_SECRET": "s3cret~value",
    "MAILER_SMTP_USERNAME": "newsletter@example.org",
}


def test_oauth_settings_come_from_the_environment_and_name_what_is_missing(
    newsletter: Path,
) -> None:
    s = _settings(newsletter, 'name = "smtp"\nprofile = "microsoft365"\n', **_OAUTH)
    assert s.transport.smtp.oauth is not None
    assert s.transport.smtp.oauth.token_url == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )
    assert "s3cret" not in repr(s)
    missing = {k: v for k, v in _OAUTH.items() if k != "MAILER_OAUTH_CLIENT_SECRET"}
    with pytest.raises(ConfigError, match="set one of MAILER_OAUTH_CLIENT_SECRET") as caught:
        _settings(newsletter, 'name = "smtp"\nprofile = "microsoft365"\n', **missing)
    with pytest.raises(ConfigError, match="MAILER_OAUTH_TOKEN_URL: must be an https://"):
        _settings(
            newsletter,
            'name = "smtp"\nprofile = "microsoft365"\n',
            **_OAUTH,
            MAILER_OAUTH_TOKEN_URL="http://idp.example.org/token",
        )
    assert "s3cret" not in str(caught.value)


# -- a day's limit -------------------------------------------------------------------------


@pytest.fixture
def approved(cli: Any, newsletter: Path) -> Path:
    make_list(cli, newsletter, "practitioners", addresses(12))
    assert cli("approve", SLUG, "--by", "Sam Patel").exit_code == 0
    return newsletter


def test_a_send_larger_than_the_day_is_refused_with_the_arithmetic(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SMTPServer(Handler()) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_RATE_PER_DAY="5")
        r = cli("send", SLUG, "--list", "practitioners", "--yes")
    assert r.exit_code == 1
    assert (
        "2025-11 would go to 12 people, but 127.0.0.1 takes 5 recipients a day (0 sent in "
        "the past 24 hours, so 5 left): it would take 3 days. Add --spread to send 5 now"
    ) in r.stderr
    assert server.received == []
    assert sql(approved, "SELECT COUNT(*) FROM send") == [(0,)]


def test_a_spread_send_pauses_when_the_day_is_used_and_the_worker_resumes_it(
    cli: Any, approved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SMTPServer(Handler()) as server:
        smtp_env(monkeypatch, server.port, MAILER_SMTP_RATE_PER_DAY="5")
        r = cli("send", SLUG, "--list", "practitioners", "--spread", "--yes")
        assert "Spread:     5 now, then up to 5 a day: about 3 days" in r.stdout
        assert r.exit_code == 1
        assert "the relay's limit of 5 recipients a day is used; the worker resumes" in r.stderr
        assert len(server.received) == 5
        assert Counter(ledger(approved).values()) == {"sent": 5, "pending": 7}
        assert sql(approved, "SELECT status, pause_reason FROM send") == [("paused", "daily-limit")]
        settings = config.load(approved)
        now = dt.datetime.now(dt.UTC)
        with open_db(settings) as database:
            # Within the day the worker leaves it alone.
            assert resume.resume_interrupted(settings, database, now=now) == []
            with database.session() as session:
                conn = session.connection()
                assert not ratelimit.day_ready(settings, conn, now)
                assert ratelimit.day_ready(settings, conn, now + dt.timedelta(days=1))
        # A day passes: what the relay and the ledger remember is a day older.
        day_ago = now - dt.timedelta(days=1, minutes=1)
        sql(approved, "UPDATE relay_slot SET ended_at = ? WHERE kind = 'day'", day_ago)
        sql(approved, "UPDATE delivery SET sent_at = ? WHERE sent_at IS NOT NULL", day_ago)
        with open_db(settings) as database:
            (outcome,) = resume.resume_interrupted(settings, database)
        assert outcome.send_id is not None
        assert len(server.received) == 10
        assert Counter(ledger(approved).values()) == {"sent": 10, "pending": 2}
    assert Counter(server.handler.recipients())[addresses(12)[0]] == 1
    assert set(Counter(server.handler.recipients()).values()) == {1}
