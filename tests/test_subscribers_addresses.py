"""Email addresses: validated by email-validator without DNS, normalised one way."""

from __future__ import annotations

import random

import email_validator
import pytest

from mailer.addresses import _everyday, normalise, parse_address
from mailer.errors import InvalidInput


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("jo@example.org", "jo@example.org"),
        ("  Jo.Bloggs@EXAMPLE.ORG\u00a0", "jo.bloggs@example.org"),
        ("\ufeffjo@example.org\u200b", "jo@example.org"),
        ('"jo@example.org"', "jo@example.org"),
        ("mailto:Jo@Example.org", "jo@example.org"),
        ("o'brien+news@school.example.co.uk", "o'brien+news@school.example.co.uk"),
        ("Zoë@Bücher.Example", "zoë@bücher.example"),
        ("jo@xn--bcher-kva.example", "jo@bücher.example"),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


def test_a_display_name_is_kept_apart() -> None:
    assert parse_address("Jo Bloggs <Jo@Example.org>") == ("jo@example.org", "Jo Bloggs")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "jo",
        "jo@",
        "@example.org",
        "jo@@example.org",
        "jo@example",
        "jo@localhost",
        "jo@example.invalid",
        "jo@example.org.",
        "jo..x@example.org",
        "jo @example.org",
        "jo@exa_mple.org",
        "jo@-example.org",
        "jo@example.123",
        "jo@ab--cd.example.org",
    ],
)
def test_invalid_addresses_are_refused_with_a_reason(raw: str) -> None:
    with pytest.raises(InvalidInput, match=r"not a valid email address \(.+\)|no email address"):
        normalise(raw)


def _reference(address: str) -> str | None:
    # mailer first strips the spaces and stray quotes that spreadsheets leave at the ends.
    address = address.strip(' \t\r\n\u00a0\u200b\u200c\u200d\u2060\ufeff"')
    try:
        valid = email_validator.validate_email(address, check_deliverability=False)
    except email_validator.EmailNotValidError:
        return None
    return valid.normalized.lower()


def _ours(address: str) -> str | None:
    try:
        return normalise(address)
    except InvalidInput:
        return None


def _candidates(n: int) -> list[str]:
    """Everyday addresses with random damage near the edges of the shape mailer checks
    without email-validator: odd characters, dots and dashes in odd places, long parts,
    special-use and numeric top-level domains, Punycode."""
    rng = random.Random(11)
    alnum = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789"
    odd = ".-_+'!#$%&*/=?^`{|}~\"(),:;<>@[\\] é\u00a0"
    tlds = [
        "org",
        "uk",
        "co.uk",
        "Org",
        "test",
        "local",
        "onion",
        "arpa",
        "invalid",
        "localhost",
        "123",
        "a1",
        "xn--p1ai",
        "c",
        "x" * 63,
        "x" * 64,
    ]

    def word(length: int) -> str:
        return "".join(rng.choice(alnum) for _ in range(length))

    found = []
    for _ in range(n):
        local = ".".join(word(rng.choice([1, 4, 8])) for _ in range(rng.choice([1, 2, 3])))
        labels = [word(rng.choice([1, 5, 10])) for _ in range(rng.choice([1, 2, 3]))]
        address = f"{local}@{'.'.join(labels)}.{rng.choice(tlds[:4])}"
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            at = address.index("@")
            damage = rng.randrange(8)
            if damage == 0:  # an odd character anywhere
                i = rng.randrange(len(address) + 1)
                address = address[:i] + rng.choice(odd) + address[i:]
            elif damage == 1:  # another top-level domain
                address = address.rsplit(".", 1)[0] + "." + rng.choice(tlds)
            elif damage == 2:  # a dash at a label's edge, or two in a row
                i = rng.randrange(at + 1, len(address))
                address = address[:i] + rng.choice(["-", "--", ".-", "-."]) + address[i:]
            elif damage == 3:  # a long local part
                address = "a" * rng.choice([60, 63, 64, 65]) + address[at:]
            elif damage == 4:  # a long label
                address = (
                    address[: at + 1] + "b" * rng.choice([62, 63, 64]) + "." + address[at + 1 :]
                )
            elif damage == 5:  # a long address
                address = (
                    "c" * 60
                    + address[at : at + 1]
                    + "d" * 60
                    + "."
                    + "e" * 60
                    + "."
                    + ("f" * rng.choice([60, 66, 70]))
                    + "."
                    + address[at + 1 :]
                )
            elif damage == 6:  # Punycode, or letters-dash-dash
                address = (
                    address[: at + 1]
                    + rng.choice(["xn--bcher-kva.", "ab--c.", "a--b."])
                    + (address[at + 1 :])
                )
            else:  # a dot at the edges of the local part
                address = (
                    rng.choice([".", ""]) + address[:at] + rng.choice([".", ""]) + address[at:]
                )
        found.append(address)
    return found


def test_the_fast_path_agrees_with_email_validator() -> None:
    # Plain addresses skip email-validator for speed; on every address, plain or odd, mailer
    # must decide exactly as email-validator does and normalise the same way.
    candidates = _candidates(4000)
    # Enough of them take the fast path, and enough are damaged, for this to mean something.
    assert sum(_everyday(c) for c in candidates) > 1000
    assert sum(_reference(c) is None for c in candidates) > 1000
    disagreements = [(c, _ours(c), _reference(c)) for c in candidates if _ours(c) != _reference(c)]
    assert disagreements == []
