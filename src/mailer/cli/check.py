"""Preflight commands: ``mailer check`` and ``mailer awareness``."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Annotated

import typer

from mailer.cli.common import settings
from mailer.errors import InvalidInput
from mailer.formats import long_date

if TYPE_CHECKING:
    from mailer.checks import Report


def register(app: typer.Typer) -> None:
    app.command("check")(check)
    app.command("awareness")(awareness)


def _date(value: str, option: str) -> dt.date:
    from mailer.typed import TypedValueError, read_date

    try:
        return read_date(value)
    except TypedValueError as exc:
        raise InvalidInput(f"{option} {value!r} is not a date ({exc})") from None


_HEADINGS = {"error": "Errors", "warning": "Warnings", "note": "Notes"}


def _print(report: Report, why: str) -> None:
    from mailer.checks import Severity

    counts = {s: len(report.of(s)) for s in Severity}
    summary = ", ".join(f"{n} {s}{'' if n == 1 else 's'}" for s, n in counts.items())
    typer.echo(
        f"{report.slug} checked for a send on {long_date(report.send_date)} ({why}): {summary}"
    )
    for severity in Severity:
        found = report.of(severity)
        if not found:
            continue
        typer.echo(f"\n{_HEADINGS[severity]}")
        for f in found:
            where = f"{f.file}:{f.line}" if f.line else f.file
            typer.echo(f"  {where}: {f.message} [{f.code}]")
            typer.echo(f"      fix: {f.hint}")


def check(
    slug: Annotated[str, typer.Argument(help="The issue to check.")],
    send_date: Annotated[
        str | None,
        typer.Option(
            "--send-date",
            metavar="YYYY-MM-DD",
            help="Judge dates as of this day (default: the scheduled date, else today).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the findings as a JSON list, for CI.")
    ] = False,
    online: Annotated[
        bool,
        typer.Option("--online", help="Also fetch every link, the web version and the images."),
    ] = False,
) -> None:
    """Check an issue for what would embarrass you once sent; exit 1 if there are errors.

    Dates against the calendar (weekdays, sessions and deadlines already past, bank
    holidays), awareness days, links, alt text and contrast, placeholders, size, subject,
    preheader and the SpamAssassin score. approve, send and the worker run the same
    checks and refuse an issue with errors. Silence a check in mailer.toml with
    [checks] ignore = ["code"]; docs/check.md lists every code.

    \b
    Examples:
      mailer check 2025-11
      mailer check 2025-11 --send-date 2025-12-01
      mailer check 2025-11 --json --online
    """
    from mailer import checks
    from mailer.render import compile_slug

    s = settings()
    compiled = compile_slug(s, slug, limits=False)
    if send_date:
        day, why = _date(send_date, "--send-date"), "--send-date"
    else:
        day, why = checks.planned_send_date(s, compiled.issue)
    report = checks.run(s, compiled, day, online=online)
    checks.record(s, report.slug)
    if as_json:
        typer.echo(json.dumps([f.as_dict() for f in report.findings], indent=2))
    else:
        _print(report, why)
    if report.errors:
        raise typer.Exit(1)


def awareness(
    month: Annotated[
        str | None,
        typer.Option("--month", metavar="YYYY-MM", help="The month to list (default: this one)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List the awareness days and campaigns of a month from mailer's calendar.

    The calendar ships with mailer: UK days relevant to safeguarding, each with its source
    and the year its date was last checked. mailer check notes the ones an issue misses,
    and mailer new suggests them.

    \b
    Examples:
      mailer awareness
      mailer awareness --month 2026-02
    """
    from mailer.checks.awareness_days import when
    from mailer.content.awareness import calendar

    if month:
        try:
            first = dt.date.fromisoformat(f"{month}-01")
        except ValueError:
            raise InvalidInput(f"--month {month!r} is not a month (use YYYY-MM)") from None
    else:
        first = settings().today().replace(day=1)
    last = (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    found = calendar().between(first, last)
    unknown = [d for d in calendar().unknown_in(first.year) if d.usual_month == first.month]
    if as_json:
        rows: list[dict[str, object]] = [
            {
                "name": o.day.name,
                "start": o.start.isoformat(),
                "end": o.end.isoformat(),
                "source": o.day.source,
                "verified": o.day.verified,
            }
            for o in found
        ]
        rows += [
            {"name": d.name, "start": None, "end": None, "source": d.source, "verified": d.verified}
            for d in unknown
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"Awareness days in {first:%B %Y}")
    if not found and not unknown:
        typer.echo("  none in mailer's calendar")
    for o in found:
        typer.echo(f"  {when(o)}: {o.day.name}")
        typer.echo(f"      {o.day.source} (checked {o.day.verified})")
    for d in unknown:
        typer.echo(f"  {d.name}: usually in {first:%B}; the {first.year} dates are not known yet")
        typer.echo(f"      check them at {d.source}")
