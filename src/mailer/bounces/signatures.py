"""Whether a request at a relay's webhook comes from the relay, checked as each documents.

- Amazon SES, through SNS: the message is signed with RSA (``SignatureVersion`` 1, SHA-1;
  2, SHA-256) by a certificate fetched from ``https://sns.<region>.amazonaws.com/``. The
  URL's host is checked by pattern before anything is fetched, and each certificate is kept
  once fetched (:class:`SnsCertificates`). The fetcher is injectable: tests serve a
  certificate of their own test authority in its place.
- Mailgun: an HMAC-SHA256 of the timestamp and a token with the webhook signing key; the
  token is single-use (the caller remembers it, :mod:`mailer.store.webhook_nonces`).
- SendGrid: an ECDSA P-256 signature over the timestamp and the body, by the public key
  the operator copies from SendGrid (base64 DER).
- Postmark and SMTP2GO: the credentials the relay was given, by HTTP Basic auth (any user
  name, the key as password) or, for SMTP2GO, a bearer token; compared in constant time.

Signed times must be within :data:`WINDOW` of now (:data:`SNS_WINDOW` for SNS, which
retries for longer). Every failure raises :class:`~mailer.errors.WebhookRefused` with a
reason that names no secret.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from mailer.errors import WebhookRefused

# How far a signed time may be from now, either way.
WINDOW = dt.timedelta(minutes=15)
SNS_WINDOW = dt.timedelta(days=1)
# The only hosts a signing certificate or a subscription is fetched from.
SNS_HOST = re.compile(r"sns\.[a-z0-9-]{1,30}\.amazonaws\.com(\.cn)?")
# The fields an SNS signature covers, in order, for each type of message.
SNS_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
SNS_FIELDS["UnsubscribeConfirmation"] = SNS_FIELDS["SubscriptionConfirmation"]
# A certificate is a few kilobytes; nothing larger is read.
MAX_CERTIFICATE = 64 * 1024
# Fetches a URL (always https, on a checked host) and returns its body.
Fetch = Callable[[str], bytes]


def sns_url_ok(url: str) -> bool:
    """Whether ``url`` is an https URL on an SNS host (nothing else is ever fetched)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and port in (None, 443)
        and "@" not in parts.netloc
        and SNS_HOST.fullmatch(parts.hostname or "") is not None
    )


def fetch_https(url: str) -> bytes:
    """The fetcher ``mailer serve`` uses: a GET over verified TLS, no redirects, 5 s."""
    import httpx

    try:
        with (
            httpx.Client(timeout=5, follow_redirects=False) as client,
            client.stream("GET", url) as response,
        ):
            response.raise_for_status()
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_CERTIFICATE:
                    raise WebhookRefused("the SNS answer is too large")
            return body
    except httpx.HTTPError as exc:
        why = f"SNS could not be reached ({type(exc).__name__})"
        raise WebhookRefused(why, retry=True) from exc


class SnsCertificates:
    """SNS signing certificates, fetched once per URL and kept (a few at most)."""

    def __init__(self, fetch: Fetch, size: int = 16) -> None:
        self.fetch, self.size = fetch, size
        self._keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._lock = threading.Lock()

    def public_key(self, url: str, now: dt.datetime) -> rsa.RSAPublicKey:
        if not sns_url_ok(url) or not url.endswith(".pem"):
            raise WebhookRefused("the signing certificate is not on an SNS host")
        with self._lock:
            if url in self._keys:
                return self._keys[url]
        try:
            certificate = x509.load_pem_x509_certificate(self.fetch(url))
        except ValueError as exc:
            raise WebhookRefused("the signing certificate cannot be read") from exc
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise WebhookRefused("the signing certificate has expired or is not yet valid")
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookRefused("the signing certificate's key is not RSA")
        with self._lock:
            self._keys[url] = key
            while len(self._keys) > self.size:
                self._keys.popitem(last=False)
        return key


def _text(message: Mapping[str, Any], name: str) -> str:
    value = message.get(name, "")
    if not isinstance(value, str):
        raise WebhookRefused(f"the SNS message's {name} is not text")
    return value


def sns_string_to_sign(message: Mapping[str, Any]) -> bytes:
    """What an SNS signature covers: each field present, as name and value lines."""
    fields = SNS_FIELDS.get(_text(message, "Type"))
    if fields is None:
        raise WebhookRefused("the SNS message's Type is not one mailer knows")
    lines = []
    for name in fields:
        if name in message:
            lines += [name, _text(message, name)]
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def _when(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise WebhookRefused("the signed time cannot be read") from exc
    if moment.tzinfo is None:
        raise WebhookRefused("the signed time has no time zone")
    return moment


def within(moment: dt.datetime, now: dt.datetime, window: dt.timedelta) -> None:
    if abs(now - moment) > window:
        raise WebhookRefused("the signed time is too far from now: a stale or replayed request")


def verify_sns(message: Mapping[str, Any], certificates: SnsCertificates, now: dt.datetime) -> None:
    """Check an SNS message's signature and time; raise WebhookRefused if either is wrong."""
    version = _text(message, "SignatureVersion")
    algorithm: hashes.HashAlgorithm
    if version == "1":
        algorithm = hashes.SHA1()  # SNS's signature version 1 is SHA1withRSA
    elif version == "2":
        algorithm = hashes.SHA256()
    else:
        raise WebhookRefused("the SNS SignatureVersion is not 1 or 2")
    data = sns_string_to_sign(message)
    within(_when(_text(message, "Timestamp")), now, SNS_WINDOW)
    try:
        signature = base64.b64decode(_text(message, "Signature"), validate=True)
    except binascii.Error as exc:
        raise WebhookRefused("the SNS signature is not base64") from exc
    key = certificates.public_key(_text(message, "SigningCertURL"), now)
    try:
        key.verify(signature, data, padding.PKCS1v15(), algorithm)
    except InvalidSignature as exc:
        raise WebhookRefused("the SNS signature does not match") from exc


def verify_mailgun(key: str, signature: Any, now: dt.datetime) -> str:
    """Check Mailgun's ``signature`` object; its token (to be remembered) if it is right."""
    if not isinstance(signature, dict):
        raise WebhookRefused("the Mailgun request has no signature")
    timestamp, token, given = (
        str(signature.get(name, "")) for name in ("timestamp", "token", "signature")
    )
    if not timestamp.isdigit() or not token or not given:
        raise WebhookRefused("the Mailgun signature is incomplete")
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given.lower()):
        raise WebhookRefused("the Mailgun signature does not match")
    within(dt.datetime.fromtimestamp(int(timestamp[:12]), dt.UTC), now, WINDOW)
    return token


def sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key SendGrid shows (base64 DER), read once."""
    try:
        key = serialization.load_der_public_key(base64.b64decode(text.strip(), validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise WebhookRefused("not a base64 DER public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise WebhookRefused("not an ECDSA public key")
    return key


def verify_sendgrid(
    key: ec.EllipticCurvePublicKey,
    signature: str,
    timestamp: str,
    body: bytes,
    now: dt.datetime,
) -> None:
    """Check SendGrid's signed event webhook: ECDSA over the timestamp and the raw body."""
    if not signature or not timestamp.isdigit():
        raise WebhookRefused("the SendGrid request is not signed")
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, InvalidSignature) as exc:
        raise WebhookRefused("the SendGrid signature does not match") from exc
    within(dt.datetime.fromtimestamp(int(timestamp[:12]), dt.UTC), now, WINDOW)


def verify_credentials(key: str, authorization: str, *, bearer: bool = False) -> None:
    """Check HTTP Basic credentials (any user name, ``key`` as the password) or, when
    ``bearer``, a bearer token; in constant time."""
    scheme, _, value = authorization.strip().partition(" ")
    given = ""
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        given = decoded.partition(":")[2]
    elif bearer and scheme.lower() == "bearer":
        given = value.strip()
    if not hmac.compare_digest(given.encode(), key.encode()) or not given:
        raise WebhookRefused("the credentials are missing or wrong")
