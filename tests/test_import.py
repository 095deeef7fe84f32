"""``mailer subscribers import``: real spreadsheets, bad files, and all-or-nothing imports."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from db_helpers import on_postgres
from mailer.cli.subscribers import LazyProgress
from mailer.config import Settings
from send_helpers import ctrl_c_works
from subscriber_helpers import (
    Cli,
    add,
    count,
    fails,
    make_list,
    ok,
    on_list,
    query,
    status_of,
    write,
)


def _import(cli: Cli, name: str, *options: str, slug: str = "all") -> tuple[int, str, str]:
    result = cli("subscribers", "import", name, "--list", slug, *options)
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, result.stderr


def _counts(stdout: str) -> dict[str, int]:
    counts = {}
    for line in stdout.splitlines():
        label, sep, number = line.strip().rpartition(":")
        if sep and label and number.strip().replace(",", "").isdigit() and line.startswith("  "):
            counts[label] = int(number.strip().replace(",", ""))
    return counts


# --- What gets imported ------------------------------------------------------------------------


def test_a_typical_excel_export(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    write(
        newsletter / "people.csv",
        "Email Address,Full name,Organisation,Phone\r\n"
        " Jo.Bloggs@EXAMPLE.org ,Jo  Bloggs,Carlisle Primary,01228\r\n"
        "\r\n"
        ",,,\r\n"
        'sam@example.org,"Sam, the DSL","Workington\nAcademy",\r\n'
        "mailto:kim@example.org,Kim,NHS,\r\n"
        "Lee Smith <lee@example.org>,,Police,\r\n"
        "bob@@example,Bob,,\r\n"
        ",Nameless,Org,\r\n"
        "jo.bloggs@example.org,Jo again,,\r\n",
    )
    code, out, _ = _import(cli, "people.csv")
    assert code == 0
    assert out.splitlines()[0].startswith(
        "Read 7 rows from people.csv (UTF-8, comma-separated) for list all in"
    )
    assert _counts(out) == {
        "added": 4,
        "already on the list": 0,
        "updated": 0,
        "duplicates in the file": 1,
        "suppressed": 0,
        "invalid": 2,
    }
    assert "  people.csv:9: 'bob@@example' is not a valid email address (" in out
    assert "  people.csv:10: no email address" in out
    assert "  people.csv:11: jo.bloggs@example.org is already on line 2" in out
    assert query(newsletter, "SELECT email, name, organisation FROM subscriber ORDER BY id") == [
        ("jo.bloggs@example.org", "Jo Bloggs", "Carlisle Primary"),
        ("sam@example.org", "Sam, the DSL", "Workington Academy"),
        ("kim@example.org", "Kim", "NHS"),
        ("lee@example.org", "Lee Smith", "Police"),
    ]
    assert query(newsletter, "SELECT DISTINCT basis, source FROM consent") == [
        ("public-task", "people.csv")
    ]


@pytest.mark.parametrize(
    "header",
    [
        "email;name;organisation",
        "E-mail;Name;Organization",
        "EMAIL ADDRESS;Full Name;Company",
        "e_mail;display name;employer",
    ],
)
def test_header_variants(cli: Cli, newsletter: Path, header: str) -> None:
    make_list(cli)
    write(newsletter / "p.csv", f"{header}\nann@example.org;Ann Lee;Health\n")
    code, out, _ = _import(cli, "p.csv")
    assert code == 0 and "semicolon-separated" in out
    assert query(newsletter, "SELECT email, name, organisation FROM subscriber") == [
        ("ann@example.org", "Ann Lee", "Health")
    ]


def test_first_and_last_name_columns_are_joined(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    write(
        newsletter / "p.tsv", "Forename\tSurname\tEmail\tSchool\nAnn\tLee\tann@example.org\tHigh\n"
    )
    code, out, _ = _import(cli, "p.tsv")
    assert code == 0 and "tab-separated" in out
    assert query(newsletter, "SELECT name, organisation FROM subscriber") == [("Ann Lee", "High")]


@pytest.mark.parametrize(
    "encoding, bom, reported",
    [
        ("utf-8", b"", "UTF-8"),
        ("utf-8", b"\xef\xbb\xbf", "UTF-8 with BOM"),
        ("cp1252", b"", "Windows-1252"),
        ("utf-16", b"", "UTF-16"),  # Excel's "Unicode Text"
    ],
)
def test_encodings_excel_writes(
    cli: Cli, newsletter: Path, encoding: str, bom: bytes, reported: str
) -> None:
    make_list(cli)
    text = "email\tname\torganisation\nzoe@example.org\tZoë Brontë\tCafé Ltd – Carlisle\n"
    (newsletter / "p.csv").write_bytes(bom + text.encode(encoding))
    code, out, _ = _import(cli, "p.csv")
    assert code == 0, out
    assert f"({reported}, tab-separated)" in out
    assert query(newsletter, "SELECT name, organisation FROM subscriber") == [
        ("Zoë Brontë", "Café Ltd – Carlisle")
    ]
    if encoding == "cp1252":
        assert "next time save as 'CSV UTF-8'" in out


def test_a_file_in_neither_utf8_nor_windows_1252(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    # 0x81 and 0x8d are undefined in Windows-1252 and not valid UTF-8 here.
    (newsletter / "p.csv").write_bytes(b"email,name\na@example.org,ok\nb@example.org,\x81\x8d\n")
    fails(
        cli("subscribers", "import", "p.csv", "--list", "all"),
        "p.csv:3: the file is neither UTF-8 nor Windows-1252",
        "CSV UTF-8",
    )
    assert count(newsletter, "subscriber") == 0


# --- Files that cannot be imported at all --------------------------------------------------------


def _xlsx(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as book:
        book.writestr("[Content_Types].xml", "<Types/>")
        book.writestr("xl/workbook.xml", "<workbook/>")
    return path


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.csv", b"", "empty.csv is empty"),
        ("blank.csv", b"\r\n\r\n,,\r\n", "blank.csv is empty"),
        ("header.csv", b"email,name\r\n", "header.csv has a header line but no rows below it"),
        (
            "cols.csv",
            b"Nom,Courriel\nAnn,ann@example.org\n",
            "cols.csv:1: no email column (columns found: 'Nom', 'Courriel')",
        ),
        (
            "bare.csv",
            b"ann@example.org\nbob@example.org\n",
            "bare.csv:1: the first line looks like an address, not column names",
        ),
        (
            "old.xls",
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100,
            "is a spreadsheet workbook",
        ),
        ("binary.csv", b"email\n\x00\x01\x02", "binary.csv is not a text file"),
        ("huge.csv", b'email\n"' + b"a" * 200_000 + b'"\n', "huge.csv:2: field larger than"),
    ],
)
def test_files_that_cannot_be_imported(
    cli: Cli, newsletter: Path, name: str, content: bytes, message: str
) -> None:
    make_list(cli)
    (newsletter / name).write_bytes(content)
    fails(cli("subscribers", "import", name, "--list", "all"), message)
    assert count(newsletter, "subscriber") == 0


def test_an_xlsx_workbook_gets_told_how_to_save_as_csv(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    _xlsx(newsletter / "people.xlsx")
    fails(
        cli("subscribers", "import", "people.xlsx", "--list", "all"),
        "people.xlsx is a spreadsheet workbook (.xlsx, .xls or .ods), not a CSV file",
        "Save As > 'CSV UTF-8 (Comma delimited) (*.csv)'",
    )


def test_a_missing_file_or_a_folder(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    fails(cli("subscribers", "import", "nope.csv", "--list", "all"), "nope.csv: no such file")
    fails(cli("subscribers", "import", "issues", "--list", "all"), "is a folder, not a CSV file")


def test_a_list_that_does_not_exist(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    write(newsletter / "p.csv", "email\nann@example.org\n")
    fails(cli("subscribers", "import", "p.csv", "--list", "nope"), "no list 'nope'")
    assert count(newsletter, "subscriber") == 0


def test_ten_thousand_invalid_rows_give_a_short_report(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    write(
        newsletter / "bad.csv", "email\n" + "".join(f"person {i} at home\n" for i in range(10_000))
    )
    code, out, err = _import(cli, "bad.csv")
    assert code == 1
    assert len(out.splitlines()) < 25, out
    assert _counts(out)["invalid"] == 10_000
    assert "  bad.csv:2: 'person 0 at home' is not a valid email address (" in out
    assert "  bad.csv:11: 'person 9 at home'" in out
    assert "bad.csv:12:" not in out
    assert "  ... and 9,990 more" in out
    assert err == (
        "Error: nothing was imported from bad.csv: none of its 10,000 rows holds a valid address\n"
    )
    assert count(newsletter, "subscriber") == 0


# --- Against what the database holds -------------------------------------------------------------


def test_duplicates_against_the_database_and_updates(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    make_list(cli, "health", "Health")
    ok(add(cli, "ann@example.org", "all", "--name", "Ann", "--organisation", "NHS"))
    ok(add(cli, "bob@example.org", "health", "--name", "Bob"))
    write(
        newsletter / "p.csv",
        "email,name,organisation\nANN@example.org,,\nbob@example.org,,Police\n"
        "cy@example.org,Cy,\nann@example.org,Ann Lee,\n",
    )
    code, out, _ = _import(cli, "p.csv")
    assert code == 0
    counts = _counts(out)
    assert (counts["added"], counts["already on the list"], counts["duplicates in the file"]) == (
        2,
        1,
        1,
    )
    # The first mention wins within a file; blanks never wipe what is held.
    assert query(newsletter, "SELECT email, name, organisation FROM subscriber ORDER BY id") == [
        ("ann@example.org", "Ann", "NHS"),
        ("bob@example.org", "Bob", "Police"),
        ("cy@example.org", "Cy", ""),
    ]
    write(newsletter / "q.csv", "email,name\nann@example.org,Ann Lee\n")
    assert _counts(_import(cli, "q.csv")[1])["updated"] == 1
    assert query(newsletter, "SELECT name FROM subscriber WHERE email = 'ann@example.org'") == [
        ("Ann Lee",)
    ]
    assert on_list(newsletter, "health") == ["bob@example.org"]


def test_people_who_left_are_never_resubscribed(
    cli: Cli, newsletter: Path, settings: Settings
) -> None:
    from mailer.store import people as store
    from mailer.store.database import open_db

    make_list(cli)
    make_list(cli, "health", "Health")
    for email in (
        "unsub@example.org",
        "left@example.org",
        "bounce@example.org",
        "spam@example.org",
        "erased@example.org",
    ):
        ok(add(cli, email))
    ok(cli("subscribers", "unsubscribe", "unsub@example.org"))
    ok(cli("subscribers", "unsubscribe", "left@example.org", "--list", "all"))
    ok(cli("subscribers", "erase", "erased@example.org", "--yes"))
    with open_db(settings) as db, db.session(write=True) as session:
        store.mark_bounced(session, [store.get_subscriber(session, "bounce@example.org").id or 0])
        store.mark_complained(session, [store.get_subscriber(session, "spam@example.org").id or 0])
    write(
        newsletter / "p.csv",
        "email\nunsub@example.org\nleft@example.org\nbounce@example.org\n"
        "spam@example.org\nErased@Example.org\nnew@example.org\n",
    )

    code, out, _ = _import(cli, "p.csv")
    assert code == 0
    assert _counts(out)["suppressed"] == 5 and _counts(out)["added"] == 1
    for line in (
        "p.csv:2: unsub@example.org unsubscribed from everything on",
        "p.csv:3: left@example.org unsubscribed from this list on",
        "p.csv:4: bounce@example.org bounced on",
        "p.csv:5: spam@example.org reported a newsletter as spam on",
        "p.csv:6: erased@example.org was erased on request: skipped",
    ):
        assert line in out
    assert on_list(newsletter, "all") == ["new@example.org"]
    assert status_of(newsletter, "unsub@example.org") == "unsubscribed"

    # Into another list: only the person who left just one list may join it.
    code, out, _ = _import(cli, "p.csv", slug="health")
    assert _counts(out)["suppressed"] == 4
    assert on_list(newsletter, "health") == ["left@example.org", "new@example.org"]


def test_only_suppressed_rows_is_not_a_failure(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    ok(add(cli, "ann@example.org"))
    ok(cli("subscribers", "unsubscribe", "ann@example.org"))
    write(newsletter / "p.csv", "email\nann@example.org\nnot-an-address\n")
    code, out, _ = _import(cli, "p.csv")
    assert code == 0 and _counts(out)["suppressed"] == 1


def test_a_dry_run_reports_and_changes_nothing(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    ok(add(cli, "ann@example.org", "all", "--name", "Ann"))
    write(newsletter / "p.csv", "email,name\nann@example.org,Ann Lee\nbob@example.org,Bob\nx\n")
    before = query(newsletter, "SELECT * FROM subscriber")
    code, out, _ = _import(cli, "p.csv", "--dry-run")
    assert code == 0
    assert _counts(out) | {} == {
        "added": 1,
        "already on the list": 0,
        "updated": 1,
        "duplicates in the file": 0,
        "suppressed": 0,
        "invalid": 1,
    }
    assert out.splitlines()[-1] == "Dry run: nothing was changed."
    assert query(newsletter, "SELECT * FROM subscriber") == before
    assert count(newsletter, "membership") == 1 and count(newsletter, "consent") == 1


# --- All or nothing -------------------------------------------------------------------------------


def test_a_failure_half_way_leaves_the_database_as_it_was(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    ok(add(cli, "first@example.org"))
    # A real database error on row 2,501, after two batches of 1,000 have been written.
    if on_postgres(newsletter):
        query(
            newsletter,
            "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.email = 'boom@example.org' THEN RAISE 'simulated disk failure'; END IF; "
            "RETURN NEW; END $$",
        )
        query(
            newsletter,
            "CREATE TRIGGER boom BEFORE INSERT ON subscriber FOR EACH ROW EXECUTE FUNCTION boom()",
        )
    else:
        query(
            newsletter,
            "CREATE TRIGGER boom BEFORE INSERT ON subscriber WHEN NEW.email = 'boom@example.org' "
            "BEGIN SELECT RAISE(ABORT, 'simulated disk failure'); END",
        )
    lines = [f"p{i}@example.org" for i in range(3000)]
    lines[2500] = "boom@example.org"
    write(newsletter / "p.csv", "email\n" + "\n".join(lines) + "\n")
    before = [
        query(newsletter, f"SELECT * FROM {t}") for t in ("subscriber", "membership", "consent")
    ]

    fails(cli("subscribers", "import", "p.csv", "--list", "all"), "simulated disk failure")
    after = [
        query(newsletter, f"SELECT * FROM {t}") for t in ("subscriber", "membership", "consent")
    ]
    assert after == before


def _start_import(newsletter: Path, path: Path, **kwargs: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MAILER_SECRET_KEY": "test-secret-key-not-for-production"}
    return subprocess.Popen(
        [sys.executable, "-m", "mailer", "subscribers", "import", str(path), "--list", "all"],
        cwd=newsletter,
        env=env,
        preexec_fn=ctrl_c_works,
        **kwargs,  # type: ignore[call-overload]
    )


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["crash", "ctrl-c"])
def test_killing_an_import_half_way_leaves_the_database_as_it_was(
    cli: Cli, newsletter: Path, sig: signal.Signals
) -> None:
    """The import reads a pipe the test keeps open, so it is stopped mid-way for certain:
    by the time a write bigger than the pipe's buffer returns, the import has read (and
    written, uncommitted) tens of thousands of rows, and cannot have finished."""
    make_list(cli)
    ok(add(cli, "first@example.org"))
    fifo = newsletter / "people.csv"
    os.mkfifo(fifo)
    process = _start_import(newsletter, fifo, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with open(fifo, "wb") as pipe:
        pipe.write(b"email,name,organisation\n")
        rows = (f"person{i}@org{i % 50}.example.org,Person {i},Org\n" for i in range(40_000))
        pipe.write("".join(rows).encode())
        pipe.flush()
        # Larger than a pipe holds: returns only once the import has read nearly all above.
        pipe.write(b"".join(b"more%d@example.org,More,Org\n" % i for i in range(4_000)))
        pipe.flush()
        assert process.poll() is None
        process.send_signal(sig)
    # Closing the pipe after the signal changes nothing for a process that stopped; it only
    # ends a read the signal might otherwise have found blocked.
    _, stderr = process.communicate(timeout=120)
    if sig == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        # 130 is what shells report for a command stopped by Ctrl-C.
        assert process.returncode == 130 and b"Traceback" not in stderr, stderr

    if not on_postgres(newsletter):
        assert query(newsletter, "PRAGMA integrity_check") == [("ok",)]
    assert query(newsletter, "SELECT email FROM subscriber") == [("first@example.org",)]
    assert count(newsletter, "membership") == 1 and count(newsletter, "consent") == 1
    # The write lock went with the process: the next import succeeds.
    write(newsletter / "next.csv", "email\nnext@example.org\n")
    assert _import(cli, "next.csv")[0] == 0
    assert on_list(newsletter, "all") == ["first@example.org", "next@example.org"]


def test_a_utf8_file_with_a_few_bad_bytes_stays_utf8_and_refuses_only_those_rows(
    cli: Cli, newsletter: Path
) -> None:
    make_list(cli)
    ok(add(cli, "jose@example.org", "all", "--name", "José Álvarez"))
    data = (
        "email,name\njose@example.org,José Álvarez\n".encode()
        + b"jose@example.org,Jos\xe9 \xc1lvarez\n"
        + "zoe@example.org,Zoë Brontë\n".encode()
    )
    (newsletter / "mixed.csv").write_bytes(b"email,name\n" + data.split(b"\n", 1)[1])
    r = ok(cli("subscribers", "import", "mixed.csv", "--list", "all"))
    assert "(UTF-8, comma-separated)" in r.stdout
    assert "mixed.csv:3: this line is not valid UTF-8 text" in r.stdout
    names = dict(query(newsletter, "SELECT email, name FROM subscriber"))
    assert names == {"jose@example.org": "José Álvarez", "zoe@example.org": "Zoë Brontë"}


def test_a_windows_1252_file_is_read_as_such_and_its_accented_names_listed(
    cli: Cli, newsletter: Path
) -> None:
    make_list(cli)
    text = "email,name\nann@example.org,Ann Smith\njose@example.org,José Álvarez\n"
    (newsletter / "excel.csv").write_bytes(text.encode("cp1252"))
    r = ok(cli("subscribers", "import", "excel.csv", "--list", "all"))
    assert "read as Windows-1252" in r.stdout
    assert "Accented names to check:" in r.stdout
    assert "excel.csv:3: jose@example.org: José Álvarez" in r.stdout
    assert dict(query(newsletter, "SELECT email, name FROM subscriber"))["jose@example.org"] == (
        "José Álvarez"
    )


def test_an_unclosed_quote_is_reported_where_it_opens(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    rows = ["email,name", 'ann@example.org,"Ann Smith'] + [
        f"p{i}@example.org,Person {i}" for i in range(40)
    ]
    write(newsletter / "quote.csv", "\n".join(rows) + "\n")
    err = fails(cli("subscribers", "import", "quote.csv", "--list", "all"), "quote.csv:2:")
    assert "is not closed" in err
    assert count(newsletter, "subscriber") == 0


@pytest.mark.parametrize(
    ("header", "row", "used"),
    [
        (
            "Name,Given Name,Family Name,E-mail 1 - Type,E-mail 1 - Value,Organization 1 - Name",
            "Ann Smith,Ann,Smith,* Work,ann@example.org,Carlisle School",
            "email from 'E-mail 1 - Value'",
        ),
        (
            "First Name,Last Name,Company,E-mail Address,E-mail 2 Address,Business Phone",
            "Ann,Smith,Carlisle School,ann@example.org,ann2@example.org,01228 000000",
            "email from 'E-mail Address'",
        ),
        (
            "Email Address,First Name,Last Name,Address,Phone Number,MEMBER_RATING",
            "ann@example.org,Ann,Smith,,,2",
            "email from 'Email Address'",
        ),
    ],
    ids=["google", "outlook", "mailchimp"],
)
def test_contact_exports_import_as_they_are_and_say_which_columns_were_used(
    cli: Cli, newsletter: Path, header: str, row: str, used: str
) -> None:
    make_list(cli)
    write(newsletter / "contacts.csv", f"{header}\n{row}\n")
    r = ok(cli("subscribers", "import", "contacts.csv", "--list", "all"))
    assert used in r.stdout and "Columns ignored:" in r.stdout
    assert query(newsletter, "SELECT email, name FROM subscriber") == [
        ("ann@example.org", "Ann Smith")
    ]


def test_title_lines_above_the_column_names_are_skipped_and_reported(
    cli: Cli, newsletter: Path
) -> None:
    make_list(cli)
    write(
        newsletter / "titled.csv",
        "Safeguarding contacts 2025,,\nExported from the register,,\n,,\n"
        "Email,Name,Organisation\nann@example.org,Ann Smith,School\n",
    )
    r = ok(cli("subscribers", "import", "titled.csv", "--list", "all"))
    assert "Skipped line(s) 1, 2 above the column names" in r.stdout
    assert on_list(newsletter, "all") == ["ann@example.org"]


class _Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_a_progress_bar_shows_on_a_terminal_once_an_import_runs_past_its_delay() -> None:
    now = [100.0]
    terminal = _Terminal(tty=True)
    bar = LazyProgress(delay=1.0, clock=lambda: now[0], stream=terminal)
    bar(1_000, 30_000)
    assert terminal.getvalue() == ""  # a quick import shows nothing
    now[0] += 1.5
    bar(15_000, 30_000)
    bar(30_000, 30_000)
    bar.close()
    shown = terminal.getvalue()
    assert "Importing" in shown and "100%" in shown


def test_no_progress_bar_when_the_output_is_not_a_terminal() -> None:
    now = [100.0]
    log = _Terminal(tty=False)
    bar = LazyProgress(delay=0.0, clock=lambda: now[0], stream=log)
    now[0] += 5
    bar(30_000, 30_000)
    bar.close()
    assert log.getvalue() == ""


def test_a_quick_import_shows_no_progress_bar(cli: Cli, newsletter: Path) -> None:
    make_list(cli)
    write(newsletter / "p.csv", "email\nann@example.org\n")
    code, out, err = _import(cli, "p.csv")
    assert code == 0 and "Importing" not in out + err


def test_a_large_import_into_postgresql_keeps_the_planner_up_to_date(
    cli: Cli, newsletter: Path, postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL (in both passes), an import in one transaction refreshes the tables'
    statistics as they grow, so each batch's lookups by address use the index instead of
    reading the whole table (which made each batch slower than the last: 10,000 people took
    1.2 s into an empty table and 13.7 s once 30,000 were in it; 1.3-1.5 s each after)."""
    import sqlalchemy as sa

    with postgres.fresh_database() as url:
        monkeypatch.setenv("MAILER_DATABASE_URL", url)
        csv = newsletter / "many.csv"
        csv.write_text(
            "email,name\n"
            + "".join(f"reader{i:05d}@example.org,Reader {i}\n" for i in range(6000)),
            encoding="utf-8",
        )
        assert cli("lists", "create", "everyone", "--name", "Everyone").exit_code == 0
        r = cli("subscribers", "import", str(csv), "--list", "everyone")
        assert r.exit_code == 0, r.output
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                counts = dict(
                    conn.execute(
                        sa.text(
                            "SELECT relname, reltuples FROM pg_class "
                            "WHERE relname IN ('subscriber', 'membership')"
                        )
                    ).all()
                )
        finally:
            engine.dispose()
    # Statistics taken during the import, while most of the rows were in (not "empty").
    assert counts["subscriber"] >= 3000 and counts["membership"] >= 3000, counts
