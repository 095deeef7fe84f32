"""Commands for scheduled sends: schedule, schedules, unschedule, worker."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from mailer.cli.common import SkipChecks, TargetLists, database, settings
from mailer.clock import utcnow
from mailer.errors import ScheduleError
from mailer.formats import local_time

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from mailer.store.models import Schedule

# Seconds between the worker's looks at the database.
DEFAULT_POLL = 30.0


def register(app: typer.Typer) -> None:
    app.command("schedule")(schedule)
    app.command("schedules")(schedules)
    app.command("unschedule")(unschedule)
    app.command("worker")(worker)


def schedule(
    slug: Annotated[str | None, typer.Argument(help="The issue to send at --at.")] = None,
    lists: TargetLists = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help='When, in the newsletter\'s time zone: "2025-12-02 09:00" or "2/12/2025 9am".',
        ),
    ] = None,
    monthly: Annotated[
        str | None,
        typer.Option(
            "--monthly",
            help='A monthly slot: "1st tue 09:00", "first Tuesday 9am", "last fri 2.30pm", '
            '"15 09:00", "last day 09:00".',
        ),
    ] = None,
    skip_checks: SkipChecks = None,
) -> None:
    """Schedule an approved issue for a time, or a monthly slot; `mailer worker` sends them.

    Times are in the newsletter's time zone (mailer.toml `timezone`, default Europe/London)
    and stored in UTC. A monthly slot sends the approved, not-yet-sent issue dated in that
    month; if there is none it sends nothing and records why.

    The preflight checks (mailer check) run now for the day of --at, and again when the
    worker sends; an issue with errors is refused unless --skip-checks gives a reason.

    \b
    Examples:
      mailer schedule 2025-11 --list practitioners --at "2025-12-02 09:00"
      mailer schedule --monthly "1st tue 09:00" --list practitioners
      mailer schedule 2025-11 -l schools --at "2025-12-02 09:00" --skip-checks "agreed"
    """
    s = settings()
    if bool(at) == bool(monthly):
        raise ScheduleError("give either SLUG with --at, or --monthly without a slug")
    if monthly and slug:
        raise ScheduleError("--monthly picks the issue of each month itself: leave out the slug")
    if monthly and skip_checks is not None:
        raise ScheduleError(
            "--skip-checks is for one issue: a monthly slot sends a different issue each month "
            "(schedule that issue with SLUG --at instead)"
        )
    if at and not slug:
        raise ScheduleError(
            "name the issue to send at that time, e.g. mailer schedule 2025-11 --at ..."
        )
    from mailer.scheduling import rules, runner
    from mailer.scheduling.worker import setup_logging

    setup_logging(s, stderr=False)
    with database() as db:
        if at:
            assert slug is not None
            item = runner.schedule_once(s, db, slug, lists or [], at, utcnow(), skip_checks)
            what = slug
        else:
            assert monthly is not None
            item = runner.schedule_monthly(s, db, monthly, lists or [], utcnow())
            what = f"monthly {item.rule}"
    assert item.next_run_at is not None
    if item.rule:
        typer.echo(f"That is {rules.parse_rule(item.rule).describe()} ({s.timezone} time).")
    typer.echo(
        f"Scheduled {what} (schedule {item.id}) to {', '.join(json.loads(item.lists))}: next run "
        f"{rules.in_words(item.next_run_at, s.tz)} ({item.next_run_at:%Y-%m-%d %H:%M} UTC)."
    )
    if item.checks_skipped:
        typer.echo(f"The preflight checks will be skipped: {item.checks_skipped}")
    typer.echo("Make sure `mailer worker` is running (see docs/scheduling.md).")


def _row(item: Schedule, tz: ZoneInfo) -> dict[str, object]:
    return {
        "id": item.id,
        "kind": str(item.kind),
        "issue": item.slug,
        "rule": item.rule,
        "lists": json.loads(item.lists),
        "status": str(item.status),
        "next_run_local": local_time(item.next_run_at, tz) if item.next_run_at else None,
        "next_run_utc": item.next_run_at.isoformat() if item.next_run_at else None,
        "last_run_utc": item.last_run_at.isoformat() if item.last_run_at else None,
        "last_outcome": item.last_outcome or None,
        "checks_skipped": item.checks_skipped,
        "failing_since_local": local_time(item.failing_since, tz) if item.failing_since else None,
        "cancel_with": (
            f"mailer cancel {item.slug}" if item.slug else f"mailer unschedule {item.id}"
        ),
    }


def schedules(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List every schedule with its next run (local time and UTC), lists and last outcome.

    \b
    Examples:
      mailer schedules
      mailer schedules --json
    """
    from mailer.scheduling import runner

    s = settings()
    with database() as db:
        items = runner.all_schedules(db)
    rows = [_row(item, s.tz) for item in items]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(
            'No schedules. Add one with: mailer schedule SLUG --list LIST --at "YYYY-MM-DD HH:MM"'
        )
        return
    for r in rows:
        what = r["issue"] if r["kind"] == "once" else f"monthly {r['rule']}"
        typer.echo(f"{r['id']:>3}  {what}  to {', '.join(r['lists'])}  [{r['status']}]")  # type: ignore[arg-type]
        if r["next_run_local"]:
            typer.echo(f"     next run  {r['next_run_local']}  ({r['next_run_utc']})")
        if r["failing_since_local"]:
            typer.echo(
                f"     FAILING   since {r['failing_since_local']}: fix it, and the worker sends it"
            )
        if r["last_outcome"]:
            typer.echo(f"     last      {r['last_outcome']}")
        if r["status"] == "active":
            typer.echo(f"     cancel    {r['cancel_with']}")


def unschedule(
    schedule_id: Annotated[
        int, typer.Argument(help="The schedule's number (see mailer schedules).")
    ],
) -> None:
    """Cancel a schedule; a running worker drops it within a minute.

    \b
    Example:
      mailer unschedule 3
    """
    from mailer.scheduling import runner
    from mailer.scheduling.worker import setup_logging

    s = settings()
    setup_logging(s, stderr=False)
    with database() as db:
        runner.unschedule(db, schedule_id)
    typer.echo(f"Unscheduled {schedule_id}.")


def worker(
    once: Annotated[
        bool, typer.Option("--once", help="Run whatever is due now, then exit (for cron).")
    ] = False,
    poll: Annotated[
        float, typer.Option("--poll", help="Seconds between looks at the database.", min=0.2)
    ] = DEFAULT_POLL,
) -> None:
    """Run scheduled sends: stays running and checks the schedules every 30 seconds.

    Logs one line per event on stderr and in .mailer/mailer.log. Stop it with Ctrl-C or
    SIGTERM; a send in progress pauses and the next worker resumes it. See
    docs/scheduling.md for running it under systemd, or from cron with --once.

    \b
    Examples:
      mailer worker
      mailer worker --once          # from cron, e.g. every 5 minutes
    """
    from mailer.scheduling.worker import Worker, setup_logging

    s = settings()
    setup_logging(s)
    w = Worker(s, poll=poll)
    try:
        if once:
            outcomes = w.run_once()
            for o in outcomes:
                typer.echo(str(o))
            if not outcomes:
                typer.echo("Nothing was due.")
            problems = [o for o in outcomes if o.problem]
            if problems:
                # Cron and systemd timers report a non-zero exit: the newsletter did not go out.
                typer.echo(
                    f"{len(problems)} problem(s) need a person: see mailer schedules and "
                    ".mailer/mailer.log",
                    err=True,
                )
                raise typer.Exit(1)
            return
        w.run_forever()
    finally:
        # Give the database its connections back (a PostgreSQL server counts them).
        w.database.close()
