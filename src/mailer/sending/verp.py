"""The envelope sender of each message: a return path that names its ledger row (VERP).

With ``[bounces] domain`` set, a copy goes out with the envelope sender
``bounces+412.k3v...@bounces.example.org``: the token is the id of its ``delivery`` row
and an HMAC of it (purpose ``bounce``), so any bounce that reaches that address says which
send and which person it is about, even when it quotes nothing of the original, and nobody
can forge a bounce for someone else. The ``From``, ``Reply-To`` and ``List-Unsubscribe``
headers do not change. Without a bounce domain the From address is the envelope sender.
"""

from __future__ import annotations

import re

from mailer import tokens
from mailer.config import Settings
from mailer.errors import BadToken

PURPOSE = "bounce"
_TOKEN = re.compile(r"^[0-9]{1,18}\.[a-z2-7]{13}$")


def envelope_sender(settings: Settings, delivery_id: int | None) -> str:
    """The MAIL FROM address for one ledger row (the From address when VERP is off)."""
    b = settings.bounces
    if not b.domain or not delivery_id:
        return settings.sender.from_address
    token = tokens.make_for_address(settings.require_secret_key(), PURPOSE, delivery_id)
    return f"{b.local_part}+{token}@{b.domain}"


def delivery_of(settings: Settings, address: str) -> int | None:
    """The ledger row a VERP address names, or None if it is not one of ours or was forged."""
    b = settings.bounces
    local, _, domain = address.strip().strip("<>").rpartition("@")
    prefix = f"{b.local_part}+"
    if not b.domain or domain.lower() != b.domain or not local.lower().startswith(prefix):
        return None
    token = local[len(prefix) :].lower()
    if not _TOKEN.match(token):
        return None
    try:
        (delivery_id,) = tokens.read_for_address(settings.require_secret_key(), PURPOSE, token)
    except (BadToken, ValueError):
        return None
    return delivery_id
