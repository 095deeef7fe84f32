"""CSV import of subscribers: the files people actually get out of Excel.

A file is read whole and checked before the database is touched: it must be text (an
.xlsx workbook gets a message saying how to save it as CSV), UTF-8 with or without a BOM,
UTF-16 or Windows-1252; comma, semicolon and tab separators are recognised from the header
line, whose column names are matched loosely ("E-mail", "Email Address", "Full name",
"Organization"...). Rows are then validated, de-duplicated and merged into the list in
batches, all in one transaction: an error, Ctrl-C or a crash half-way leaves the database
as it was, and a dry run rolls that transaction back.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mailer.errors import ImportFileError, InvalidInput
from mailer.store import joining, people
from mailer.store.database import Database
from mailer.store.joining import Candidate, Outcome
from mailer.store.models import LawfulBasis
from mailer.subscribers.addresses import clean_text, has_controls, parse_address
from mailer.subscribers.csv_export import FORMULA_START

BATCH = 1000
# Header names, lower-cased with everything but letters and digits removed.
EMAIL_HEADERS = {
    "email",
    "emailaddress",
    "emailaddresses",
    "mail",
    "mailaddress",
    "emails",
    "workemail",
    "emailwork",
    "businessemail",
    "primaryemail",
    "emailid",
    "eaddress",
}
NAME_HEADERS = {"name", "fullname", "displayname", "contactname", "contact", "yourname"}
FIRST_NAME_HEADERS = {"firstname", "forename", "forenames", "givenname", "first"}
LAST_NAME_HEADERS = {"lastname", "surname", "familyname", "last"}
ORGANISATION_HEADERS = {
    "organisation",
    "organization",
    "organisationname",
    "organizationname",
    "org",
    "company",
    "companyname",
    "employer",
    "agency",
    "school",
    "setting",
    "service",
}
SAVE_AS_CSV = "in Excel choose File > Save As > 'CSV UTF-8 (Comma delimited) (*.csv)'"
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Note:
    """One row that was not imported as it stood, and why."""

    line: int
    text: str


@dataclass
class ImportReport:
    file: str
    list_slug: str
    dry_run: bool
    encoding: str = "UTF-8"
    delimiter: str = ","
    rows: int = 0
    added: int = 0
    already: int = 0
    updated: int = 0
    invalid: list[Note] = field(default_factory=list)
    duplicates: list[Note] = field(default_factory=list)
    suppressed: list[Note] = field(default_factory=list)
    cleaned: list[Note] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def nothing_imported(self) -> bool:
        """Every row was rejected: there was not one usable address in the file."""
        return bool(self.invalid) and not (
            self.added or self.already or self.updated or self.suppressed
        )


@dataclass(frozen=True)
class _Columns:
    email: int
    name: int | None
    first: int | None
    last: int | None
    organisation: int | None


def _key(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.lower())


def _find(keys: list[str], wanted: set[str]) -> int | None:
    return next((i for i, k in enumerate(keys) if k in wanted), None)


def _columns(header: list[str], label: str) -> _Columns:
    keys = [_key(h) for h in header]
    email = _find(keys, EMAIL_HEADERS)
    if email is None:
        if any("@" in h for h in header):
            raise ImportFileError(
                f"{label}:1: the first line looks like an address, not column names: add a "
                "first line naming the columns, such as email,name,organisation"
            )
        found = ", ".join(repr(h.strip()) for h in header if h.strip()) or "none"
        raise ImportFileError(
            f"{label}:1: no email column (columns found: {found}): "
            "name the column of addresses 'email'"
        )
    return _Columns(
        email=email,
        name=_find(keys, NAME_HEADERS),
        first=_find(keys, FIRST_NAME_HEADERS),
        last=_find(keys, LAST_NAME_HEADERS),
        organisation=_find(keys, ORGANISATION_HEADERS),
    )


def _decode(data: bytes, label: str) -> tuple[str, str]:
    """The file's text and the name of the encoding it was read with."""
    if data.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        raise ImportFileError(
            f"{label} is a spreadsheet workbook (.xlsx, .xls or .ods), not a CSV file: "
            f"{SAVE_AS_CSV} and import that file"
        )
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "UTF-16"
        except UnicodeDecodeError:
            raise ImportFileError(f"{label} is not valid UTF-16 text: {SAVE_AS_CSV}") from None
    if b"\x00" in data[:4096]:
        raise ImportFileError(f"{label} is not a text file: {SAVE_AS_CSV}")
    try:
        if data.startswith(codecs.BOM_UTF8):
            return data[len(codecs.BOM_UTF8) :].decode("utf-8"), "UTF-8 with BOM"
        return data.decode("utf-8"), "UTF-8"
    except UnicodeDecodeError as exc:
        utf8_error = exc
    try:
        # Excel's plain "CSV (Comma delimited)" writes Windows-1252 on UK Windows.
        return data.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError:
        line = data.count(b"\n", 0, utf8_error.start) + 1
        raise ImportFileError(
            f"{label}:{line}: the file is neither UTF-8 nor Windows-1252 text: {SAVE_AS_CSV}"
        ) from None


def _delimiter(first_line: str) -> str:
    """Comma, semicolon or tab: whichever the header line uses most (Excel in much of Europe
    writes semicolons; "Unicode text" and copy-paste give tabs)."""
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


@dataclass
class _Source:
    label: str
    text: str
    encoding: str
    delimiter: str


def read_file(path: Path) -> _Source:
    """Read and decode a subscriber file, refusing what cannot be imported at all."""
    label = path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImportFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImportFileError(f"{path} is a folder, not a CSV file") from None
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read it: {exc.strerror}") from None
    text, encoding = _decode(data, label)
    if not text.strip(" \t\r\n\ufeff,;"):
        raise ImportFileError(f"{label} is empty: it needs a header line such as 'email,name'")
    first_line = text.lstrip("\r\n").split("\n", 1)[0]
    return _Source(label, text, encoding, _delimiter(first_line))


def _records(source: _Source) -> Iterator[tuple[int, list[str], int]]:
    """(first line number, cells, characters read so far) for each non-blank record."""
    buffer = io.StringIO(source.text, newline="")
    reader = csv.reader(buffer, delimiter=source.delimiter)
    previous = 0
    try:
        for cells in reader:
            start, previous = previous + 1, reader.line_num
            if any(c.strip() for c in cells):
                yield start, cells, buffer.tell()
    except csv.Error as exc:
        raise ImportFileError(f"{source.label}:{reader.line_num}: {exc}") from None


def _cell(cells: list[str], index: int | None) -> str:
    value = cells[index] if index is not None and index < len(cells) else ""
    return unneutralise(value)


def unneutralise(value: str) -> str:
    """Take off the apostrophe mailer's export puts before a cell that starts like a
    formula, so an export imports back exactly."""
    if value.startswith("'") and value[1:].startswith(FORMULA_START):
        return value[1:]
    return value


def import_file(
    db: Database,
    path: Path,
    list_slug: str,
    *,
    basis: LawfulBasis = LawfulBasis.PUBLIC_TASK,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a CSV file of people into a list, in one transaction; see the module doc."""
    started = time.monotonic()
    source = read_file(path)
    report = ImportReport(source.label, list_slug, dry_run, source.encoding, source.delimiter)
    records = _records(source)
    header = next(records, None)
    assert header is not None, "read_file refuses files without a non-blank line"
    columns = _columns(header[1], source.label)
    seen: dict[str, int] = {}
    total = len(source.text)

    with db.session(write=True) as session:
        mailing_list = people.get_list(session, list_slug)
        batch: list[Candidate] = []

        def flush(done: int) -> None:
            decisions = joining.subscribe_many(
                session, mailing_list, batch, basis=basis, source=source.label
            )
            for d in decisions:
                if d.outcome is Outcome.ADDED:
                    report.added += 1
                elif d.outcome is Outcome.ALREADY:
                    report.already += 1
                elif d.outcome is Outcome.UPDATED:
                    report.updated += 1
                else:
                    report.suppressed.append(
                        Note(d.candidate.line, f"{d.candidate.email} {d.reason}: skipped")
                    )
            batch.clear()
            if progress:
                progress(done, total)

        for line, cells, position in records:
            report.rows += 1
            raw = _cell(cells, columns.email)
            try:
                email, display_name = parse_address(raw)
            except InvalidInput as exc:
                report.invalid.append(Note(line, str(exc)))
                continue
            if email in seen:
                report.duplicates.append(Note(line, f"{email} is already on line {seen[email]}"))
                continue
            seen[email] = line
            name = _cell(cells, columns.name) or " ".join(
                (_cell(cells, columns.first), _cell(cells, columns.last))
            )
            organisation = _cell(cells, columns.organisation)
            if has_controls(name) or has_controls(organisation):
                report.cleaned.append(
                    Note(line, f"{email}: control characters removed from the name or organisation")
                )
            batch.append(
                Candidate(
                    email,
                    clean_text(name) or clean_text(display_name),
                    clean_text(organisation),
                    line,
                )
            )
            if len(batch) >= BATCH:
                flush(position)
        if report.rows == 0:
            raise ImportFileError(f"{source.label} has a header line but no rows below it")
        flush(total)
        if dry_run:
            session.rollback()
    report.seconds = time.monotonic() - started
    return report
