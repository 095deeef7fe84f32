"""Relays' webhook requests in each provider's documented format, signed with test keys.

Written from the providers' documentation: Amazon SES notifications delivered by SNS (the
SNS message and its signature, versions 1 and 2), Mailgun's webhook with its signature
object, SendGrid's signed event webhook, Postmark's bounce and spam complaint webhooks,
SMTP2GO's webhook (JSON or form-encoded). Each function returns the body and the headers
to post; the keys are made here, for tests only.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlencode

import trustme
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

REGION = "eu-west-2"
TOPIC = f"arn:aws:sns:{REGION}:123456789012:mailer-bounces"
CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
MAILGUN_KEY = "test-mailgun-signing-key-0123456789"
POSTMARK_KEY = "test-postmark-password"
SMTP2GO_KEY = "test-smtp2go-token"
Headers = dict[str, str]
SG_MESSAGE_ID = "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0"


def iso(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class SnsSigner:
    """A signing certificate for SNS, issued by a test authority, and what serves it."""

    def __init__(self, now: float) -> None:
        ca = trustme.CA(key_type=trustme.KeyType.RSA)
        start = dt.datetime.fromtimestamp(now, dt.UTC)
        leaf = ca.issue_cert(
            f"sns.{REGION}.amazonaws.com",
            not_before=start - dt.timedelta(days=1),
            not_after=start + dt.timedelta(days=365),
            key_type=trustme.KeyType.RSA,
        )
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self.key = key
        self.pem = leaf.cert_chain_pems[0].bytes()
        self.fetched: list[str] = []

    def fetch(self, url: str) -> bytes:
        """The far side of the network: the certificate at CERT_URL, a subscription's
        confirmation anywhere else."""
        self.fetched.append(url)
        return self.pem if url == CERT_URL else b"<ConfirmSubscriptionResponse/>"

    def sign(self, message: dict[str, str], version: str = "1") -> dict[str, str]:
        fields = ["Message", "MessageId", "Subject", "SubscribeURL", "Timestamp", "Token"]
        fields += ["TopicArn", "Type"]
        if message["Type"] == "Notification":
            fields.remove("SubscribeURL")
            fields.remove("Token")
        else:
            fields.remove("Subject")
        text = "".join(f"{name}\n{message[name]}\n" for name in fields if name in message)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), algorithm)
        return {
            **message,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": CERT_URL,
        }


def ses_bounce(address: str, message_id: str, feedback: str = "fb-1") -> dict[str, Any]:
    """An SES bounce notification with the original headers, as SES documents it."""
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": address,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": f"smtp; 550 5.1.1 <{address}>... User unknown",
                }
            ],
            "timestamp": "2027-01-15T08:00:00.000Z",
            "feedbackId": feedback,
            "reportingMTA": "dns; email.example.org",
        },
        "mail": {
            "timestamp": "2027-01-15T07:59:58.000Z",
            "source": "news@example.org",
            "messageId": "0100018c-ses-own-id-000000",
            "destination": [address],
            "headersTruncated": False,
            "headers": [{"name": "Message-ID", "value": message_id}],
            "commonHeaders": {"messageId": message_id, "to": [address]},
        },
    }


def ses_complaint(address: str, message_id: str, feedback: str = "fb-2") -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": address}],
            "timestamp": "2027-01-15T08:00:00.000Z",
            "feedbackId": feedback,
            "complaintFeedbackType": "abuse",
            "userAgent": "ExampleCorp Feedback Loop (V0.01)",
        },
        "mail": {
            "messageId": "0100018c-ses-own-id-000001",
            "commonHeaders": {"messageId": message_id},
        },
    }


def sns_notification(
    signer: SnsSigner, notification: dict[str, Any], now: float, *, version: str = "1"
) -> tuple[bytes, Headers]:
    message = signer.sign(
        {
            "Type": "Notification",
            "MessageId": f"sns-{hashlib.sha256(json.dumps(notification).encode()).hexdigest()}",
            "TopicArn": TOPIC,
            "Message": json.dumps(notification),
            "Timestamp": iso(now),
        },
        version,
    )
    return json.dumps(message).encode(), {"x-amz-sns-message-type": "Notification"}


def sns_subscription(
    signer: SnsSigner, now: float, *, topic: str = TOPIC, subscribe: str | None = None
) -> tuple[bytes, Headers]:
    url = subscribe or (
        f"https://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}"
        "&Token=2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a7"
    )
    message = signer.sign(
        {
            "Type": "SubscriptionConfirmation",
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a7",
            "TopicArn": topic,
            "Message": f"You have chosen to subscribe to the topic {topic}.",
            "SubscribeURL": url,
            "Timestamp": iso(now),
        }
    )
    return json.dumps(message).encode(), {"x-amz-sns-message-type": "SubscriptionConfirmation"}


def mailgun(
    event_data: dict[str, Any],
    now: float,
    *,
    key: str = MAILGUN_KEY,
    token: str = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0",
) -> tuple[bytes, Headers]:
    timestamp = str(int(now))
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    body = {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": event_data,
    }
    return json.dumps(body).encode(), {"content-type": "application/json"}


def mailgun_failed(
    address: str, message_id: str, event_id: str = "CPgfbmQMTCKtHW6uIWtuVe"
) -> dict[str, Any]:
    """A permanent failure, as Mailgun's webhook documents it (message-id without <>)."""
    return {
        "event": "failed",
        "id": event_id,
        "timestamp": 1800000000.0,
        "severity": "permanent",
        "reason": "bounce",
        "recipient": address,
        "log-level": "error",
        "delivery-status": {
            "attempt-no": 1,
            "code": 550,
            "message": "5.1.1 The email account that you tried to reach does not exist",
            "description": "",
        },
        "message": {"headers": {"to": address, "message-id": message_id.strip("<>")}},
        "user-variables": {},
    }


class SendGridSigner:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public = base64.b64encode(der).decode()

    def post(self, events: list[dict[str, Any]], now: float) -> tuple[bytes, Headers]:
        body = json.dumps(events).encode()
        timestamp = str(int(now))
        signature = self.key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return body, {
            "content-type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }


def sendgrid_bounce(address: str, message_id: str, now: float) -> dict[str, Any]:
    return {
        "email": address,
        "timestamp": int(now),
        "smtp-id": message_id,
        "event": "bounce",
        "type": "bounce",
        "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
        "sg_message_id": SG_MESSAGE_ID,
        "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
        "status": "5.1.1",
    }


def sendgrid_spamreport(address: str, relay_id: str, now: float) -> dict[str, Any]:
    """A spam report: SendGrid documents no smtp-id on it, only the unique arguments."""
    return {
        "email": address,
        "timestamp": int(now),
        "event": "spamreport",
        "sg_event_id": "c3BhbXJlcG9ydC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9B",
        "sg_message_id": SG_MESSAGE_ID,
        "mailer-id": relay_id,
    }


def basic(password: str, user: str = "mailer") -> Headers:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}", "content-type": "application/json"}


def postmark_bounce(address: str, relay_id: str, kind: str = "HardBounce") -> bytes:
    return json.dumps(
        {
            "RecordType": "Bounce",
            "MessageStream": "broadcast",
            "ID": 4323372036854775807,
            "Type": kind,
            "TypeCode": 1,
            "Name": "Hard bounce",
            "Tag": "",
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "Metadata": {"mailer-id": relay_id},
            "ServerID": 23,
            "Description": "The server was unable to deliver your message (ex: unknown user).",
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            "Email": address,
            "From": "news@example.org",
            "BouncedAt": "2027-01-15T08:00:00Z",
            "DumpAvailable": False,
            "Inactive": True,
            "CanActivate": True,
            "Subject": "The newsletter",
        }
    ).encode()


def smtp2go_form(address: str, message_id: str, event: str = "bounce") -> bytes:
    """SMTP2GO's form-encoded output, with Message-Id listed among the webhook's headers."""
    return urlencode(
        {
            "event": event,
            "time": "2027-01-15T08:00:00Z",
            "sendtime": "2027-01-15T07:59:58Z",
            "sender": "bounces@example.org",
            "rcpt": address,
            "email_id": "1qVyMz-4Ng2Ko-6H",
            "bounce": "hard",
            "host": "mx.example.org [192.0.2.1]",
            "message": "550 5.1.1 <user> User unknown",
            "Message-Id": message_id,
        }
    ).encode()
