"""CSV export of subscribers, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
from typing import TextIO

from mailer.store.database import Database
from mailer.store.models import SubscriberStatus
from mailer.subscribers.roster import rows

EXPORT_COLUMNS = ("email", "name", "organisation", "status", "lists", "created")
# Spreadsheets run a cell starting with one of these as a formula; a leading apostrophe
# makes them show it as text (OWASP "CSV injection"). Every text cell gets it, addresses
# too (``=cmd@example.org`` is a valid address), and the import of mailer's own export
# takes it off again (see csv_import.unneutralise), so names round-trip exactly.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_START) else value


def export_csv(
    db: Database,
    out: TextIO,
    *,
    list_slug: str | None = None,
    status: SubscriberStatus | None = None,
) -> int:
    """Write subscribers as CSV to ``out`` row by row; returns how many were written."""
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for row in rows(db, list_slug=list_slug, status=status):
        writer.writerow(
            [
                neutralise(row.email),
                neutralise(row.name),
                neutralise(row.organisation),
                row.status.value,
                row.lists,
                row.created.isoformat(),
            ]
        )
        count += 1
    return count
