"""Relays' bounce and complaint webhooks, through the app `mailer serve` runs and against a
real `mailer serve`: each provider's documented payload, signed with test keys, bounces or
complains the right person; a forged, stale, replayed or unknown one changes nobody and is
kept for the operator."""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import webhook_payloads as wp
from db_helpers import query
from mailer import config
from mailer.web import create_app, webhooks
from subscriber_helpers import Cli, fails, ok, status_of
from web_helpers import (
    PEOPLE,
    free_port,
    message_to,
    newsletter_with_a_send,
    start_server,
    stop_server,
)

NOW = 1_800_000_000.0
AMIRA, BEN, CHLOE = PEOPLE


class Hook:
    """The app on a test client, with the newsletter it serves and what it fetched."""

    def __init__(self, root: Path, signer: wp.SnsSigner, sendgrid: wp.SendGridSigner) -> None:
        self.root, self.signer, self.sendgrid = root, signer, sendgrid
        self.now = [NOW]
        app = create_app(config.load(root), clock=lambda: self.now[0])
        setattr(app.state, webhooks.FETCH_STATE, signer.fetch)
        self.client = TestClient(app)
        self.client.__enter__()

    def post(self, provider: str, body: bytes, headers: dict[str, str]) -> Any:
        return self.client.post(f"/webhooks/{provider}", content=body, headers=headers)

    def message_id(self, address: str) -> str:
        return str(message_to(self.root, address)["Message-ID"])

    def events(self) -> list[tuple[str, bool, Any, str, str]]:
        rows = query(
            self.root,
            "SELECT kind, verified, subscriber_id, source, reason FROM bounce_event ORDER BY id",
        )
        return [(r[0], bool(r[1]), r[2], r[3], r[4]) for r in rows]


@pytest.fixture
def make_hook(
    cli: Cli, newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Hook]]:
    hooks: list[Hook] = []
    signer = wp.SnsSigner(NOW)
    sendgrid = wp.SendGridSigner()

    def make(profile: str = "generic") -> Hook:
        monkeypatch.setenv("MAILER_SMTP_PROFILE", profile)
        monkeypatch.setenv("MAILER_WEBHOOK_SES_KEY", wp.TOPIC)
        monkeypatch.setenv("MAILER_WEBHOOK_MAILGUN_KEY", wp.MAILGUN_KEY)
        monkeypatch.setenv("MAILER_WEBHOOK_SENDGRID_KEY", sendgrid.public)
        monkeypatch.setenv("MAILER_WEBHOOK_POSTMARK_KEY", wp.POSTMARK_KEY)
        monkeypatch.setenv("MAILER_WEBHOOK_SMTP2GO_KEY", wp.SMTP2GO_KEY)
        newsletter_with_a_send(cli, newsletter)
        hook = Hook(newsletter, signer, sendgrid)
        hooks.append(hook)
        return hook

    yield make
    for hook in hooks:
        hook.client.__exit__(None, None, None)


def nobody_changed(hook: Hook) -> None:
    assert [status_of(hook.root, a) for a in PEOPLE] == ["active"] * 3


# -- Amazon SES through SNS --------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_an_ses_bounce_bounces_its_copys_person(
    make_hook: Callable[..., Hook], version: str
) -> None:
    hook = make_hook()
    notification = wp.ses_bounce(AMIRA, hook.message_id(AMIRA))
    body, headers = wp.sns_notification(hook.signer, notification, NOW, version=version)
    r = hook.post("ses", body, headers)
    assert r.status_code == 200, r.text
    assert status_of(hook.root, AMIRA) == "bounced"
    assert status_of(hook.root, BEN) == "active"
    assert hook.signer.fetched == [wp.CERT_URL]
    (event,) = hook.events()
    assert event[:2] == ("hard", True) and event[3] == "webhook ses"
    # SNS delivers at least once: the same notification again changes nothing more.
    again = hook.post("ses", body, headers)
    assert again.status_code == 200 and len(hook.events()) == 1
    # The certificate was fetched once and kept.
    assert hook.signer.fetched == [wp.CERT_URL]


def test_an_ses_complaint_unsubscribes_from_everything(make_hook: Callable[..., Hook]) -> None:
    hook = make_hook()
    notification = wp.ses_complaint(BEN, hook.message_id(BEN))
    r = hook.post("ses", *wp.sns_notification(hook.signer, notification, NOW))
    assert r.status_code == 200
    assert status_of(hook.root, BEN) == "complained"
    assert status_of(hook.root, AMIRA) == "active"


def test_a_forged_sns_message_changes_nobody_and_is_kept(make_hook: Callable[..., Hook]) -> None:
    hook = make_hook()
    body, headers = wp.sns_notification(
        hook.signer, wp.ses_bounce(AMIRA, hook.message_id(AMIRA)), NOW
    )
    message = json.loads(body)
    # The notification swapped for one about someone else, under the same signature.
    message["Message"] = json.dumps(wp.ses_bounce(BEN, hook.message_id(BEN)))
    r = hook.post("ses", json.dumps(message).encode(), headers)
    assert r.status_code == 403
    assert "signature does not match" in r.text
    nobody_changed(hook)
    (event,) = hook.events()
    assert event[0] == "quarantined" and not event[1] and event[2] is None
    assert "signature does not match" in event[4]


def test_a_certificate_elsewhere_than_sns_is_never_fetched(make_hook: Callable[..., Hook]) -> None:
    hook = make_hook()
    body, headers = wp.sns_notification(
        hook.signer, wp.ses_bounce(AMIRA, hook.message_id(AMIRA)), NOW
    )
    for url in (
        "https://sns.eu-west-2.amazonaws.com.evil.example/cert.pem",
        "http://sns.eu-west-2.amazonaws.com/cert.pem",
        "https://attacker@sns.eu-west-2.amazonaws.com/cert.pem",
        "https://evil.example/sns.eu-west-2.amazonaws.com/cert.pem",
    ):
        message = {**json.loads(body), "SigningCertURL": url}
        r = hook.post("ses", json.dumps(message).encode(), headers)
        assert r.status_code == 403, url
    assert hook.signer.fetched == []
    nobody_changed(hook)


def test_a_stale_sns_message_is_refused(make_hook: Callable[..., Hook]) -> None:
    hook = make_hook()
    body, headers = wp.sns_notification(
        hook.signer, wp.ses_bounce(AMIRA, hook.message_id(AMIRA)), NOW - 2 * 86400
    )
    r = hook.post("ses", body, headers)
    assert r.status_code == 403 and "stale" in r.text
    nobody_changed(hook)


def test_the_subscription_is_confirmed_for_the_configured_topic_only(
    make_hook: Callable[..., Hook],
) -> None:
    hook = make_hook()
    body, headers = wp.sns_subscription(hook.signer, NOW)
    r = hook.post("ses", body, headers)
    assert r.status_code == 200
    subscribe = json.loads(body)["SubscribeURL"]
    assert hook.signer.fetched == [wp.CERT_URL, subscribe]
    # Another topic's subscription, or a SubscribeURL elsewhere: nothing is fetched.
    other = "arn:aws:sns:eu-west-2:999999999999:someone-else"
    r = hook.post("ses", *wp.sns_subscription(hook.signer, NOW, topic=other))
    assert r.status_code == 403 and "topic" in r.text
    r = hook.post(
        "ses", *wp.sns_subscription(hook.signer, NOW, subscribe="https://evil.example/confirm")
    )
    assert r.status_code == 403
    assert hook.signer.fetched == [wp.CERT_URL, subscribe]


# -- Mailgun -----------------------------------------------------------------------------------


def test_a_mailgun_failure_bounces_its_copys_person(make_hook: Callable[..., Hook]) -> None:
    hook = make_hook()
    r = hook.post("mailgun", *wp.mailgun(wp.mailgun_failed(AMIRA, hook.message_id(AMIRA)), NOW))
    assert r.status_code == 200, r.text
    assert status_of(hook.root, AMIRA) == "bounced"
    (event,) = hook.events()
    assert event[:2] == ("hard", True)


def test_mailgun_with_a_wrong_key_or_stale_time_changes_nobody(
    make_hook: Callable[..., Hook],
) -> None:
    hook = make_hook()
    failed = wp.mailgun_failed(AMIRA, hook.message_id(AMIRA))
    wrong = hook.post("mailgun", *wp.mailgun(failed, NOW, key="another-key"))
    assert wrong.status_code == 403 and "signature does not match" in wrong.text
    stale = hook.post("mailgun", *wp.mailgun(failed, NOW - 3600, token="t" * 50))
    assert stale.status_code == 403 and "stale" in stale.text
    nobody_changed(hook)
    assert [e[0] for e in hook.events()] == ["quarantined", "quarantined"]


def test_a_mailgun_token_replayed_under_another_body_is_refused(
    make_hook: Callable[..., Hook],
) -> None:
    hook = make_hook()
    body, headers = wp.mailgun(wp.mailgun_failed(AMIRA, hook.message_id(AMIRA)), NOW)
    assert hook.post("mailgun", body, headers).status_code == 200
    # The same request again (Mailgun retries): nothing more is recorded.
    assert hook.post("mailgun", body, headers).status_code == 200
    assert len(hook.events()) == 1
    # The signature object lifted onto an event about Ben: Mailgun signs the token, not the
    # body, so the token's second use is the forgery.
    payload = json.loads(body)
    payload["event-data"] = wp.mailgun_failed(BEN, hook.message_id(BEN), event_id="other")
    r = hook.post("mailgun", json.dumps(payload).encode(), headers)
    assert r.status_code == 403 and "replayed" in r.text
    assert status_of(hook.root, BEN) == "active"
    assert [e[0] for e in hook.events()] == ["hard", "quarantined"]


def test_an_event_for_a_message_mailer_did_not_make_is_kept_unverified(
    make_hook: Callable[..., Hook], cli: Cli
) -> None:
    hook = make_hook()
    forged_id = hook.message_id(AMIRA).replace(".", "9", 1)
    r = hook.post("mailgun", *wp.mailgun(wp.mailgun_failed(AMIRA, forged_id), NOW))
    assert r.status_code == 200
    nobody_changed(hook)
    (event,) = hook.events()
    assert event[:3] == ("hard", False, None)
    listed = ok(cli("bounces", "list", "--unverified")).stdout
    assert "UNVERIFIED" in listed and "from webhook mailgun" in listed


# -- SendGrid ----------------------------------------------------------------------------------


def test_sendgrid_events_bounce_and_complain(make_hook: Callable[..., Hook]) -> None:
    hook = make_hook("sendgrid")
    copy = message_to(hook.root, BEN)
    unique = json.loads(str(copy["X-SMTPAPI"]))["unique_args"]["mailer-id"]
    events = [
        wp.sendgrid_bounce(AMIRA, hook.message_id(AMIRA), NOW),
        wp.sendgrid_spamreport(BEN, unique, NOW),
        {"email": CHLOE, "event": "delivered", "sg_event_id": "d1", "timestamp": int(NOW)},
    ]
    r = hook.post("sendgrid", *hook.sendgrid.post(events, NOW))
    assert r.status_code == 200, r.text
    assert [status_of(hook.root, a) for a in PEOPLE] == ["bounced", "complained", "active"]


def test_a_forged_or_stale_sendgrid_post_changes_nobody(make_hook: Callable[..., Hook]) -> None:
    hook = make_hook()
    events = [wp.sendgrid_bounce(AMIRA, hook.message_id(AMIRA), NOW)]
    body, headers = hook.sendgrid.post(events, NOW)
    forged = body.replace(AMIRA.encode(), BEN.encode())
    assert hook.post("sendgrid", forged, headers).status_code == 403
    other = wp.SendGridSigner()
    assert hook.post("sendgrid", *other.post(events, NOW)).status_code == 403
    stale = hook.sendgrid.post(events, NOW - 3600)
    assert hook.post("sendgrid", *stale).status_code == 403
    nobody_changed(hook)
    # Kept once per body: the same body refused twice is one record.
    assert [e[0] for e in hook.events()] == ["quarantined"] * 2


# -- Postmark and SMTP2GO ----------------------------------------------------------------------


def test_a_postmark_bounce_is_tied_by_the_metadata_mailer_set(
    make_hook: Callable[..., Hook],
) -> None:
    hook = make_hook("postmark")
    relay_id = str(message_to(hook.root, CHLOE)["X-PM-Metadata-mailer-id"])
    assert hook.message_id(CHLOE).startswith(f"<{relay_id}@")
    body = wp.postmark_bounce(CHLOE, relay_id)
    wrong = hook.post("postmark", body, wp.basic("not-the-password"))
    assert wrong.status_code == 403
    assert hook.post("postmark", body, {"content-type": "application/json"}).status_code == 403
    nobody_changed(hook)
    r = hook.post("postmark", body, wp.basic(wp.POSTMARK_KEY))
    assert r.status_code == 200, r.text
    assert status_of(hook.root, CHLOE) == "bounced"
    assert status_of(hook.root, AMIRA) == "active"


def test_an_smtp2go_bounce_with_its_bearer_token(make_hook: Callable[..., Hook]) -> None:
    hook = make_hook("smtp2go")
    body = wp.smtp2go_form(AMIRA, hook.message_id(AMIRA))
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert hook.post("smtp2go", body, form).status_code == 403
    nobody_changed(hook)
    r = hook.post("smtp2go", body, {**form, "authorization": f"Bearer {wp.SMTP2GO_KEY}"})
    assert r.status_code == 200, r.text
    assert status_of(hook.root, AMIRA) == "bounced"


# -- Limits, and what never leaks --------------------------------------------------------------


def test_limits_and_unconfigured_providers(
    make_hook: Callable[..., Hook], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailer")
    hook = make_hook()
    big = b"{" + b" " * webhooks.MAX_BODY + b"}"
    r = hook.post("mailgun", big, {"content-type": "application/json"})
    assert r.status_code == 413
    # Sent in chunks with no length given, it is read up to the limit and no further.
    chunks = iter([b"{"] + [b" " * 65536] * 17 + [b"}"])
    r = hook.client.post(
        "/webhooks/mailgun", content=chunks, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert hook.post("sparkpost", b"{}", {}).status_code == 404
    # A request with the wrong credentials: the answer and the log name no secret.
    r = hook.post("postmark", wp.postmark_bounce(AMIRA, "x"), wp.basic("guess"))
    assert r.status_code == 403
    for secret in (wp.POSTMARK_KEY, wp.MAILGUN_KEY, wp.SMTP2GO_KEY, "guess"):
        assert secret not in r.text and secret not in caplog.text
    # Without its key, a provider has no webhook at all.
    monkeypatch.delenv("MAILER_WEBHOOK_POSTMARK_KEY")
    app = create_app(config.load(hook.root), clock=lambda: NOW)
    with TestClient(app) as client:
        r = client.post("/webhooks/postmark", content=b"{}", headers=wp.basic(wp.POSTMARK_KEY))
        assert r.status_code == 404
    nobody_changed(hook)


@pytest.mark.parametrize(
    ("provider", "value", "says"),
    [
        ("SES", "arn:aws:sqs:eu-west-2:1:oops", "not an SNS topic ARN"),
        ("SENDGRID", "bm90IGEga2V5", "not a base64 DER public key"),
        ("POSTMARK", "hunter2", "shorter than 16 characters"),
    ],
)
def test_a_key_that_cannot_be_right_stops_mailer_serve(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, provider: str, value: str, says: str
) -> None:
    monkeypatch.setenv(f"MAILER_WEBHOOK_{provider}_KEY", value)
    output = fails(
        cli("serve", "--port", str(free_port()), "--rehearsal"),
        f"MAILER_WEBHOOK_{provider}_KEY",
        says,
    )
    assert value not in output and "Traceback" not in output


# -- A real `mailer serve` ---------------------------------------------------------------------


def test_mailer_serve_takes_a_mailgun_complaint(
    cli: Cli, newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILER_WEBHOOK_MAILGUN_KEY", wp.MAILGUN_KEY)
    newsletter_with_a_send(cli, newsletter)
    port = free_port()
    server = start_server(newsletter, port, dict(os.environ))
    try:
        now = time.time()  # mailer serve's own clock: Mailgun's signed time is now
        message_id = str(message_to(newsletter, BEN)["Message-ID"])
        data = {
            "event": "complained",
            "id": "ncV2XwymRUKbPek_MIM-Gw",
            "timestamp": now,
            "recipient": BEN,
            "message": {"headers": {"message-id": message_id.strip("<>")}},
        }
        body, headers = wp.mailgun(data, now)
        url = f"http://127.0.0.1:{port}/webhooks/mailgun"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        assert status_of(newsletter, BEN) == "complained"
        forged = urllib.request.Request(
            url, data=body.replace(BEN.encode(), AMIRA.encode()), headers=headers, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=30)
        assert refused.value.code == 403
        refused.value.close()
        assert status_of(newsletter, AMIRA) == "active"
    finally:
        stop_server(server)
