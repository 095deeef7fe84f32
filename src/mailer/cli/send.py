"""Commands that deliver an issue: approve, send, pause, cancel, status."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import typer

from mailer.cli.common import SkipChecks, TargetLists, settings
from mailer.errors import InvalidInput
from mailer.formats import local_time

if TYPE_CHECKING:
    from mailer.operations.service import SendPreview
    from mailer.sending.engine import RunResult
    from mailer.store.deliveries import SendSummary

T = TypeVar("T")


def register(app: typer.Typer) -> None:
    app.command("approve")(approve)
    app.command("history")(history)
    app.command("send")(send)
    app.command("pause")(pause)
    app.command("cancel")(cancel)
    app.command("status")(status)
    app.command("sends")(sends_)


def approve(
    slug: Annotated[str, typer.Argument(help="The issue to approve.")],
    by: Annotated[
        str | None,
        typer.Option("--by", help="Who approves it (recorded with the content hash)."),
    ] = None,
    request: Annotated[
        bool,
        typer.Option(
            "--request", help="Mail the approvers in mailer.toml a link to approve it themselves."
        ),
    ] = False,
    skip_checks: SkipChecks = None,
) -> None:
    """Record that NAME approved the issue as it is now, or ask the approvers to; sends
    require an approval.

    The preflight checks (mailer check) run first, for the date the issue is scheduled
    for or else today, and an issue with errors is refused. If the issue changes
    afterwards, sending refuses until it is approved again.

    When mailer.toml names approvers ([approval] approvers), --request mails each of them
    the issue as readers will get it, with a link to approve it or ask for changes (once,
    for this content, within link_days). Then only their approvals count, and --by only
    where allow_self_approval = true.

    \b
    Examples:
      mailer approve 2025-11 --by "Sam Patel"
      mailer approve 2025-11 --request
    """
    if (by is None) == (not request):
        raise InvalidInput(f"give --by NAME or --request (e.g. mailer approve {slug} --request)")
    if request:
        from mailer.operations import signoff

        compiled, asked = signoff.request(settings(), slug, skip_checks=skip_checks)
        names = ", ".join(a.approver for a in asked)
        typer.echo(
            f"Asked {names} to approve {slug} (content {compiled.content_hash}); each link "
            f"works once, for {settings().approval.link_days} days. See: mailer history {slug}"
        )
        return
    from mailer.operations import service

    assert by is not None
    approval = service.approve(settings(), slug, by, skip_checks)
    typer.echo(f"Approved {slug} (content {approval.content_hash}) by {approval.approved_by}.")


def history(
    slug: Annotated[str, typer.Argument(help="The issue whose history to show.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List what happened to an issue on its way out: each save in mailer edit, approval
    request, approval, request for changes and send, with who, when, content hash and
    reason.

    Times are in the newsletter's time zone (UTC in --json).

    \b
    Examples:
      mailer history 2025-11
      mailer history 2025-11 --json
    """
    from mailer.operations import signoff

    s = settings()
    events = signoff.history(s, slug)
    if as_json:
        typer.echo(signoff.history_json(events))
        return
    if not events:
        typer.echo(f"Nothing has happened to {slug} yet.")
        return
    words = {
        "saved": "saved in mailer edit by",
        "requested": "approval asked of",
        "approved": "approved by",
        "changes-requested": "changes asked for by",
        "sent": "sent, approved by",
    }
    for e in events:
        line = f"{local_time(e.at, s.tz)}  {words[e.event]} {e.by or '-'}"
        if e.content_hash:
            line += f"  (content {e.content_hash})"
        if e.detail:
            line += f"  {e.detail}"
        typer.echo(line)
        if e.reason:
            for part in e.reason.splitlines():
                typer.echo(f"    {part}")


class _Bar:
    """A progress bar with rate and ETA on stderr, fed from the sender's progress calls."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.shown = 0
        self.started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if total == 0:
                return
            self.bar = typer.progressbar(
                length=total,
                label="Sending",
                show_eta=True,
                show_pos=True,
                file=sys.stderr,
                item_show_func=lambda _: self.rate(),
            )
            self.bar.__enter__()
        self.bar.current_item = done
        self.bar.update(done - self.shown)
        self.shown = done

    def rate(self) -> str:
        elapsed = time.monotonic() - self.started
        return f"{self.shown / elapsed:.0f} msg/s" if elapsed > 0 and self.shown else ""

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def _run(action: Callable[[_Bar], T]) -> T:
    """Run one mode's send with the progress bar, SIGTERM stopping it the way Ctrl-C does."""
    from mailer.sending.engine import Terminated

    def terminated(signum: int, frame: object) -> None:
        raise Terminated()

    # SIGTERM (from a service manager, or kill) stops a send the way Ctrl-C does: the
    # messages in hand are finished, the send pauses, and the summary says how to resume.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminated) if main else None
    bar = _Bar()
    try:
        return action(bar)
    finally:
        bar.close()
        if main:
            signal.signal(signal.SIGTERM, previous)


def _summary(result: RunResult) -> None:
    counts = result.counts
    failed = counts.get("failed-temporary", 0) + counts.get("failed-permanent", 0)
    left = counts.get("pending", 0) + counts.get("in-flight", 0)
    if result.unknown_in_flight:
        typer.echo(
            f"{len(result.unknown_in_flight)} message(s) were in flight when the send stopped; "
            "the server may or may not have them, so they were not sent again: "
            f"{', '.join(result.unknown_in_flight)}"
        )
    extra = "".join(
        f", {counts[key]} {label}"
        for key, label in (("unknown", "unknown"), ("skipped", "skipped"))
        if counts.get(key)
    )
    typer.echo(
        f"{result.slug}: {result.status}. {counts.get('sent', 0)} of {result.total} sent, "
        f"{failed} failed{extra}, {left} not yet sent."
    )
    if counts.get("unknown"):
        typer.echo(
            f"{counts['unknown']} copies may or may not have been delivered (see mailer status "
            f"{result.slug}); send them again, at the risk of a second copy, with: "
            f"mailer send {result.slug} --resend-unknown"
        )
    if result.status == "paused":
        typer.echo(
            f"Paused: {result.reason}. Continue with: mailer send {result.slug} --resume", err=True
        )
        raise typer.Exit(1)
    if result.status == "sending":
        typer.echo(
            f"{result.others} other worker(s) go on with the send (mailer status {result.slug}; "
            f"mailer pause {result.slug} stops them all)."
        )
    if failed:
        typer.echo(f"See who failed and why: mailer status {result.slug}")
        if counts.get("failed-temporary", 0):
            typer.echo(
                f"Try the temporary failures again: mailer send {result.slug} --retry-failed"
            )


def send(
    slug: Annotated[str, typer.Argument(help="The issue to send.")],
    lists: TargetLists = None,
    to: Annotated[
        list[str] | None, typer.Option("--to", help="Send a [PROOF] copy to this address instead.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check everything and count recipients; send nothing.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue the latest send after a crash or pause, or join it."
        ),
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Try again the recipients that failed temporarily."),
    ] = False,
    resend_unknown: Annotated[
        bool,
        typer.Option(
            "--resend-unknown",
            help="Send again the copies whose outcome is unknown (some may arrive twice).",
        ),
    ] = False,
    skip_checks: SkipChecks = None,
    spread: Annotated[
        bool,
        typer.Option(
            "--spread",
            help="Spread a send larger than the relay's day limit over days (the worker "
            "resumes it each day).",
        ),
    ] = False,
) -> None:
    """Send an approved issue to one or more lists, a proof to an address, or resume a send.

    Every subscriber gets at most one copy, and the ledger records each one, so a crash,
    a pause, Ctrl-C or SIGTERM can be resumed without repeats or gaps. The only exception
    is a copy whose outcome is unknown (the line dropped after the whole message was sent,
    or a crash): mailer status lists them, and --resend-unknown sends them again when you
    ask. A send to lists runs the preflight checks (mailer check) for today first and
    refuses an issue with errors, unless --skip-checks gives a reason, which is kept with
    the send and shown by mailer status.

    \b
    Examples:
      mailer send 2025-11 --to me@example.org          # a [PROOF] copy, no approval needed
      mailer send 2025-11 --list practitioners --dry-run
      mailer send 2025-11 --list practitioners --list schools
      mailer send 2025-11 --resume                     # after a crash, Ctrl-C or pause
      mailer send 2025-11 --retry-failed
      mailer send 2025-11 --resend-unknown             # shows the count, asks first
      mailer send 2025-11 --list practitioners --skip-checks "venue confirmed by phone"
      mailer send 2025-11 --list practitioners --spread   # over days, within the relay's limit
    """
    modes: list[tuple[bool, Callable[[], None]]] = [
        (bool(to), lambda: _proof(slug, to or [])),
        (
            bool(lists),
            lambda: _to_lists(
                slug, lists or [], yes=yes, dry_run=dry_run, skip_checks=skip_checks, spread=spread
            ),
        ),
        (resume, lambda: _resume(slug)),
        (retry_failed, lambda: _retry_failed(slug)),
        (resend_unknown, lambda: _resend_unknown(slug, yes=yes, dry_run=dry_run)),
    ]
    chosen = [mode for given, mode in modes if given]
    if len(chosen) != 1:
        raise InvalidInput(
            "give exactly one of --list, --to, --resume, --retry-failed or --resend-unknown "
            "(e.g. mailer send 2025-11 --list practitioners)"
        )
    if dry_run and not (lists or resend_unknown):
        # A dry run never sends: the modes without a confirmation step have nothing to show.
        raise InvalidInput(
            "--dry-run works with --list or --resend-unknown; mailer status shows what "
            "--resume or --retry-failed would send, and --to sends only a proof"
        )
    chosen[0]()


# `mailer send`'s modes, one function each. A mode that mails people nobody has confirmed
# yet (--list, --resend-unknown) asks through _confirm, the one confirmation step; then
# each runs one library call and prints its summary.


def _proof(slug: str, to: Sequence[str]) -> None:
    """--to: a [PROOF] copy to each address; no approval, no ledger, nothing to confirm."""
    from mailer.operations import service

    for email, reply in service.proof(settings(), slug, to):
        typer.echo(f"Proof of {slug} sent to {email} ({reply}).")


def _to_lists(
    slug: str,
    lists: Sequence[str],
    *,
    yes: bool,
    dry_run: bool,
    skip_checks: str | None,
    spread: bool,
) -> None:
    """--list: a new send to these lists, once the user has seen who gets what and said yes."""
    from mailer.operations import service

    s = settings()
    p = service.preview(s, slug, lists, skip_checks, spread=spread)
    rehearsal = " (a rehearsal through the outbox)" if s.transport.name == "outbox" else ""
    _confirm(
        _preview_in_words(slug, p, skip_checks),
        f"Send to {_people(p.recipients)} now{rehearsal}?",
        yes=yes,
        dry_run=dry_run,
    )
    _summary(
        _run(
            lambda bar: service.start(
                s, slug, lists, on_progress=bar, skip_checks=skip_checks, spread=spread
            )
        )
    )
    if s.transport.name == "outbox":
        typer.echo(
            f"Messages are in {s.outbox_dir / slug}/. This was a rehearsal: nobody was emailed, "
            "and a real send later still goes to everyone."
        )


def _resume(slug: str) -> None:
    """--resume: continue or join the latest send, confirmed when it started."""
    from mailer.operations import service

    s = settings()
    _summary(_run(lambda bar: service.resume(s, slug, on_progress=bar)))


def _retry_failed(slug: str) -> None:
    """--retry-failed: the latest send's temporary failures, whom it was confirmed for."""
    from mailer.operations import service

    s = settings()
    count, result = _run(lambda bar: service.retry_failed(s, slug, on_progress=bar))
    typer.echo(f"Retried {count} recipient(s).")
    _summary(result)


def _resend_unknown(slug: str, *, yes: bool, dry_run: bool) -> None:
    """--resend-unknown: the copies whose outcome is unknown, once the user has seen how many
    and accepted that some people may get a second copy."""
    from mailer.operations import service

    s = settings()
    found = service.unknown(s, slug)
    copies = f"{found.count} cop{'y' if found.count == 1 else 'ies'}"
    said = (
        f"{copies} of {slug} (send {found.send_id}) may or may not have been delivered; "
        "sending again means some of these people may get a second copy."
    )
    _confirm([said], f"Send these {found.count} again now?", yes=yes, dry_run=dry_run)
    count, result = _run(lambda bar: service.resend_unknown(s, slug, on_progress=bar))
    typer.echo(f"Sent again to {count} recipient(s) whose copy was unknown.")
    _summary(result)


def _confirm(said: Sequence[str], question: str, *, yes: bool, dry_run: bool = False) -> None:
    """The one confirmation step of `mailer send`: show what will be sent to whom, then ask
    (--yes answers for the user). Returns only if the send goes ahead: a dry run stops here
    (exit 0), and so does a no ("Nothing was sent.", exit 1)."""
    for line in said:
        typer.echo(line)
    if dry_run:
        typer.echo("Dry run: nothing was sent.")
        raise typer.Exit(0)
    if not yes and not typer.confirm(question):
        typer.echo("Nothing was sent.")
        raise typer.Exit(1)


def _people(count: int) -> str:
    return f"{count} {'person' if count == 1 else 'people'}"


def _preview_in_words(slug: str, p: SendPreview, skip_checks: str | None) -> list[str]:
    """Everything that decides who gets what, said before anyone is asked to say yes."""
    said = [
        f"{slug}, approved by {p.approval.approved_by}:",
        f"  Subject:    {p.compiled.issue.subject}",
        f"  From:       {p.sender}",
        f"  To:         {', '.join(p.lists)}: {_people(p.recipients)}",
        f"  Transport:  {p.transport}",
    ]
    if p.day is not None and p.day.days > 1:
        said.append(
            f"  Spread:     {p.day.left:,} now, then up to {p.day.limit:,} a day: about "
            f"{p.day.days} days (mailer worker resumes it each day)"
        )
    if p.checked is not None and p.checked.errors:
        codes = ", ".join(sorted({f.code for f in p.checked.errors}))
        said.append(
            f"Going ahead despite {len(p.checked.errors)} check error(s) ({codes}): {skip_checks}"
        )
    return said


def pause(slug: Annotated[str, typer.Argument(help="The issue whose send should stop.")]) -> None:
    """Pause a running send; resume it later with `mailer send SLUG --resume`.

    Every worker sending it, on any machine, finishes the messages it has already handed
    to the server, puts back the rows it had claimed and not started, and stops.

    \b
    Example:
      mailer pause 2025-11
    """
    from mailer.operations import service

    service.pause(settings(), slug)
    typer.echo(f"Paused {slug}. Continue with: mailer send {slug} --resume")


def cancel(
    slug: Annotated[str, typer.Argument(help="The issue whose send should be cancelled.")],
) -> None:
    """Cancel what would still send an issue: its send (new, paused or running) and its
    schedules.

    Every worker sending it stops at its next commit. Monthly schedules, which name no
    issue, are cancelled with `mailer unschedule ID`.

    \b
    Example:
      mailer cancel 2025-11
    """
    from mailer.operations import service

    done = service.cancel(settings(), slug)
    if done.send_id is not None:
        typer.echo(f"Cancelled the send of {slug} (send {done.send_id}).")
    for item in done.schedules:
        typer.echo(f"Cancelled schedule {item.id} of {slug}.")


def _print_report(
    r: SendSummary, tz: ZoneInfo, skipped: str | None = None, rehearsal: bool = False
) -> None:
    typer.echo(
        f"{r.slug}: send {r.send_id} to {', '.join(r.lists) or '-'}: {r.status}"
        + (f" ({r.reason})" if r.reason else "")
    )
    if rehearsal:
        typer.echo("  rehearsal   through the outbox: nobody was emailed")
    if skipped:
        typer.echo(f"  checks      skipped: {skipped}")
    typer.echo(f"  recipients  {r.total}")
    for key in (
        "sent",
        "pending",
        "in-flight",
        "failed-temporary",
        "failed-permanent",
        "unknown",
        "skipped",
    ):
        typer.echo(f"  {key:<17} {r.counts.get(key, 0)}")
    if r.scheduled_at:
        typer.echo(f"  scheduled   {local_time(r.scheduled_at, tz)}")
    typer.echo(f"  started     {local_time(r.started_at, tz)}")
    typer.echo(f"  finished    {local_time(r.finished_at, tz)}")
    if r.duration is not None:
        rate = f", {r.rate:.1f} messages/s" if r.rate else ""
        typer.echo(f"  duration    {r.duration:.1f} s{rate}")
    if r.workers:
        typer.echo("Workers:")
        for w in r.workers:
            typer.echo(
                f"  {w.host} pid {w.pid or '?'}: {w.connections} connection(s), "
                f"{w.in_flight} in flight, last heard from {w.heartbeat_age():.0f} s ago"
            )
    if r.in_flight:
        typer.echo("In flight (being sent, or left by a worker that stopped; the next worker")
        typer.echo("marks the latter unknown):")
        for email in r.in_flight:
            typer.echo(f"  {email}")
    if r.unknown:
        typer.echo(
            f"Outcome unknown (may have been delivered; resend with: mailer send {r.slug} "
            "--resend-unknown):"
        )
        for email in r.unknown:
            typer.echo(f"  {email}")
    if r.failed:
        typer.echo("Failed recipients:")
        for f in r.failed:
            typer.echo(f"  {f.email}  {f.status} after {f.attempts} attempt(s): {f.error}")


def status(
    slug: Annotated[str, typer.Argument(help="The issue whose sends to show.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Show every send of an issue, newest first: counts, rate, duration and failures.

    Times are in the newsletter's time zone. --json prints a list of sends, newest first.

    \b
    Examples:
      mailer status 2025-11
      mailer status 2025-11 --json
    """
    from mailer.operations import service
    from mailer.subscribers import posting

    s = settings()
    reports = service.status(s, slug)
    skipped = service.skipped_checks(s, slug)
    rehearsals = service.rehearsals(s, slug)
    if as_json:
        rows = [
            {
                **r.as_dict(),
                "checks_skipped": skipped.get(r.send_id),
                "rehearsal": r.send_id in rehearsals,
            }
            for r in reports
        ]
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    for i, report in enumerate(reports):
        if i:
            typer.echo("")
        _print_report(report, s.tz, skipped.get(report.send_id), report.send_id in rehearsals)
    well, said = posting.health(s)
    if not well or "waiting" in said:
        typer.echo(f"\nWeb mail: {said}")


def sends_(
    limit: Annotated[int, typer.Option("--limit", help="How many to show.", min=1)] = 20,
) -> None:
    """List the most recent sends across issues, newest first.

    \b
    Example:
      mailer sends
    """
    from mailer.operations import service

    s = settings()
    reports = service.recent(s, limit)
    if not reports:
        typer.echo("No sends yet: start one with: mailer send SLUG --list LIST")
        return
    for r in reports:
        sent = r.counts.get("sent", 0)
        typer.echo(
            f"{r.send_id:>4}  {r.slug:<12} {r.status:<10} {sent:>6} of {r.total:<6} "
            f"to {', '.join(r.lists) or '-'}  started {local_time(r.started_at, s.tz)}"
        )
