"""Relay profiles: the settings a mail service needs, so that ``[transport] profile =
"microsoft365"`` is all a folder says about its host, port, security and limits.

Explicit settings (in ``mailer.toml`` or the environment) override a profile's. The limits
are each service's documented defaults for an account of the kind a partnership has; an
account with other limits sets ``rate_per_minute``, ``rate_per_day`` and the others
itself. docs/mail-services.md has a page per service: what to set up on its side, and
where these figures come from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """What a relay profile sets; None leaves the setting at mailer's own default."""

    name: str
    title: str
    host: str | None = None
    port: int | None = None
    security: str | None = None
    connections: int | None = None
    rate_per_second: float | None = None
    rate_per_minute: int | None = None
    rate_per_hour: int | None = None
    # Recipients a day (one copy is one recipient).
    rate_per_day: int | None = None
    # The login that goes with the service, when it is fixed (SendGrid's is "apikey").
    username: str | None = None
    auth: str | None = None


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        # Exchange Online: 30 messages a minute and 10,000 recipients a day per mailbox;
        # SMTP AUTH with a password is being switched off, so OAuth 2.0 is the default.
        Profile(
            "microsoft365",
            "Microsoft 365 (Exchange Online)",
            host="smtp.office365.com",
            port=587,
            security="starttls",
            connections=2,
            rate_per_minute=30,
            rate_per_day=10_000,
            auth="oauth2",
        ),
        # Amazon SES out of the sandbox: 14 messages a second, 50,000 a day by default (the
        # account's own quota is on the SES console). London is the default region.
        Profile(
            "ses",
            "Amazon SES",
            host="email-smtp.eu-west-2.amazonaws.com",
            port=587,
            security="starttls",
            rate_per_second=14,
            rate_per_day=50_000,
        ),
        # Mailgun, Postmark, SendGrid and SMTP2GO limit by plan, not by a fixed rate.
        Profile("mailgun", "Mailgun", host="smtp.mailgun.org", port=587, security="starttls"),
        Profile(
            "postmark",
            "Postmark (broadcast stream)",
            host="smtp-broadcasts.postmarkapp.com",
            port=587,
            security="starttls",
        ),
        Profile(
            "sendgrid",
            "Twilio SendGrid",
            host="smtp.sendgrid.net",
            port=587,
            security="starttls",
            username="apikey",
        ),
        Profile("smtp2go", "SMTP2GO", host="mail.smtp2go.com", port=587, security="starttls"),
        Profile("generic", "any other SMTP server"),
    )
}
