"""Commands that work on issue content: ``mailer build`` and ``mailer new``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from mailer.cli.common import settings
from mailer.errors import ContentError, InvalidInput, Problem
from mailer.formats import human_size


def register(app: typer.Typer) -> None:
    app.command("build")(build)
    app.command("new")(new)


def build(
    slugs: Annotated[
        list[str] | None, typer.Argument(help="Issue slugs: folder names under issues/.")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Build every issue, the archive page and the feed.")
    ] = False,
) -> None:
    """Build issues into email HTML, plain text and a web page under build/.

    \b
    Examples:
      mailer build 2025-11
      mailer build --all          # every issue, plus build/index.html and build/feed.xml
    """
    from mailer.content import all_slugs
    from mailer.site import build as builder

    s = settings()
    if all_:
        names = all_slugs(s)
        if not names:
            raise ContentError([Problem(str(s.issues_dir), None, "", "no issues to build")])
    elif slugs:
        names = list(dict.fromkeys(slugs))
    else:
        raise InvalidInput(
            "name at least one issue to build (e.g. mailer build 2025-11), or use --all"
        )
    files = builder.build(s, names, archive=all_)
    width = max(len(str(_rel(f.path, s.root))) for f in files)
    for f in files:
        typer.echo(f"{str(_rel(f.path, s.root)).ljust(width)}  {human_size(f.size):>9}")
    for f in files:
        if f.warning:
            typer.echo(f"Warning: {f.warning}", err=True)
    plural = "s" if len(names) != 1 else ""
    typer.echo(f"Built {len(names)} issue{plural} into {_rel(s.build_dir, s.root)}/")


def new(
    slug: Annotated[str, typer.Argument(help="The new issue's folder name, e.g. 2026-01.")],
    date: Annotated[
        str | None, typer.Option(help="The date it goes out, YYYY-MM-DD (default: today).")
    ] = None,
) -> None:
    """Create issues/SLUG/issue.yaml from a commented template.

    \b
    Example:
      mailer new 2026-01 --date 2026-01-06
    """
    from mailer.content import scaffold

    s = settings()
    day = dt.date.today()
    if date:
        try:
            day = dt.date.fromisoformat(date)
        except ValueError:
            raise ContentError(
                [Problem("--date", None, "", f"{date!r} is not a valid date (use YYYY-MM-DD)")]
            ) from None
    path = scaffold.new_issue(s, slug, day)
    typer.echo(f"Created {_rel(path, s.root)}: edit it, then run: mailer build {slug}")


def _rel(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return path
