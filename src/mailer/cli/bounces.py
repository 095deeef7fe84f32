"""``mailer bounces``: read bounces, complaints and unsubscribe emails and act on them."""

from __future__ import annotations

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
        else:
            typer.echo(f"  {result.kind}: " + ("; ".join(result.actions) or "nothing to change"))

    s = settings()
    every = f"{s.bounces.fetch_every:g} minutes"
    with database() as db:
        # A running worker reads the mailbox too: never two readers at once.
        lease = leader.Lease(db, leader.BOUNCES, ttl=s.worker.lease)
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
    .mailer/bounces/unrecognised/. If the database cannot be written the command exits with
    75, so Postfix keeps the message and tries again.

    \b
    Example:
      mailer bounces process - --recipient "bounces+412.k3vqd7wbxm2ha@bounces.example.org" < dsn.eml
    """
    from mailer.bounces.process import keep_unrecognised
    from mailer.bounces.process import process as process_message

    if file == "-":
        raw = sys.stdin.buffer.read(MAX_BYTES + 1)
    else:
        try:
            with Path(file).open("rb") as f:
                raw = f.read(MAX_BYTES + 1)
        except OSError as exc:
            raise InvalidInput(f"{file}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise InvalidInput(f"{file}: larger than {MAX_BYTES // 1024 // 1024} MB: not a bounce")
    if not raw.strip():
        raise InvalidInput(f"{file}: is empty: give one email message")
    try:
        s = settings()
        with database() as db:
            result = process_message(
                s, db, raw, source="mailer bounces process", recipient=recipient
            )
    except (StoreError, ConfigError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(EX_TEMPFAIL) from None
    if not result.new:
        typer.echo(f"Already processed ({result.kind}); nothing changed.")
        return
    if not result.recognised:
        kept = keep_unrecognised(s, raw, result.key)
        typer.echo(f"Not understood: kept in {kept.relative_to(s.root)}")
        return
    typer.echo(f"{result.kind}: " + ("; ".join(result.actions) or "nothing to change"))
