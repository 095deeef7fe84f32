"""The two emails the web side sends one person at a time: "confirm your sign-up" and
"here is the link to your preferences".

The web side queues them (:mod:`.outgoing`) and a background sender delivers them
(:mod:`.posting`); :func:`send` delivers one at once, for commands. They go through the
configured transport (the outbox by default, into ``outbox/_web/``)
and are DKIM-signed like the newsletter when DKIM is configured. Each is plain text: it
carries one link and must read well in every mail program and screen reader.
"""

from __future__ import annotations

import logging
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate, make_msgid

from mailer.config import Settings
from mailer.errors import SendError
from mailer.sending import transports
from mailer.sending.message import DkimSigner

log = logging.getLogger("mailer.web")
# The outbox folder of these emails: not an issue slug (those never start with "_").
OUTBOX_FOLDER = "_web"


def message(settings: Settings, to: str, subject: str, text: str) -> bytes:
    sender = settings.sender
    message = EmailMessage(policy=SMTP)
    message["From"] = formataddr((sender.from_name, sender.from_address))
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.domain)
    if sender.reply_to:
        message["Reply-To"] = sender.reply_to
    # Mail programs must not auto-reply to these, nor treat them as bulk.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text, cte="quoted-printable")
    return message.as_bytes()


def send(settings: Settings, to: str, subject: str, text: str, *, about: str) -> bool:
    """Deliver one notice; False (logged, without the address) if the transport failed.

    ``about`` names the sign-up or subscriber by id, for the log.
    """
    data = message(settings, to, subject, text)
    try:
        signer = DkimSigner.from_environment()
        if signer is not None:
            data = signer.sign(data)
        open_transport = transports.factory(settings, OUTBOX_FOLDER)
        with open_transport() as transport:
            transport.open()
            transport.send(settings.sender.from_address, to, data)
    except SendError as exc:
        log.error("could not send %r for %s: %s", subject, about, exc)
        return False
    log.info("sent %r for %s", subject, about)
    return True


def confirmation_text(settings: Settings, link: str, lists: list[str], days: int) -> str:
    names = "\n".join(f"  - {name}" for name in lists)
    return (
        f"Someone, probably you, asked to receive {settings.name} from "
        f"{settings.organisation} at this address, on:\n\n{names}\n\n"
        f"To confirm, open this link and press the button on the page:\n\n{link}\n\n"
        f"The link works for {days} days. If you did not ask for this, ignore this email: "
        "you will not be subscribed and nothing more will be sent.\n\n"
        f"{settings.footer.postal_address}\n"
    )


def preferences_text(settings: Settings, link: str, hours: int) -> str:
    return (
        f"Someone, probably you, asked for a link to manage your subscription to "
        f"{settings.name}.\n\n"
        f"Open this link to choose your lists, change your details, unsubscribe, or see "
        f"what {settings.organisation} holds about you:\n\n{link}\n\n"
        f"The link works for {hours} hours. Keep it to yourself: anyone with the link can "
        "change your subscription. If you did not ask for it, you can ignore this email.\n\n"
        f"{settings.footer.postal_address}\n"
    )
