"""``mailer db``: the database's schema revision, and upgrading it."""

from __future__ import annotations

import typer

from mailer.cli.common import settings

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="""The subscriber database's schema.

It is created and upgraded automatically on first use; these commands do it on purpose.

\b
Example:
  mailer db current
  mailer db upgrade
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
