"""Scoring a table of real returned messages through mailer.bounces.classify.

A table is a folder with an expected.csv: one row per recipient a message reports on,
with the category mailer's policy gives it (docs/bounces.md). The messages are not in
the repository: their ``file`` is a path under .cache/bounces/messages/, where
``make bounce-data`` puts them from the registries pinned in
tests/data/bounces/sources.toml (tests/fetch_bounce_sources.py). The corpus
(tests/data/bounces/corpus/) and the held-out set (tests/data/bounces/heldout/) are
scored the same way, by these functions.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from fetch_bounce_sources import MAKE_TARGET, MESSAGES, STAMP
from mailer.bounces import RecipientFinding, classify
from mailer.errors import UnreadableMessage

# Categories that must never mark a person bounced at once.
NEVER_GONE = {
    "policy",
    "full",
    "soft",
    "auto-reply",
    "delayed",
    "delivered",
    "complaint",
    "unsubscribe",
    "unrecognised",
}
# What a gone address must never be read as: these never count against anyone.
NEVER_COUNTS = {"policy", "delayed", "delivered", "auto-reply", "unrecognised", "none"}


@dataclass(frozen=True)
class Row:
    file: str
    server: str
    address: str
    category: str
    half: str = ""


Pair = tuple[Row, RecipientFinding | None]


def messages() -> Path:
    """The folder the tables' messages are downloaded to; the test fails, saying how to get
    them, when they are not there."""
    if not STAMP.is_file():
        pytest.fail(
            f"the bounce test messages are not in {MESSAGES}: run `{MAKE_TARGET}` "
            "(`make test` does) to download them",
            pytrace=False,
        )
    return MESSAGES


def files(folder: Path) -> list[Path]:
    """Every message the table in ``folder`` names, once each."""
    root = messages()
    return [root / name for name in sorted({r.file for r in table(folder)})]


def table(folder: Path) -> list[Row]:
    with (folder / "expected.csv").open(encoding="utf-8", newline="") as f:
        return [
            Row(r["file"], r["server"], r["address"], r["category"], r.get("half") or "")
            for r in csv.DictReader(f)
        ]


def matched(rows: list[Row], findings: list[RecipientFinding]) -> list[Pair]:
    """Each expected recipient with the finding about the same address, or, failing that,
    the next finding not yet matched (a report that names nobody is about its one copy)."""
    left = list(findings)
    pairs: list[Pair] = []
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


def scored(folder: Path) -> list[Pair]:
    """Every row of the table with what classify says of its recipient."""
    by_file: dict[str, list[Row]] = {}
    for row in table(folder):
        by_file.setdefault(row.file, []).append(row)
    root = messages()
    pairs: list[Pair] = []
    for name, rows in by_file.items():
        try:
            findings = classify((root / name).read_bytes())
        except UnreadableMessage:
            findings = []
        pairs += matched(rows, findings)
    return pairs


def said(found: RecipientFinding | None) -> str:
    return str(found.category) if found is not None else "none"


def right(row: Row, found: RecipientFinding | None) -> bool:
    """A message that reports on nobody (spam, an ordinary message) is right when mailer
    finds nothing in it, or calls it unrecognised."""
    if row.category == "unrecognised":
        return said(found) in ("none", "unrecognised")
    return said(found) == row.category


def score(pairs: list[Pair]) -> tuple[float, Counter[tuple[str, str]]]:
    """The share right by category, and what the wrong ones were (expected, said)."""
    wrong = Counter((row.category, said(f)) for row, f in pairs if not right(row, f))
    return (len(pairs) - sum(wrong.values())) / len(pairs), wrong


def wrongly_suppressed(pairs: list[Pair]) -> list[tuple[str, str]]:
    """People read as gone (marked bounced at once) whose report says otherwise."""
    return [
        (row.file, row.category)
        for row, f in pairs
        if row.category in NEVER_GONE and said(f) == "hard"
    ]


def gone_but_kept(pairs: list[Pair]) -> list[tuple[str, str]]:
    """Gone addresses read as something that never counts against anyone."""
    return [
        (row.file, said(f))
        for row, f in pairs
        if row.category == "hard" and said(f) in NEVER_COUNTS
    ]
