"""``mailer report SLUG``: what happened to the latest send of an issue."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mailer.cli.common import database, settings
from mailer.files import people_reports, write_private


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def _write(path: Path, text: str, *, private: bool) -> None:
    """Write then rename, so a reader never sees half a report; private files are 0600."""
    if private:
        write_private(path, text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
        out.write(text)
    os.replace(partial, path)


def report(
    slug: Annotated[str, typer.Argument(help="The issue whose latest send to report on.")],
    as_csv: Annotated[bool, typer.Option("--csv", help="Write report.csv as well.")] = False,
    people: Annotated[
        bool,
        typer.Option(
            "--people",
            help="Name the people who bounced, complained or left (kept out of build/).",
        ),
    ] = False,
) -> None:
    """Report on the latest send of an issue: delivered, bounced, complained, unsubscribed.

    Prints a summary and writes build/SLUG/report.html (and report.csv with --csv), with
    charts of deliveries over time and failures by reason (for an issue not published, after
    a rehearsal, next to its preview in .mailer/preview/SLUG/). The report names nobody unless
    --people is given; that version is written to .mailer/reports/SLUG/ instead, because
    build/ is what gets published.

    \b
    Examples:
      mailer report 2025-11
      mailer report 2025-11 --csv
      mailer report 2025-11 --people
    """
    from mailer.bounces import report_html
    from mailer.bounces.report import build
    from mailer.site.build import built_dir

    s = settings()
    with database() as db:
        found = build(s, db, slug, people=people)
    for line in report_html.text(found, s):
        typer.echo(line)
    folder = people_reports(s.state_dir) / slug if people else built_dir(s, slug)
    _write(folder / "report.html", report_html.html(found, s), private=people)
    written = [folder / "report.html"]
    if as_csv:
        _write(folder / "report.csv", report_html.csv_text(found), private=people)
        written.append(folder / "report.csv")
    for path in written:
        typer.echo(f"Wrote {path.relative_to(s.root)}")
