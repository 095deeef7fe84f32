"""``mailer lists``: create, list, show and rename mailing lists."""

from __future__ import annotations

from typing import Annotated

import typer

from mailer.cli.common import settings
from mailer.formats import local_time

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="""Mailing lists, such as 'All practitioners' or 'Schools DSLs'.

\b
Example:
  mailer lists create schools-dsl --name "Schools DSLs"
  mailer lists list
""",
)

Slug = Annotated[str, typer.Argument(help="The list's short name, e.g. all-practitioners.")]


@app.command("create")
def create(
    slug: Slug,
    name: Annotated[str, typer.Option("--name", help="The name people see.")],
    description: Annotated[str, typer.Option(help="What the list is for.")] = "",
    public: Annotated[
        bool | None,
        typer.Option(
            "--public/--private",
            help="Public: offered on the sign-up form and the preferences page, and every "
            "footer offers sign-up. Asked at a terminal when not given; otherwise private.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create a mailing list.

    \b
    Example:
      mailer lists create all-practitioners --name "All practitioners" --public
    """
    import sys

    from mailer.subscribers import lists

    if public is None:
        public = sys.stdin.isatty() and typer.confirm(
            "Can anyone sign up to it on the web form (public)?", default=False
        )
    created = lists.create(settings(), slug, name, description, public=public)
    shown = " (public: offered on the sign-up form)" if created.public else ""
    typer.echo(f"Created list {created.slug}: {created.name}{shown}")


@app.command("list")
def list_() -> None:
    """Show every list with how many people are on it.

    'subscribed' people get the next issue; 'unsubscribed' counts everyone who left the list
    or everything, bounced or complained.

    \b
    Example:
      mailer lists list
    """
    from mailer.subscribers import lists

    summaries = lists.summaries(settings())
    if not summaries:
        typer.echo("No lists yet: create one with: mailer lists create SLUG --name NAME")
        return
    width = max(len("list"), *(len(s.slug) for s in summaries))
    typer.echo(f"{'list'.ljust(width)}  {'subscribed':>10}  {'unsubscribed':>12}  name")
    for s in summaries:
        typer.echo(f"{s.slug.ljust(width)}  {s.subscribed:>10,}  {s.unsubscribed:>12,}  {s.name}")


@app.command("show")
def show(slug: Slug) -> None:
    """Show one list: its name, description and how many people have each status.

    \b
    Example:
      mailer lists show all-practitioners
    """
    from mailer.subscribers import lists

    s = settings()
    detail = lists.show(s, slug)
    mailing_list, counts = detail.mailing_list, detail.counts
    typer.echo(f"list:          {mailing_list.slug}")
    typer.echo(f"name:          {mailing_list.name}")
    if mailing_list.description:
        typer.echo(f"description:   {mailing_list.description}")
    typer.echo(f"public:        {'yes (on the sign-up form)' if mailing_list.public else 'no'}")
    typer.echo(f"created:       {local_time(mailing_list.created, s.tz)}")
    for status, n in counts.items():
        label = "subscribed" if status == "active" else status.value
        typer.echo(f"{label + ':':<14} {n:,}")


@app.command("rename")
def rename(
    slug: Slug,
    name: Annotated[str, typer.Option("--name", help="The new name people see.")],
) -> None:
    """Give a list a new name; its slug stays the same.

    \b
    Example:
      mailer lists rename health --name "Health practitioners"
    """
    from mailer.subscribers import lists

    old, renamed = lists.rename(settings(), slug, name)
    typer.echo(f"Renamed list {renamed.slug}: {old!r} is now {renamed.name!r}")


@app.command("public")
def public(
    slug: Slug,
    off: Annotated[
        bool, typer.Option("--off", help="Stop offering it (people on it stay on it).")
    ] = False,
) -> None:
    """Offer a list on the sign-up form and the preferences page of mailer serve, or stop.

    \b
    Example:
      mailer lists public all-practitioners
      mailer lists public schools-dsl --off
    """
    from mailer.subscribers import lists

    changed = lists.set_public(settings(), slug, not off)
    if off:
        typer.echo(f"List {changed.slug} is no longer offered on the sign-up form.")
    else:
        typer.echo(f"List {changed.slug} is offered on the sign-up form and preferences page.")
