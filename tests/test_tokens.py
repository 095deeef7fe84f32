"""Signed links: a token works only unedited, with its own key, for its own purpose."""

from __future__ import annotations

import importlib
import string
import sys
import types
from pathlib import Path

import pytest

import mailer.bounces
from mailer import tokens
from mailer.errors import BadToken

KEY = b"k" * 32


def test_a_token_reads_back_its_ids() -> None:
    token = tokens.make(KEY, "unsubscribe", 42, 7)
    assert tokens.read(KEY, "unsubscribe", token) == (42, 7)


def test_every_one_character_edit_of_a_token_is_rejected() -> None:
    token = tokens.make(KEY, "unsubscribe", 42, 7)
    alphabet = string.ascii_letters + string.digits + "-_."
    edits = 0
    for i, original in enumerate(token):
        for replacement in alphabet:
            if replacement == original:
                continue
            tampered = token[:i] + replacement + token[i + 1 :]
            edits += 1
            try:
                ids = tokens.read(KEY, "unsubscribe", tampered)
            except BadToken:
                continue
            # Base64 padding bits may decode to the same MAC; then the ids must be the same.
            assert ids == (42, 7), tampered
    assert edits > 500


@pytest.mark.parametrize(
    ("key", "purpose"), [(b"another key" * 3, "unsubscribe"), (KEY, "preferences")]
)
def test_a_token_is_bound_to_its_key_and_purpose(key: bytes, purpose: str) -> None:
    token = tokens.make(KEY, "unsubscribe", 42, 7)
    with pytest.raises(BadToken):
        tokens.read(key, purpose, token)


@pytest.mark.parametrize("junk", ["", ".", "abc", "1-2", "x.y", "1.!!!!", "1..2"])
def test_junk_is_a_bad_token_not_a_crash(junk: str) -> None:
    with pytest.raises(BadToken):
        tokens.read(KEY, "unsubscribe", junk)


UNSUBSCRIBE_EMAIL = Path(__file__).parent / "data" / "bounces" / "unsubscribe-mailto-subject.eml"


@pytest.mark.parametrize("mac_bytes", [9, 12, 16, 32])
def test_unsubscribe_by_email_reads_the_token_whatever_the_mac_length(
    mac_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bounce reader finds an unsubscribe token by the token module's own pattern, so
    changing the MAC length there (a new tokens.py, then a fresh import of the reader)
    cannot silently break unsubscribe-by-email."""
    source = Path(tokens.__file__).read_text(encoding="utf-8")
    assert "\n_MAC_BYTES = 12\n" in source
    changed = types.ModuleType(tokens.__name__)
    changed.__file__ = tokens.__file__
    code = source.replace("\n_MAC_BYTES = 12\n", f"\n_MAC_BYTES = {mac_bytes}\n")
    exec(compile(code, tokens.__file__, "exec"), changed.__dict__)
    monkeypatch.setitem(sys.modules, tokens.__name__, changed)
    monkeypatch.setattr(mailer, "tokens", changed)
    # The reader, imported afresh against the changed token module (both put back after).
    monkeypatch.setattr(mailer.bounces, "diagnose", mailer.bounces.diagnose, raising=False)
    monkeypatch.delitem(sys.modules, "mailer.bounces.diagnose", raising=False)
    reader = importlib.import_module("mailer.bounces.diagnose")

    token = changed.make(b"k" * 32, changed.UNSUBSCRIBE, 1234, 56)
    assert len(token.rpartition(".")[2]) == len(changed._b64(bytes(mac_bytes)))
    raw = UNSUBSCRIBE_EMAIL.read_bytes()
    raw = raw.replace(b"%RCPT%", b"someone@example.org").replace(b"%TOKEN%", token.encode())
    assert reader.diagnose(raw).unsubscribe_token == token
    # A token one character short of this length is not taken for one.
    short = raw.replace(token.encode(), token[:-1].encode())
    assert reader.diagnose(short).unsubscribe_token == ""
