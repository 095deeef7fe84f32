"""CSV import of subscribers: the files people actually get out of Excel, Google and Outlook.

The file is read as a stream, a line at a time, so a million-row file needs little memory.
It must be text (an .xlsx workbook gets a message saying how to save it as CSV): UTF-8
with or without a BOM, UTF-16, or Windows-1252. Each line is decoded on its own: a UTF-8
file with a few bad bytes stays UTF-8 and only those rows are refused, by line number;
only a file with no valid UTF-8 beyond ASCII at all is read as Windows-1252 (what Excel's
plain "CSV (Comma delimited)" writes on UK Windows), and the report lists the accented
names to check. Comma, semicolon and tab separators are recognised; the header may sit
below a title row or two; its column names are matched loosely ("E-mail 1 - Value",
"Email Address", "Given Name", "Organization 1 - Name"...), and the report says which
columns were used and which ignored. Rows are validated, de-duplicated and merged into the
list in batches, all in one transaction: an error, Ctrl-C or a crash half-way leaves the
database as it was, and a dry run rolls that transaction back.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mailer.addresses import (
    clean_text,
    has_controls,
    mentions_address,
    parse_address,
)
from mailer.errors import ImportFileError, InvalidInput
from mailer.store import joining, people
from mailer.store.database import Database
from mailer.store.joining import Candidate, JoinOutcome
from mailer.store.models import LawfulBasis
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
# Google and Outlook contact exports number their address columns ("E-mail 1 - Value").
EMAIL_PATTERN = re.compile(r"e?mail(address(es)?)?\d*(value|address)?")
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
ORGANISATION_PATTERN = re.compile(r"(organi[sz]ation|company)\d*(name)?")
SAVE_AS_CSV = "in Excel choose File > Save As > 'CSV UTF-8 (Comma delimited) (*.csv)'"
Progress = Callable[[int, int], None]
# How many lines above the header may be titles, and how many lines one row may span
# before an unclosed quote is suspected.
TITLE_LINES = 10
ROW_LINES = 20
# Notes kept for the report; beyond this they are only counted.
KEEP_NOTES = 1000
_SURROGATE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class ImportNote:
    """One row that was not imported as it stood, and why."""

    line: int
    text: str


class Notes(list[ImportNote]):
    """Notes of one kind: the first KEEP_NOTES kept, every one counted."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def append(self, note: ImportNote) -> None:
        self.total += 1
        if super().__len__() < KEEP_NOTES:
            super().append(note)

    def __len__(self) -> int:
        return self.total

    def __bool__(self) -> bool:
        return self.total > 0


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
    invalid: Notes = field(default_factory=Notes)
    duplicates: Notes = field(default_factory=Notes)
    suppressed: Notes = field(default_factory=Notes)
    cleaned: Notes = field(default_factory=Notes)
    # Names read as Windows-1252 with accents in them, for a person to check.
    accented: Notes = field(default_factory=Notes)
    # Column headings used for each field, and the ones ignored.
    used: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    # Lines above the header line that were skipped as titles.
    title_lines: list[int] = field(default_factory=list)
    # A list pasted from a mail program's To: line (``Name <address>; ...``), no header.
    pasted: bool = False
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

    def used(self, header: list[str]) -> dict[str, str]:
        fields = {
            "email": self.email,
            "name": self.name,
            "first name": self.first,
            "last name": self.last,
            "organisation": self.organisation,
        }
        return {k: header[i].strip() for k, i in fields.items() if i is not None}


def _key(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.lower())


def _find(keys: list[str], wanted: set[str], pattern: re.Pattern[str] | None = None) -> int | None:
    for i, k in enumerate(keys):
        if k in wanted or (pattern is not None and pattern.fullmatch(k)):
            return i
    return None


def _columns(header: list[str]) -> _Columns | None:
    keys = [_key(h) for h in header]
    email = _find(keys, EMAIL_HEADERS, EMAIL_PATTERN)
    if email is None:
        return None
    return _Columns(
        email=email,
        name=_find(keys, NAME_HEADERS),
        first=_find(keys, FIRST_NAME_HEADERS),
        last=_find(keys, LAST_NAME_HEADERS),
        organisation=_find(keys, ORGANISATION_HEADERS, ORGANISATION_PATTERN),
    )


def _delimiter(lines: Iterable[str]) -> str:
    """Comma, semicolon or tab: whichever the header line uses most (Excel in much of Europe
    writes semicolons; "Unicode text" and copy-paste give tabs). The header is the first
    line that names a mail column, else the first line."""
    candidates = [line for line in lines if line.strip(" \t\r\n,;")]
    header = next((line for line in candidates if "mail" in line.lower()), None)
    line = header or (candidates[0] if candidates else "")
    counts = {d: line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


class _Source:
    """The file's lines as text, decoded one at a time; counts the bytes read."""

    def __init__(self, path: Path) -> None:
        self.path, self.label = path, path.name if str(path) != "-" else "standard input"
        self.delimiter = ","
        # The header line's cells, once found: to name a column in a message.
        self.header: list[str] = []
        self.text: IO[str] | None = None
        self.stream = _open(path)
        self.read = 0
        try:
            self.size = path.stat().st_size if path.is_file() else 0
        except OSError:
            self.size = 0
        try:
            self._check()
        except BaseException:
            self.close()
            raise

    def _check(self) -> None:
        head = self.stream.peek(4096)[:4096] if hasattr(self.stream, "peek") else b""
        if head.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
            raise ImportFileError(
                f"{self.label} is a spreadsheet workbook (.xlsx, .xls or .ods), not a CSV file: "
                f"{SAVE_AS_CSV} and import that file"
            )
        self.utf16 = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        if not self.utf16 and b"\x00" in head:
            raise ImportFileError(f"{self.label} is not a text file: {SAVE_AS_CSV}")
        self.encoding = "UTF-16" if self.utf16 else "UTF-8"
        if head.startswith(codecs.BOM_UTF8):
            self.stream.read(len(codecs.BOM_UTF8))
            self.encoding = "UTF-8 with BOM"
        # Whether any line held valid UTF-8 beyond ASCII: if none did and some line was not
        # UTF-8, the file as a whole is Windows-1252.
        self.utf8_seen = False

    def lines(self) -> Iterator[str]:
        if self.utf16:
            self.text = text = io.TextIOWrapper(self.stream, encoding="utf-16", newline="")
            try:
                for line in text:
                    self.read += len(line) * 2
                    yield line
            except UnicodeDecodeError:
                raise ImportFileError(
                    f"{self.label} is not valid UTF-16 text: {SAVE_AS_CSV}"
                ) from None
            return
        for raw in self.stream:
            self.read += len(raw)
            line = raw.decode("utf-8", "surrogateescape")
            if not self.utf8_seen and not raw.isascii() and not _SURROGATE.search(line):
                self.utf8_seen = True
            yield line

    def close(self) -> None:
        if self.stream is sys.stdin.buffer:
            return
        if self.text is not None:
            self.text.close()
        self.stream.close()


def _open(path: Path) -> Any:
    if str(path) == "-":
        return sys.stdin.buffer
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise ImportFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImportFileError(f"{path} is a folder, not a CSV file") from None
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read it: {exc.strerror}") from None


def _records(source: _Source) -> Iterator[tuple[int, list[str]]]:
    """(first line number, cells) for each non-blank record, a line at a time.

    A quote opened and never closed makes every line after it part of one cell: a row that
    spans more than ROW_LINES lines is reported at the line where it starts, and so is a
    row of any length whose cell runs over a line that holds an address (a stray quote
    closed by another one lines later, or by the end of the file): those lines are rows
    that would otherwise be lost inside it. A cell over several lines with no address in
    them (a postal address in an Outlook export) is read as it stands.
    """
    lines = source.lines()
    peeked = list(itertools.islice(lines, TITLE_LINES + 1))
    if not any(line.strip(" \t\r\n\ufeff,;") for line in peeked):
        raise ImportFileError(
            f"{source.label} is empty: it needs a header line such as 'email,name'"
        )
    reader = csv.reader(itertools.chain(peeked, lines), delimiter=_delimiter(peeked))
    source.delimiter = str(reader.dialect.delimiter)
    previous = 0
    try:
        for cells in reader:
            start, previous = previous + 1, reader.line_num
            if previous - start >= ROW_LINES:
                raise ImportFileError(_unclosed(source.label, start))
            if previous > start:
                _swallowed(source, start, previous, cells)
            if any(c.strip() for c in cells):
                yield start, cells
    except csv.Error as exc:
        if "field larger" in str(exc):
            raise ImportFileError(f"{source.label}:{reader.line_num}: {exc}") from None
        raise ImportFileError(_unclosed(source.label, previous + 1)) from None


def _swallowed(source: _Source, start: int, end: int, cells: list[str]) -> None:
    """Refuse a record whose cell spans lines that look like rows of their own."""
    for index, cell in enumerate(cells):
        _, newline, rest = cell.partition("\n")
        if newline and mentions_address(rest):
            header = source.header
            field = header[index].strip() if index < len(header) else f"column {index + 1}"
            raise ImportFileError(
                f'{source.label}:{start}: {field}: a quote (") opens in this field and runs '
                f"to line {end}, so the rows on lines {start + 1}-{end} would be read as part "
                f"of it and lost: close the quote on line {start} or remove it"
            )


def _unclosed(label: str, line: int) -> str:
    return (
        f'{label}:{line}: a quote (") opens on this line and is not closed, so the lines '
        "after it would be read as one row: close the quote or remove it"
    )


def _cell(cells: list[str], index: int | None) -> str:
    value = cells[index] if index is not None and index < len(cells) else ""
    return unneutralise(value)


def unneutralise(value: str) -> str:
    """Take off the apostrophe mailer's export puts before a cell that starts like a
    formula, so an export imports back exactly."""
    if value.startswith("'") and value[1:].startswith(FORMULA_START):
        return value[1:]
    return value


def _header(
    source: _Source, records: Iterator[tuple[int, list[str]]], report: ImportReport
) -> tuple[_Columns, Iterator[tuple[int, list[str]]]]:
    """Find the header line, skipping title lines above it; the columns, and the records
    below it (for a pasted list with no header, every line, one person a record)."""
    seen: list[tuple[int, list[str]]] = []
    for line, cells in records:
        columns = _columns(cells)
        if columns is not None:
            source.header = cells
            report.title_lines = [n for n, _ in seen]
            report.used = columns.used(cells)
            chosen = set(report.used.values())
            report.ignored = [c.strip() for c in cells if c.strip() and c.strip() not in chosen]
            return columns, records
        if not seen and _pasted(source.delimiter, cells):
            report.pasted = True
            report.used = {"email": "Name <address>", "name": "Name <address>"}
            pasted = _Columns(email=0, name=None, first=None, last=None, organisation=None)
            return pasted, _one_each(source.delimiter, (line, cells), records)
        if not seen and any("@" in c for c in cells):
            raise ImportFileError(
                f"{source.label}:{line}: the first line looks like an address, not column "
                "names: add a first line naming the columns, such as email,name,organisation"
            )
        seen.append((line, cells))
        if len(seen) > TITLE_LINES:
            break
    if not seen:
        raise ImportFileError(
            f"{source.label} is empty: it needs a header line such as 'email,name'"
        )
    found = ", ".join(repr(h.strip()) for h in seen[0][1] if h.strip()) or "none"
    raise ImportFileError(
        f"{source.label}:{seen[0][0]}: no email column (columns found: {found}): "
        "name the column of addresses 'email'"
    )


# One ``Name <address>`` of a list pasted from Outlook's To: line, which separates them
# with "; " and may end with one; the name may be in quotes and hold a comma.
_PASTED_ENTRY = re.compile(r'(?:"[^"]*"|[^;<>"])*<[^<>;]*>')


def _entries(delimiter: str, cells: list[str]) -> list[str]:
    return [m.group().strip() for m in _PASTED_ENTRY.finditer(delimiter.join(cells))]


def _pasted(delimiter: str, cells: list[str]) -> bool:
    """Whether a first line is a pasted list of ``Name <address>`` and nothing else."""
    text = delimiter.join(cells)
    rest = _PASTED_ENTRY.sub("", text)
    return "@" in text and "<" in text and not rest.strip(" \t;,")


def _one_each(
    delimiter: str, first: tuple[int, list[str]], records: Iterator[tuple[int, list[str]]]
) -> Iterator[tuple[int, list[str]]]:
    """A pasted list as records of one ``Name <address>`` each, with the line it is on."""
    for line, cells in itertools.chain([first], records):
        found = _entries(delimiter, cells) if _pasted(delimiter, cells) else []
        for entry in found or [delimiter.join(cells).strip(" \t;,")]:
            yield line, [entry]


def _recode(cells: list[str]) -> list[str] | None:
    """Cells decoded as UTF-8 with stray bytes kept, read again as Windows-1252; None if a
    byte is not Windows-1252 either."""
    out = []
    for cell in cells:
        text = cell.encode("utf-8", "surrogateescape").decode("cp1252", "replace")
        if "\ufffd" in text:
            return None
        out.append(text)
    return out


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
    source = _Source(path)
    try:
        return _import(db, source, list_slug, basis, dry_run, progress, started)
    finally:
        source.close()


def _import(
    db: Database,
    source: _Source,
    list_slug: str,
    basis: LawfulBasis,
    dry_run: bool,
    progress: Progress | None,
    started: float,
) -> ImportReport:
    report = ImportReport(source.label, list_slug, dry_run, source.encoding)
    records = _records(source)
    columns, records = _header(source, records, report)
    report.delimiter = source.delimiter
    # Addresses already read, as 8-byte digests with their line: a million of them fit in
    # well under a hundred megabytes.
    seen: dict[bytes, int] = {}
    # Rows holding bytes that are not UTF-8: imported at the end, as Windows-1252, if the
    # whole file turns out to be Windows-1252, else refused.
    deferred: list[tuple[int, list[str]]] = []

    with db.session(write=True) as session:
        mailing_list = people.get_list(session, list_slug)
        batch: list[Candidate] = []

        def flush() -> None:
            decisions = joining.subscribe_many(
                session, mailing_list, batch, basis=basis, source=source.label
            )
            for d in decisions:
                if d.outcome is JoinOutcome.ADDED:
                    report.added += 1
                elif d.outcome is JoinOutcome.ALREADY:
                    report.already += 1
                elif d.outcome is JoinOutcome.UPDATED:
                    report.updated += 1
                else:
                    report.suppressed.append(
                        ImportNote(d.candidate.line, f"{d.candidate.email} {d.reason}: skipped")
                    )
            batch.clear()
            if progress:
                progress(source.read, max(source.size, source.read))

        def take(line: int, cells: list[str], *, recoded: bool = False) -> None:
            raw = _cell(cells, columns.email)
            try:
                email, display_name = parse_address(raw)
            except InvalidInput as exc:
                report.invalid.append(ImportNote(line, str(exc)))
                return
            digest = hashlib.blake2b(email.encode(), digest_size=8).digest()
            if digest in seen:
                report.duplicates.append(
                    ImportNote(line, f"{email} is already on line {seen[digest]}")
                )
                return
            seen[digest] = line
            name = _cell(cells, columns.name) or " ".join(
                (_cell(cells, columns.first), _cell(cells, columns.last))
            )
            organisation = _cell(cells, columns.organisation)
            if has_controls(name) or has_controls(organisation):
                report.cleaned.append(
                    ImportNote(
                        line, f"{email}: control characters removed from the name or organisation"
                    )
                )
            name = clean_text(name) or clean_text(display_name)
            if recoded and not (name + organisation).isascii():
                report.accented.append(ImportNote(line, f"{email}: {name}"))
            batch.append(Candidate(email, name, clean_text(organisation), line))
            if len(batch) >= BATCH:
                flush()

        for line, cells in records:
            report.rows += 1
            if any(_SURROGATE.search(c) for c in cells if not c.isascii()):
                deferred.append((line, cells))
                continue
            take(line, cells)
        if report.rows == 0:
            raise ImportFileError(f"{source.label} has a header line but no rows below it")
        if deferred and not source.utf8_seen:
            report.encoding = "Windows-1252"
            for line, cells in deferred:
                recoded = _recode(cells)
                if recoded is None:
                    raise ImportFileError(
                        f"{source.label}:{line}: the file is neither UTF-8 nor Windows-1252 "
                        f"text: {SAVE_AS_CSV}"
                    )
                take(line, recoded, recoded=True)
        else:
            for line, _ in deferred:
                report.invalid.append(
                    ImportNote(
                        line, "this line is not valid UTF-8 text (a stray byte): not imported"
                    )
                )
        flush()
        if dry_run:
            session.rollback()
    report.seconds = time.monotonic() - started
    return report
