"""``mailer bounces``: read bounces, complaints and unsubscribe emails and act on them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mailer.cli.common import database, settings
from mailer.errors import ConfigError, InvalidInput, StoreError

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="""Bounces, spam complaints and unsubscribe emails: read them and act on them.

See docs/bounces.md for the policy and for how to route the mail to mailer.

\b
Example:
  mailer bounces fetch
  mailer bounces list --unverified
""",
)

# A Postfix pipe (and sendmail-style delivery agents) keep a message and try again later
# when the command exits with EX_TEMPFAIL, instead of returning it to its sender.
EX_TEMPFAIL = 75
MAX_BYTES = 50 * 1024 * 1024


@app.command("fetch")
def fetch(
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Read at most this many messages.")
    ] = None,
) -> None:
    """Read the bounce mailbox over IMAP and act on every message in it.

    Each message is moved to the processed folder once its result is saved, or to the
    unrecognised folder if mailer cannot understand it; nothing is deleted.

    The mailbox password comes from MAILER_BOUNCES_IMAP_PASSWORD.

    \b
    Examples:
      mailer bounces fetch
      mailer bounces fetch --limit 100
    """
    from mailer.bounces.imap import fetch as fetch_mailbox
    from mailer.bounces.process import Processed
    from mailer.scheduling import leader

    def saved(result: Processed) -> None:
        # One line per message as soon as its result is saved, so a long run shows progress.
        if not result.new:
            typer.echo(f"  {result.kind}: processed before; filing it")
        elif result.quarantined:
            typer.echo(f"  quarantined: {result.why}")
        elif not result.verified and result.recognised:
            typer.echo(f"  {result.kind}: unverified; changed nobody")
        else:
            typer.echo(f"  {result.kind}: " + ("; ".join(result.actions) or "nothing to change"))

    s = settings()
    every = f"{s.bounces.fetch_every:g} minutes"
    with database() as db:
        # A running worker reads the mailbox too: never two readers at once.
        lease = leader.JobLease(db, leader.BOUNCES, ttl=s.worker.lease)
        with leader.exclusively(lease, f"a running worker reads it every {every}"):
            summary = fetch_mailbox(s, db, limit=limit, on_committed=saved)
    if not summary.read:
        typer.echo(f"No messages in {s.bounces.folder}.")
        return
    typer.echo(
        f"Read {summary.read} message{'s' if summary.read != 1 else ''}: {summary.new} new, "
        f"{summary.read - summary.new} processed before."
    )
    for kind, n in sorted(summary.kinds.items()):
        typer.echo(f"  {kind + ':':<14}{n:>6}")
    if summary.unrecognised:
        typer.echo(
            f"{summary.unrecognised} message(s) could not be understood: see the "
            f"{s.bounces.unrecognised_folder} folder."
        )
    if summary.unverified:
        typer.echo(
            f"{summary.unverified} report(s) named no copy mailer signed and changed nobody: "
            "see mailer bounces list --unverified."
        )
    if summary.quarantined:
        typer.echo(
            f"{summary.quarantined} message(s) could not be read within the limits: moved to "
            f"the {s.bounces.quarantine_folder} folder."
        )


@app.command("process")
def process(
    file: Annotated[
        str, typer.Argument(help="A message file (.eml), or - to read it from standard input.")
    ] = "-",
    recipient: Annotated[
        str | None,
        typer.Option(
            "--recipient", help="The address it was delivered to (Postfix: ${original_recipient})."
        ),
    ] = None,
) -> None:
    """Read one message (a bounce, complaint or unsubscribe email) and act on it.

    For a Postfix pipe or an LMTP-fed folder. A message mailer cannot understand is kept in
    .mailer/bounces/unrecognised/, and one it cannot read within the limits in
    .mailer/bounces/quarantine/; both exit 0. If the database cannot be written the command
    exits with 75, so Postfix keeps the message and tries again.

    \b
    Example:
      mailer bounces process - --recipient "bounces+412.k3vqd7wbxm2ha@bounces.example.org" < dsn.eml
    """
    from mailer.bounces.process import keep
    from mailer.bounces.process import process as process_message

    raw = _read(file)
    try:
        s = settings()
        with database() as db:
            result = process_message(
                s, db, raw, source="mailer bounces process", recipient=recipient
            )
    except (StoreError, ConfigError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(EX_TEMPFAIL) from None
    if result.quarantined:
        kept = keep(s, raw, result.key, "quarantine")
        typer.echo(f"Quarantined ({result.why}): kept in {kept.relative_to(s.root)}")
        return
    if not result.new:
        typer.echo(f"Already processed ({result.kind}); nothing changed.")
        return
    if not result.recognised:
        kept = keep(s, raw, result.key, "unrecognised")
        typer.echo(f"Not understood: kept in {kept.relative_to(s.root)}")
        return
    if not result.verified:
        typer.echo(
            f"{result.kind}: unverified (no copy mailer signed is named); changed nobody. "
            "See mailer bounces list --unverified."
        )
        return
    typer.echo(f"{result.kind}: " + ("; ".join(result.actions) or "nothing to change"))


def _read(file: str) -> bytes:
    """One message from a file or standard input; a message too large is cut, never refused
    (the reader quarantines it)."""
    if file == "-":
        raw = sys.stdin.buffer.read(MAX_BYTES + 1)
        # Postfix's pipe writes the whole message: take the rest too, and drop it.
        while len(raw) > MAX_BYTES and sys.stdin.buffer.read(1024 * 1024):
            pass
    else:
        try:
            with Path(file).open("rb") as f:
                raw = f.read(MAX_BYTES + 1)
        except OSError as exc:
            raise InvalidInput(f"{file}: cannot read: {exc.strerror}") from None
    if not raw.strip():
        raise InvalidInput(f"{file}: is empty: give one email message")
    return raw


@app.command("list")
def list_(
    unverified: Annotated[
        bool, typer.Option("--unverified", help="Only reports that changed nobody.")
    ] = False,
    quarantined: Annotated[
        bool, typer.Option("--quarantined", help="Only messages that could not be read.")
    ] = False,
    people: Annotated[
        bool, typer.Option("--people", help="Show addresses in full (they are masked).")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List what came back lately, newest first: verified or not, what it said, what was done.

    An unverified report names an address but no copy mailer signed: it changed nobody.
    Apply one by hand with mailer bounces apply ID once you are sure it is genuine.

    \b
    Examples:
      mailer bounces list --unverified
      mailer bounces list --quarantined
      mailer bounces list --people --limit 200
    """
    from mailer.bounces.listing import recent

    s = settings()
    with database() as db:
        rows = recent(db, unverified=unverified, quarantined=quarantined, limit=limit)
    shown = [r.as_dict(people=people, tz=s.tz) for r in rows]
    if as_json:
        typer.echo(json.dumps(shown, indent=2, ensure_ascii=False))
        return
    if not shown:
        typer.echo("Nothing came back yet." if not (unverified or quarantined) else "None.")
        return
    for row in shown:
        code = f" {row['status']}" if row["status"] else ""
        who = row["address"] or "-"
        trust = "verified" if row["verified"] else "UNVERIFIED"
        if row["kind"] == "quarantined":
            trust = "not read"
        typer.echo(
            f"{row['id']:>6}  {row['received']}  {row['kind']}{code}  {trust}  {who}"
            + (f"  (send {row['send_id']})" if row["send_id"] else "")
        )
        detail = row["reason"][:160]
        if detail:
            typer.echo(f"        said: {detail}")
        typer.echo(f"        from {row['source']}: {row['action'] or 'none'}")


@app.command("apply")
def apply(
    event_id: Annotated[int, typer.Argument(help="The ID that mailer bounces list shows.")],
) -> None:
    """Act on an unverified report by hand, as if mailer had signed it.

    The report is tied to the newest copy sent to the address it names, and the policy
    applies (docs/bounces.md). Do it only when you know the report is genuine.

    \b
    Example:
      mailer bounces apply 1289
    """
    import getpass

    from mailer.bounces.listing import apply as apply_event

    with database() as db:
        kind, done = apply_event(settings(), db, event_id, by=getpass.getuser())
    typer.echo(f"Applied {kind} report {event_id}: {done}.")


@app.command("explain")
def explain(
    file: Annotated[
        str, typer.Argument(help="A message file (.eml), or - to read it from standard input.")
    ],
    recipient: Annotated[
        str | None,
        typer.Option("--recipient", help="The address it was delivered to, if known."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show what mailer reads from one returned message and what it would do; changes nothing.

    Per recipient: the address, the category (hard, full, soft, delayed, policy,
    complaint, unsubscribe, auto-reply...), the status code and the server's words; then
    whether a MAC mailer made ties it to a copy. Works outside a newsletter folder too
    (without checking MACs).

    \b
    Example:
      mailer bounces explain returned.eml --json
    """
    from mailer.bounces.explain import explain as explain_message
    from mailer.errors import ConfigError as NoFolder

    raw = _read(file)
    try:
        s = settings()
    except NoFolder:
        s = None
    found = explain_message(s, raw, recipient)
    if as_json:
        typer.echo(json.dumps(found.as_dict(), indent=2, ensure_ascii=False))
        return
    if found.quarantined:
        typer.echo(f"Unreadable: {found.quarantined}.")
        typer.echo(f"mailer would {found.would}.")
        return
    typer.echo(f"Kind of message: {found.shape}")
    if found.subject:
        typer.echo(f"Subject: {found.subject[:200]}")
    if found.sender:
        typer.echo(f"From: {found.sender}")
    if not found.findings:
        typer.echo("Recipients: none found")
    for f in found.findings:
        code = f" {f['status']}" if f["status"] else ""
        typer.echo(f"  {f['address'] or '(no address)'}: {f['category']}{code}")
        if f["reason"]:
            typer.echo(f"    said: {f['reason'][:200]}")
    if found.authenticated_by:
        typer.echo(f"Authenticated by its {found.authenticated_by}: {found.copy}")
    else:
        typer.echo("Authenticated by: nothing mailer signed")
    for note in found.notes:
        typer.echo(f"Note: {note}")
    typer.echo(f"mailer would {found.would}.")
