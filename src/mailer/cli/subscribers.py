"""``mailer subscribers``: add, import, export, list, show, unsubscribe and erase people."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from mailer.cli.common import database, settings
from mailer.errors import InvalidInput, NothingImported
from mailer.files import open_private
from mailer.formats import local_time
from mailer.store.status import LawfulBasis, SubscriberStatus

if TYPE_CHECKING:
    from mailer.subscribers.csv_import import ImportNote, ImportReport

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="""The people on the mailing lists, and what is held about them.

\b
Example:
  mailer subscribers import schools.csv --list schools-dsl --dry-run
  mailer subscribers show jo.bloggs@example.org
""",
)

# How many rows of each kind of problem an import report shows before summarising.
SHOW_AT_MOST = 10

Email = Annotated[str, typer.Argument(help="The person's email address.")]
ListOption = Annotated[str, typer.Option("--list", "-l", help="The list's slug.")]
ListFilter = Annotated[str | None, typer.Option("--list", "-l", help="Only people on this list.")]
StatusFilter = Annotated[
    SubscriberStatus | None, typer.Option(help="Only people with this status.")
]
Basis = Annotated[
    LawfulBasis,
    typer.Option(help="The UK GDPR lawful basis for mailing them (see docs/subscribers.md)."),
]


@app.command("add")
def add(
    email: Email,
    list_slug: ListOption,
    name: Annotated[str, typer.Option(help="Their full name.")] = "",
    organisation: Annotated[str, typer.Option(help="Where they work.")] = "",
    basis: Basis = LawfulBasis.PUBLIC_TASK,
) -> None:
    """Add one person to a list.

    Someone who unsubscribed, bounced, complained or was erased is never added again.

    \b
    Example:
      mailer subscribers add jo.bloggs@example.org --list health --name "Jo Bloggs"
    """
    from mailer.addresses import normalise
    from mailer.store.joining import JoinOutcome
    from mailer.subscribers import roster

    with database() as db:
        outcome = roster.add(
            db, email, list_slug, name=name, organisation=organisation, basis=basis
        )
    address = normalise(email)
    if outcome is JoinOutcome.ADDED:
        typer.echo(f"Added {address} to {list_slug} (lawful basis: {basis.value}).")
    elif outcome is JoinOutcome.UPDATED:
        typer.echo(f"{address} is already on {list_slug}; updated their name and organisation.")
    else:
        typer.echo(f"{address} is already on {list_slug}; nothing changed.")


class LazyProgress:
    """A progress bar on stderr that appears only once an import has run for ``delay``
    seconds, and only on a terminal, so quick imports and logs stay clean."""

    def __init__(
        self,
        delay: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        stream: TextIO | None = None,
    ) -> None:
        self.delay, self.clock = delay, clock
        self.stream = stream or sys.stderr
        self.started = clock()
        self.bar: Any = None
        self.shown = 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if self.clock() - self.started < self.delay or not self.stream.isatty():
                return
            self.bar = typer.progressbar(length=total, label="Importing", file=self.stream)
            self.bar.__enter__()
        self.bar.update(done - self.shown)
        self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


_SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab"}


def _notes(report: ImportReport, title: str, notes: Sequence[ImportNote]) -> None:
    if not notes:
        return
    typer.echo(f"{title}:")
    for note in notes[:SHOW_AT_MOST]:
        typer.echo(f"  {report.file}:{note.line}: {note.text}")
    if len(notes) > SHOW_AT_MOST:
        typer.echo(f"  ... and {len(notes) - SHOW_AT_MOST:,} more")


def _print_report(report: ImportReport) -> None:
    typer.echo(
        f"Read {report.rows:,} row{'s' if report.rows != 1 else ''} from {report.file} "
        f"({report.encoding}, {_SEPARATORS[report.delimiter]}-separated) "
        f"for list {report.list_slug} in {report.seconds:.1f} s."
    )
    used = ", ".join(f"{field} from '{heading}'" for field, heading in report.used.items())
    typer.echo(f"  Columns used: {used}.")
    if report.ignored:
        typer.echo(f"  Columns ignored: {', '.join(repr(h) for h in report.ignored)}.")
    if report.title_lines:
        lines = ", ".join(str(n) for n in report.title_lines)
        typer.echo(
            f"  Skipped line(s) {lines} above the column names, taken to be titles: delete "
            "them from the file next time."
        )
    if report.encoding == "Windows-1252":
        typer.echo(
            "  The file is not UTF-8, so it was read as Windows-1252 (Excel's 'CSV (Comma "
            "delimited)'). Check the accented names listed below; next time save as "
            "'CSV UTF-8'."
        )
    counts = [
        ("added", report.added),
        ("already on the list", report.already),
        ("updated", report.updated),
        ("duplicates in the file", len(report.duplicates)),
        ("suppressed", len(report.suppressed)),
        ("invalid", len(report.invalid)),
    ]
    for label, n in counts:
        typer.echo(f"  {label + ':':<24}{n:>8,}")
    _notes(report, "Invalid (not imported)", report.invalid)
    _notes(report, "Suppressed (never subscribed again)", report.suppressed)
    _notes(report, "Duplicates (imported once)", report.duplicates)
    _notes(report, "Cleaned (imported without the control characters)", report.cleaned)
    _notes(report, "Accented names to check", report.accented)
    if report.dry_run:
        typer.echo("Dry run: nothing was changed.")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="A CSV file with an 'email' column.")],
    list_slug: ListOption,
    basis: Basis = LawfulBasis.PUBLIC_TASK,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would happen; change nothing.")
    ] = False,
) -> None:
    """Import people from a CSV file into a list, all or nothing.

    The file needs a header line with an 'email' column; 'name' and 'organisation' are
    optional. Google, Outlook and Mailchimp exports work as they are, and title lines above
    the column names are skipped. Commas, semicolons or tabs; UTF-8, UTF-16 or Excel's
    Windows-1252. FILE may be - for standard input. Exits with 1 if no row could be
    imported.

    \b
    Example:
      mailer subscribers import schools.csv --list schools-dsl --dry-run
      mailer subscribers import schools.csv --list schools-dsl --basis public-task
    """
    from mailer.subscribers.csv_import import import_file

    progress = LazyProgress()
    try:
        with database() as db:
            report = import_file(
                db, file, list_slug, basis=basis, dry_run=dry_run, progress=progress
            )
    finally:
        progress.close()
    _print_report(report)
    if report.nothing_imported:
        raise NothingImported(
            f"nothing was imported from {report.file}: none of its {report.rows:,} rows "
            "holds a valid address"
        )


@app.command("export")
def export(
    list_slug: ListFilter = None,
    status: StatusFilter = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
) -> None:
    """Export subscribers as CSV (email, name, organisation, status, lists, created).

    A file written with -o starts with a byte-order mark so Excel shows accents correctly.

    \b
    Example:
      mailer subscribers export --list health --status active -o health.csv
    """
    from mailer.subscribers.csv_export import export_csv

    with database() as db:
        if output is None:
            export_csv(db, sys.stdout, list_slug=list_slug, status=status)
            return
        partial = output.with_name(output.name + ".part")
        try:
            with open_private(partial, encoding="utf-8-sig") as out:
                count = export_csv(db, out, list_slug=list_slug, status=status)
            os.replace(partial, output)
        except OSError as exc:
            raise InvalidInput(
                f"cannot write {output}: {exc.strerror} (does the folder exist?)"
            ) from None
        finally:
            partial.unlink(missing_ok=True)
    typer.echo(f"Wrote {count:,} subscriber{'s' if count != 1 else ''} to {output}", err=True)


@app.command("list")
def list_(
    list_slug: ListFilter = None,
    status: StatusFilter = None,
    search: Annotated[
        str | None, typer.Option(help="Only addresses, names or organisations containing this.")
    ] = None,
) -> None:
    """List subscribers: address, status, name and organisation, and their lists.

    With --list, the status is the person's status on that list.

    \b
    Example:
      mailer subscribers list --list health --search nhs
    """
    from mailer.subscribers import roster

    count = 0
    with database() as db:
        for row in roster.rows(db, list_slug=list_slug, status=status, search=search):
            who = ", ".join(part for part in (row.name, row.organisation) if part)
            typer.echo(f"{row.email:<36} {row.status.value:<12} {who:<48} {row.lists}".rstrip())
            count += 1
    typer.echo(f"{count:,} subscriber{'s' if count != 1 else ''}")


@app.command("show")
def show(
    email: Email,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show everything held about one person, for a subject access request.

    \b
    Example:
      mailer subscribers show jo.bloggs@example.org --json > jo-bloggs-sar.json
    """
    from mailer.subscribers import roster

    s = settings()

    def when(iso: str) -> str:
        return local_time(dt.datetime.fromisoformat(iso), s.tz)

    with database() as db:
        held = roster.describe(db, email)
    if as_json:
        typer.echo(json.dumps(held, indent=2, ensure_ascii=False))
        return
    typer.echo(held["email"])
    if held["status"] == SubscriberStatus.ERASED:
        typer.echo(f"  erased on {when(held['erased_at'])}: mailer holds {held['held']}.")
        return
    for label in ("name", "organisation", "status", "created", "updated"):
        value = held[label]
        if label in ("created", "updated"):
            value = when(value)
        typer.echo(f"  {label + ':':<14}{value or '-'}")
    if not held["lists"]:
        typer.echo("  lists:        none")
    for entry in held["lists"]:
        typer.echo(
            f"  list {entry['slug']} ({entry['name']}): {entry['status']} since "
            f"{when(entry['changed_at'])}"
        )
        consent = entry["consent"]
        if consent:
            confirmed = consent["confirmed_at"]
            typer.echo(
                f"    lawful basis {consent['basis']}, source {consent['source']!r}, recorded "
                f"{when(consent['recorded_at'])}"
                + (f", confirmed {when(confirmed)}" if confirmed else "")
            )
    for event in held.get("returned_mail", []):
        code = f" {event['status']}" if event["status"] else ""
        typer.echo(
            f"  {when(event['received_at'])}: {event['kind']}{code} "
            f"(send {event['send_id']}, from {event['source']}): {event['action']}"
        )


@app.command("unsubscribe")
def unsubscribe(
    email: Annotated[
        str | None, typer.Argument(help="The person's email address (or use --token).")
    ] = None,
    list_slug: Annotated[
        str | None,
        typer.Option("--list", "-l", help="Only from this list (default: from everything)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="The token from an unsubscribe email (the mailto: in List-Unsubscribe): "
            "unsubscribes its recipient from the lists that issue went to."
        ),
    ] = None,
) -> None:
    """Unsubscribe a person from one list, or from everything. It is never undone by an
    import or by 'add'.

    With --token, the person is named by the token in an "unsubscribe TOKEN" email sent to
    the List-Unsubscribe mailto: address.

    \b
    Example:
      mailer subscribers unsubscribe jo.bloggs@example.org --list health
      mailer subscribers unsubscribe --token 12-7.Zx3kq9Lw0aBcDeFg
    """
    from mailer.addresses import normalise
    from mailer.subscribers import roster

    if token is not None:
        if email is not None or list_slug is not None:
            raise InvalidInput("give either an address (with --list) or --token, not both")
        from mailer.store.models import UnsubscribeMethod
        from mailer.subscribers import selfservice

        with database() as db:
            page = selfservice.unsubscribe(
                db, token.strip(), everything=False, method=UnsubscribeMethod.EMAIL
            )
        if not page.masked:
            typer.echo("Nothing is held about this person any more; nothing changed.")
        elif page.changed:
            typer.echo(f"Unsubscribed {page.masked} (by token).")
        else:
            typer.echo(f"{page.masked} was already unsubscribed; nothing changed.")
        return
    if email is None:
        raise InvalidInput("name the person's email address, or give --token TOKEN")
    with database() as db:
        changed = roster.unsubscribe(db, email, list_slug)
    address = normalise(email)
    where = list_slug or "everything"
    if changed:
        typer.echo(f"Unsubscribed {address} from {where}.")
    else:
        typer.echo(f"{address} was already unsubscribed from {where}; nothing changed.")


@app.command("reactivate")
def reactivate(
    email: Email,
    reason: Annotated[
        str,
        typer.Option(
            "--reason", help="Why: kept in the person's history (mailer subscribers show)."
        ),
    ],
) -> None:
    """Make someone marked bounced or complained in error active again.

    For a bounce or complaint that mailer recorded wrongly (see mailer bounces list). A
    person who complained is put back on the lists the complaint took them off. Someone
    who unsubscribed or was erased is never reactivated: they must sign up again.

    \b
    Example:
      mailer subscribers reactivate jo.bloggs@example.org --reason "IT says it exists"
    """
    from mailer.addresses import normalise
    from mailer.subscribers import roster

    with database() as db:
        was, rejoined = roster.reactivate(db, email, reason)
    again = f"; back on {', '.join(rejoined)}" if rejoined else ""
    typer.echo(f"{normalise(email)} is active again (was {was}){again}.")


@app.command("erase")
def erase(
    email: Email,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase a person: delete their personal data and list memberships for good.

    Only a keyed hash of the address is kept (needs MAILER_SECRET_KEY), so it can never be
    imported or mailed again by accident.

    \b
    Example:
      mailer subscribers erase jo.bloggs@example.org --yes
    """
    from mailer.addresses import normalise
    from mailer.subscribers import roster

    address = normalise(email)
    if not yes:
        typer.confirm(
            f"Erase {address} and everything held about them? This cannot be undone.",
            abort=True,
            err=True,
        )
    with database() as db:
        erasure = roster.erase(db, address)
    if erasure.already:
        typer.echo(f"{address} was already erased; nothing else was held.")
        return
    if not erasure.held:
        typer.echo(
            f"Nothing was held about {address}. Its keyed hash is now on the "
            "suppression list, so it can never be imported."
        )
        return
    removed = ["the address"]
    if erasure.name:
        removed.append("name")
    if erasure.organisation:
        removed.append("organisation")
    n = len(erasure.lists)
    removed.append(
        f"{n} list membership{'s' if n != 1 else ''} with consent records"
        + (f" ({', '.join(erasure.lists)})" if erasure.lists else "")
    )
    typer.echo(f"Erased {address}: removed {', '.join(removed)}.")
    typer.echo("Kept only a keyed hash of the address, so it can never be imported again.")
    for remark in erasure.remains:
        typer.echo(remark)
