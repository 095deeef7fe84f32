"""``mailer db``: the database's schema revision, upgrading it, and copying it elsewhere."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from mailer.cli.common import settings

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="""The subscriber database: its schema, and moving it to PostgreSQL.

It is created and upgraded automatically on first use; upgrade and current do it on
purpose. copy moves the data into PostgreSQL (docs/scaling.md).

\b
Example:
  mailer db current
  mailer db upgrade
  mailer db copy --to postgresql+psycopg://mailer@db.example.org/mailer
""",
)


@app.command("upgrade")
def upgrade() -> None:
    """Create the database, or upgrade its schema to this mailer's latest revision.

    \b
    Example:
      mailer db upgrade
    """
    from mailer.store import migrate
    from mailer.store.database import describe

    s = settings()
    before, after = migrate.upgrade(s)
    where = describe(s.database_url)
    if before == after:
        typer.echo(f"{where} is up to date (schema revision {after}).")
    elif before is None:
        typer.echo(f"Created {where} at schema revision {after}.")
    else:
        typer.echo(f"Upgraded {where} from schema revision {before} to {after}.")


@app.command("current")
def current() -> None:
    """Show the database's schema revision, and whether it is the latest. Changes nothing.

    \b
    Example:
      mailer db current
    """
    from mailer.store import migrate
    from mailer.store.database import describe

    s = settings()
    revision = migrate.current_revision(s)
    head = migrate.head_revision()
    where = describe(s.database_url)
    if revision is None:
        typer.echo(f"{where}: no schema yet (it is created on first use, or by: mailer db upgrade)")
    elif revision == head:
        typer.echo(f"{where}: schema revision {revision} (latest)")
    else:
        typer.echo(f"{where}: schema revision {revision} (latest is {head}: run mailer db upgrade)")


@app.command("copy")
def copy(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="URL",
            help="The empty PostgreSQL database to copy into: postgresql+psycopg://user@host/db "
            "(a password is better kept in ~/.pgpass or PGPASSWORD than in the URL).",
        ),
    ],
) -> None:
    """Copy this newsletter's database (usually its SQLite file) into an empty PostgreSQL
    database, check every table's row count, and say how to use it.

    The target is migrated to this mailer's schema first; one that already holds data is
    refused. The copy is one transaction: if anything fails, the target keeps nothing.
    Stop the worker and the web app first, so nothing is written to the old database after
    the copy. The same signing key opens the copy.

    \b
    Example:
      mailer db copy --to postgresql+psycopg://mailer@127.0.0.1/mailer
    """
    from mailer.store import copy as copying
    from mailer.store.database import describe, open_db

    s = settings()
    target = copying.check_target(s, to)
    # Opening the source checks the signing key against it, as every command does: the
    # copy carries the key's fingerprint, so it must be the key the data was made with.
    open_db(s).close()
    typer.echo(f"Copying {describe(s.database_url)} into {describe(target)}")
    copied = copying.copy(s, to)
    width = max(len(c.table) for c in copied)
    for c in copied:
        typer.echo(f"  {c.table:<{width}}  {c.target:>9,} rows")
    total = sum(c.target for c in copied)
    typer.echo(f"Copied {total:,} rows in {len(copied)} tables; every count matches the source.")
    typer.echo("Next, give every mailer command, worker and web app this setting:")
    typer.echo(f"  export MAILER_DATABASE_URL={shlex.quote(describe(target))}")
    if target.password:
        typer.echo("(with the password where *** is, or kept in ~/.pgpass instead)")
