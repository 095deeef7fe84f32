"""Real returned mail from many kinds of server, classified as docs/bounces.md says.

tests/data/bounces/corpus/ holds real bounces, complaints and replies from public,
licensed collections (see its README), and expected.csv what each reports per recipient.
The whole table is scored through the library's entry point, mailer.bounces.classify,
which touches no database: at least 95 % right by category, and never a refusal of our
mail, a full mailbox or an automatic reply read as an address that is gone (which would
suppress the person), nor a gone address read as anything that never counts.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass

import pytest

from conftest import REPO
from mailer.bounces import Finding, classify

CORPUS = REPO / "tests" / "data" / "bounces" / "corpus"
# Categories that must never mark a person bounced at once.
NEVER_GONE = {"policy", "full", "auto-reply", "delayed", "delivered", "complaint", "unsubscribe"}
# What a gone address must never be read as: these never count against anyone.
NEVER_COUNTS = {"policy", "delayed", "delivered", "auto-reply", "unrecognised"}


@dataclass(frozen=True)
class Row:
    file: str
    server: str
    address: str
    category: str


def table() -> list[Row]:
    with (CORPUS / "expected.csv").open(encoding="utf-8", newline="") as f:
        return [Row(r["file"], r["server"], r["address"], r["category"]) for r in csv.DictReader(f)]


def matched(rows: list[Row], findings: list[Finding]) -> list[tuple[Row, Finding | None]]:
    """Each expected recipient with the finding about the same address, or, failing that,
    the next finding not yet matched (a report that names nobody is about its one copy)."""
    left = list(findings)
    pairs: list[tuple[Row, Finding | None]] = []
    for row in rows:
        same = [f for f in left if row.address and f.address == row.address.lower()]
        found = same[0] if same else None
        pairs.append((row, found))
        if found is not None:
            left.remove(found)
    return [
        (row, found if found is not None else (left.pop(0) if left else None))
        for row, found in pairs
    ]


@pytest.fixture(scope="module")
def scored() -> list[tuple[Row, Finding | None]]:
    by_file: dict[str, list[Row]] = {}
    for row in table():
        by_file.setdefault(row.file, []).append(row)
    pairs = []
    for name, rows in by_file.items():
        pairs += matched(rows, classify((CORPUS / name).read_bytes()))
    return pairs


def test_the_corpus_is_large_and_varied() -> None:
    rows = table()
    files = {r.file for r in rows}
    assert len(files) >= 150
    assert len({r.server for r in rows}) >= 15
    assert all((CORPUS / f).is_file() for f in files)
    assert {r.category for r in rows} >= {
        "hard",
        "full",
        "soft",
        "delayed",
        "policy",
        "complaint",
        "auto-reply",
    }


def test_the_corpus_is_classified_right(scored: list[tuple[Row, Finding | None]]) -> None:
    right = [row for row, f in scored if f is not None and str(f.category) == row.category]
    score = len(right) / len(scored)
    wrong = Counter(
        (row.category, str(f.category) if f else "missing") for row, f in scored if row not in right
    )
    print(f"corpus: {len(right)}/{len(scored)} right by category ({score:.1%}); wrong: {wrong}")
    assert score >= 0.95, wrong


def test_the_addresses_are_found(scored: list[tuple[Row, Finding | None]]) -> None:
    named = [(row, f) for row, f in scored if row.address]
    found = [row for row, f in named if f is not None and f.address == row.address.lower()]
    assert len(found) / len(named) >= 0.95


def test_nobody_is_suppressed_for_what_is_not_their_fault(
    scored: list[tuple[Row, Finding | None]],
) -> None:
    wrongly = [
        (row.file, row.category)
        for row, f in scored
        if row.category in NEVER_GONE and f is not None and str(f.category) == "hard"
    ]
    assert wrongly == []


def test_no_gone_address_stays_active(scored: list[tuple[Row, Finding | None]]) -> None:
    kept = [
        (row.file, str(f.category) if f else "missing")
        for row, f in scored
        if row.category == "hard" and (f is None or str(f.category) in NEVER_COUNTS)
    ]
    assert kept == []


def test_each_message_reads_quickly_and_never_raises() -> None:
    for path in sorted(CORPUS.glob("*/*.eml")):
        findings = classify(path.read_bytes())
        assert isinstance(findings, list), path
