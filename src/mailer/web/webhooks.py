"""``POST /webhooks/<provider>``: the relays' bounce and complaint events.

Each provider's requests are checked as it documents (:mod:`mailer.bounces.signatures`)
with its key from ``MAILER_WEBHOOK_<PROVIDER>_KEY``; a provider without one has no webhook
(404). A request that fails its check answers 403, changes nobody, and is kept for the
operator as a quarantined event (:func:`mailer.bounces.events.refuse`). One that passes
is read by the provider's parser and applied as a mailed report would be
(:func:`mailer.bounces.events.apply`): only an event that quotes a Message-ID mailer
made changes its copy's person.

The body is read up to :data:`MAX_BODY` and no further; the work runs on a thread, so the
event loop keeps answering. Nothing here logs or answers with a key or a body.

For SES the key is the ARN of the SNS topic (or several, separated by commas): a
subscription is confirmed, and a notification accepted, only for those topics.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from mailer import urls
from mailer.bounces import events, signatures
from mailer.bounces.events import PROVIDERS
from mailer.errors import ConfigError, WebhookRefused
from mailer.store import webhook_nonces as nonces
from mailer.store.webhook_nonces import Seen
from mailer.web.render import Site

log = logging.getLogger("mailer.web")
# SNS sends messages of up to 256 KB, SendGrid batches of events; nothing needs more.
MAX_BODY = 1024 * 1024
PATH_PREFIX = urls.WEBHOOK_PATH.partition("{")[0]
# Tests put a fetcher here (``app.state.sns_fetch``) that serves their own certificates.
FETCH_STATE = "sns_fetch"
# The keys, read from the environment when the app is made (``create_app``), and the
# receiver made from them on first use.
KEYS_STATE = "webhook_keys"
RECEIVER_STATE = "webhook_receiver"


# An SNS topic's ARN: arn:aws:sns:REGION:ACCOUNT:NAME.
_TOPIC = re.compile(r"arn:aws(-[a-z]+)?:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}")
# Credentials mailer checks itself (Postmark's, SMTP2GO's) must not be guessable.
MIN_CREDENTIALS = 16


def keys_from(env: Mapping[str, str]) -> dict[str, str]:
    """The providers whose key is set, and the key; ConfigError (naming the variable and
    the fix, never the value) for a key that cannot be right."""
    found = {}
    for provider in PROVIDERS:
        name = f"MAILER_WEBHOOK_{provider.upper()}_KEY"
        value = env.get(name, "").strip()
        if not value:
            continue
        if provider == "ses" and not all(_TOPIC.fullmatch(t.strip()) for t in value.split(",")):
            raise ConfigError(
                f"{name}: not an SNS topic ARN; set it to the topic's ARN, such as "
                "arn:aws:sns:eu-west-2:123456789012:newsletter-bounces"
            )
        if provider == "sendgrid":
            try:
                signatures.sendgrid_key(value)
            except WebhookRefused as exc:
                raise ConfigError(
                    f"{name}: {exc}; copy the verification key again from SendGrid's "
                    "Event Webhook settings (Signed Event Webhook)"
                ) from exc
        if provider in ("postmark", "smtp2go") and len(value) < MIN_CREDENTIALS:
            raise ConfigError(
                f"{name}: shorter than {MIN_CREDENTIALS} characters; use a long random "
                "password (python3 -c 'import secrets; print(secrets.token_urlsafe(24))') "
                "and give the same to the service"
            )
        found[provider] = value
    return found


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookRefused("the body is not JSON") from exc


async def read_body(request: Request) -> bytes | None:
    """The body, or None once it grows past MAX_BODY (the rest is never read)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return bytes(body)


class Receiver:
    """Checks one request and applies its events; run on a worker thread."""

    def __init__(self, site: Site, keys: dict[str, str], fetch: signatures.Fetch) -> None:
        self.site, self.keys = site, keys
        self.certificates = signatures.SnsCertificates(fetch)
        self.fetch = fetch
        sendgrid = keys.get("sendgrid")
        self.sendgrid = signatures.sendgrid_key(sendgrid) if sendgrid else None

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.site.clock(), dt.UTC)

    def handle(self, provider: str, body: bytes, headers: Mapping[str, str]) -> str:
        """What was done, in a few words; WebhookRefused if the request fails its check."""
        key = self.keys[provider]
        settings, db = self.site.settings, self.site.db
        if provider == "ses":
            return self._sns(key, body)
        if provider == "mailgun":
            payload = _json(body)
            if not isinstance(payload, dict):
                raise WebhookRefused("the Mailgun body is not an object")
            token = signatures.verify_mailgun(key, payload.get("signature"), self.now())
            self._bind(provider, token, body)
        elif provider == "sendgrid":
            assert self.sendgrid is not None  # read with the key, in keys_from
            signatures.verify_sendgrid(
                self.sendgrid,
                headers.get("x-twilio-email-event-webhook-signature", ""),
                headers.get("x-twilio-email-event-webhook-timestamp", ""),
                body,
                self.now(),
            )
            payload = _json(body)
        else:
            bearer = provider == "smtp2go"
            signatures.verify_credentials(key, headers.get("authorization", ""), bearer=bearer)
            if provider == "smtp2go" and not body.lstrip().startswith(b"{"):
                payload = dict(parse_qsl(body.decode("utf-8", "replace"), max_num_fields=200))
            else:
                payload = _json(body)
        if provider != "sendgrid" and not isinstance(payload, dict):
            raise WebhookRefused("the body is not a JSON object")
        outcome = events.apply(settings, db, provider, events.PARSERS[provider](payload))
        return f"{outcome.new} new of {outcome.events}"

    def _bind(self, provider: str, nonce: str, body: bytes) -> None:
        """Tie a one-time token to this body. Mailgun signs the token, not the body: the
        same body again is a retry (its events are recorded once, by their ids), another
        body under a token seen before is a forgery."""
        with self.site.db.session(write=True) as session:
            seen = nonces.remember(session, provider, nonce, _digest(body), self.now())
        if seen == Seen.OTHER:
            raise WebhookRefused("its one-time token was used before: a replayed request")

    def _sns(self, topics: str, body: bytes) -> str:
        message = _json(body)
        if not isinstance(message, dict):
            raise WebhookRefused("the SNS body is not an object")
        # Checked first, so a message for another topic fetches no certificate.
        topic = str(message.get("TopicArn", ""))
        if topic not in [t.strip() for t in topics.split(",")]:
            raise WebhookRefused("the SNS topic is not the one MAILER_WEBHOOK_SES_KEY names")
        # The signature covers the MessageId and the Message, so a replay can only repeat a
        # notification, whose events are recorded once, by their feedback ids.
        signatures.verify_sns(message, self.certificates, self.now())
        kind = message.get("Type")
        if kind == "SubscriptionConfirmation":
            url = str(message.get("SubscribeURL", ""))
            if not signatures.sns_url_ok(url):
                raise WebhookRefused("the SubscribeURL is not on an SNS host")
            self.fetch(url)
            log.info("webhook ses: subscribed to the SNS topic")
            return "subscribed"
        if kind == "UnsubscribeConfirmation":
            log.warning("webhook ses: the SNS topic unsubscribed this webhook")
            return "unsubscribed"
        notification = _json(str(message.get("Message", "")).encode())
        if not isinstance(notification, dict):
            raise WebhookRefused("the SNS notification is not an SES notification")
        found = events.ses_events(notification)
        outcome = events.apply(self.site.settings, self.site.db, "ses", found)
        return f"{outcome.new} new of {outcome.events}"


router = APIRouter()


async def receiver(request: Request) -> Receiver:
    """The app's receiver, made on first use with the keys read when the app was made."""
    state = request.app.state
    found: Receiver | None = getattr(state, RECEIVER_STATE, None)
    if found is None:
        fetch = getattr(state, FETCH_STATE, None) or signatures.fetch_https
        found = Receiver(state.site, getattr(state, KEYS_STATE), fetch)
        setattr(state, RECEIVER_STATE, found)
    return found


@router.post(urls.WEBHOOK_PATH)
async def webhook(
    provider: str, request: Request, handler: Annotated[Receiver, Depends(receiver)]
) -> Response:
    if provider not in handler.keys:
        return PlainTextResponse("No webhook here.\n", status_code=404)
    body = await read_body(request)
    if body is None:
        return PlainTextResponse("Request too large.\n", status_code=413)
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        done = await run_in_threadpool(handler.handle, provider, body, headers)
    except WebhookRefused as exc:
        if exc.retry:
            log.warning("webhook %s: %s", provider, exc)
            return PlainTextResponse("Try again later.\n", status_code=503)
        await run_in_threadpool(events.refuse, handler.site.db, provider, str(exc), body)
        return PlainTextResponse(f"Refused: {exc}.\n", status_code=403)
    return PlainTextResponse(f"OK: {done}.\n")
