"""The ``mailer`` command: a thin layer over the library.

Each command parses its arguments, calls one library function and prints the result. A
:class:`~mailer.errors.MailerError` becomes one line per problem on stderr and exit code 1,
never a traceback.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

# Typer vendors Click: its usage errors (a misspelt command or option) are Click's.
from typer._click.exceptions import UsageError
from typer.core import TyperGroup

from mailer import __version__
from mailer.errors import ContentError, MailerError


def _usage(exc: UsageError) -> typer.Exit:
    """A misspelt command or option: one line with Click's suggestion, and exit 1 (not
    Click's four lines of usage and exit 2)."""
    message = exc.format_message().rstrip(".").replace(". Did you mean", ": did you mean")
    where = exc.ctx.command_path if exc.ctx is not None else "mailer"
    typer.echo(f"Error: {message} (see: {where} --help)", err=True)
    return typer.Exit(1)


class MailerGroup(TyperGroup):
    """Turns every domain error raised by any command into a clean message and exit 1."""

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except UsageError as exc:
            raise _usage(exc) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            raise _usage(exc) from None
        except ContentError as exc:
            for problem in exc.problems:
                typer.echo(str(problem), err=True)
            if len(exc.problems) > 1:
                typer.echo(f"{len(exc.problems)} problems found; nothing was written.", err=True)
            raise typer.Exit(1) from None
        except MailerError as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                typer.echo(f"Error: {line}", err=True)
            raise typer.Exit(1) from None
        except OSError as exc:
            # A file or folder in the way (build/ is a file, a disk is full): one line.
            where = f"{exc.filename}: " if exc.filename else ""
            typer.echo(f"Error: {where}{exc.strerror or exc}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=MailerGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="""Turn a folder of plain content files into a newsletter and deliver it.

Run inside a newsletter folder (one with a mailer.toml).

\b
Example:
  mailer build 2025-11        # email, text and web page: .mailer/preview/2025-11/ for a draft
""",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mailer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Turn a folder of plain content files into a newsletter and deliver it."""


def _register() -> None:
    from mailer.cli import (
        bounces,
        build,
        check,
        db,
        edit,
        folder,
        key,
        lists,
        report,
        schedule,
        send,
        subscribers,
        web,
    )

    folder.register(app)
    build.register(app)
    edit.register(app)
    check.register(app)
    web.register(app)
    send.register(app)
    schedule.register(app)
    app.add_typer(lists.app, name="lists")
    app.add_typer(subscribers.app, name="subscribers")
    app.add_typer(db.app, name="db")
    app.add_typer(key.app, name="key")
    app.add_typer(bounces.app, name="bounces")
    report.register(app)


_register()


def main() -> None:
    app(prog_name="mailer")
