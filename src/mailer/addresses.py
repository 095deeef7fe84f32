"""Email addresses as people type them: validated and normalised, and names cleaned.

Addresses are validated with email-validator without DNS (so it works offline) and
normalised: trimmed, a ``mailto:`` or ``Name <...>`` wrapper removed, the domain in its
IDNA-decoded form, and the whole address lower-cased. Mail systems treat the part before
the @ without regard to case, and two spellings of one address would send one person two
copies, so mailer stores one spelling.
"""

from __future__ import annotations

import re

import email_validator

from mailer.errors import InvalidInput

# Spaces that spreadsheets and copy-paste leave around addresses, including no-break and
# zero-width ones that str.strip() alone does not remove.
_JUNK = ' \t\r\n\u00a0\u200b\u200c\u200d\u2060\ufeff"'

# The everyday shape of an address, for which email-validator's verdict is known in advance
# (valid, normalised by lower-casing). email-validator takes about 0.1 ms per address, so
# checking this shape first saves some ten seconds on a 100,000-row import; anything else
# goes to email-validator. tests/test_subscribers_addresses.py checks on thousands of
# damaged addresses that mailer decides exactly as email-validator does.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_EVERYDAY = re.compile(
    rf"[a-z0-9_'+-]{{1,64}}(?:\.[a-z0-9_'+-]{{1,64}})*@(?:{_LABEL}\.)+[a-z]{{2,63}}",
    re.IGNORECASE,
)
_SPECIAL = tuple("." + d for d in email_validator.SPECIAL_USE_DOMAIN_NAMES)


def _everyday(address: str) -> bool:
    if len(address) > 254 or not _EVERYDAY.fullmatch(address):
        return False
    local, _, domain = address.rpartition("@")
    return len(local) <= 64 and "--" not in domain and not ("." + domain.lower()).endswith(_SPECIAL)


# ``Name <address>`` as Outlook and other mail programs copy it: the name may hold any
# letters (Zoë, Siân) and commas in quotes, and a pasted list leaves a ``;`` or ``,`` after.
_NAMED = re.compile(r"(?P<name>[^<>]*?)\s*<\s*(?P<address>[^<>\s]+)\s*>[\s;,]*")


def mentions_address(text: str) -> bool:
    """Whether ``text`` holds something shaped like an everyday address."""
    return _EVERYDAY.search(text) is not None


def parse_address(raw: str) -> tuple[str, str]:
    """The normalised address in ``raw`` and any display name given with it.

    Raises :class:`InvalidInput` saying what is wrong, in email-validator's words.
    """
    named = _NAMED.fullmatch(raw.strip(_JUNK.replace('"', "")))
    if named:
        try:
            address, _ = parse_address(named["address"])
        except InvalidInput as exc:
            raise InvalidInput(f"{raw.strip()!r}: {exc}") from None
        return address, named["name"].strip(_JUNK + "'").strip()
    text = raw.strip(_JUNK + ";,")
    if text.lower().startswith("mailto:"):
        text = text[7:].strip(_JUNK)
    if not text:
        raise InvalidInput("no email address")
    if _everyday(text):
        return text.lower(), ""
    try:
        valid = email_validator.validate_email(
            text, check_deliverability=False, allow_display_name=True
        )
    except email_validator.EmailNotValidError as exc:
        raise InvalidInput(f"{raw.strip()!r} is not a valid email address ({exc})") from None
    return valid.normalized.lower(), (valid.display_name or "").strip()


def ascii_address(address: str) -> str | None:
    """The address with its domain in ASCII (IDNA, ``jo@xn--mnchen-3ya.de``), which any mail
    server takes; None when the part before the @ is not ASCII, which only a server with
    SMTPUTF8 (RFC 6531) can deliver to. An address that is ASCII already comes back as it is.
    """
    if address.isascii():
        return address
    local, _, _domain = address.rpartition("@")
    if not local.isascii():
        return None
    try:
        valid = email_validator.validate_email(address, check_deliverability=False)
    except email_validator.EmailNotValidError:
        return None
    return valid.ascii_email


def normalise(raw: str) -> str:
    """The normalised form of one email address, or :class:`InvalidInput`."""
    return parse_address(raw)[0]


# Control characters (ESC, NUL, BEL...) would reach terminals and the To: header.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def has_controls(value: str) -> bool:
    """Whether a name holds a control character other than a tab or line break."""
    return bool(CONTROL.search(value.replace("\t", " ").replace("\r", " ").replace("\n", " ")))


def clean_text(value: str, limit: int = 200) -> str:
    """A name or organisation with control characters and stray spaces removed, cut to the
    column's length."""
    return " ".join(CONTROL.sub(" ", value).split())[:limit]


def mask(email: str) -> str:
    """An address partly hidden, for pages a forwarded link may show: ``am•••a@example.org``.

    Enough for its owner to recognise it, not enough for a stranger to read it.
    """
    local, _, domain = email.rpartition("@")
    shown = local[:1] + "•••" if len(local) <= 2 else local[:2] + "•••" + local[-1]
    return f"{shown}@{domain}"


# Domains whose mailboxes ignore dots before the @, and the one name they all deliver to.
_DOTLESS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def mailbox(address: str) -> str:
    """The mailbox an address delivers to, as far as anyone outside can tell: lower-case,
    without a ``+tag``, and at Gmail without dots and with googlemail.com as gmail.com.

    Limits are keyed on this, so ``v.ictim+1@googlemail.com`` and ``victim@gmail.com``
    count as one inbox. Only for counting: mail still goes to the address as typed.
    """
    local, _, domain = address.strip().lower().rpartition("@")
    local = local.split("+", 1)[0] or local
    if domain in _DOTLESS:
        local, domain = local.replace(".", ""), _DOTLESS[domain]
    return f"{local}@{domain}"
