"""Commands that work on issue content: ``mailer build``, ``mailer new`` and ``mailer
preview``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mailer.cli.common import settings
from mailer.errors import ContentError, InvalidInput, Problem
from mailer.formats import human_size

if TYPE_CHECKING:
    from mailer.config import Settings


def register(app: typer.Typer) -> None:
    app.command("build")(build)
    app.command("new")(new)
    app.command("preview")(preview)


def build(
    slugs: Annotated[
        list[str] | None, typer.Argument(help="Issue slugs: folder names under issues/.")
    ] = None,
    all_: Annotated[
        bool,
        typer.Option(
            "--all", help="Build every issue, the archive page, the feed and the training calendar."
        ),
    ] = False,
) -> None:
    """Build issues into email HTML, plain text and a web page under build/.

    A draft (an issue not yet published or sent to a list) is built into the preview
    root, .mailer/preview/SLUG/, outside build/: a copy of build/ never carries it.

    With --all, a draft that does not load is reported (one line: file, field) and
    skipped; the rest is built, and the command exits 1 at the end.

    \b
    Examples:
      mailer build 2025-11
      mailer build --all          # every issue, the archive, feed.xml and training.ics
    """
    from mailer.content import all_slugs
    from mailer.site import build as builder

    s = settings()
    broken: list[Problem] = []
    if all_:
        names = all_slugs(s)
        if not names:
            raise ContentError([Problem(str(s.issues_dir), None, "", "no issues to build")])
        names, broken = builder.buildable(s, names)
    elif slugs:
        names = list(dict.fromkeys(slugs))
    else:
        raise InvalidInput(
            "name at least one issue to build (e.g. mailer build 2025-11), or use --all"
        )
    files = builder.build(s, names, archive=all_)
    # The calendar files of an issue's sessions are many: one line says them all.
    shown: list[tuple[str, str]] = []
    calendars: dict[Path, list[int]] = {}
    for f in files:
        if f.path.suffix == ".ics" and f.path.parent != s.build_dir:
            if f.path.parent not in calendars:
                shown.append((str(_rel(f.path.parent / "*.ics", s.root)), ""))
            calendars.setdefault(f.path.parent, []).append(f.size)
        else:
            shown.append((str(_rel(f.path, s.root)), human_size(f.size)))
    for folder, sizes in calendars.items():
        name = str(_rel(folder / "*.ics", s.root))
        n = len(sizes)
        shown = [
            (p, f"{human_size(sum(sizes))} in {n} calendar file{'s' if n != 1 else ''}")
            if p == name
            else (p, size)
            for p, size in shown
        ]
    width = max(len(p) for p, _ in shown)
    for p, size in shown:
        typer.echo(f"{p.ljust(width)}  {size:>9}")
    for f in files:
        if f.warning:
            typer.echo(f"Warning: {f.warning}", err=True)
    public = builder.published_slugs(s)
    typer.echo(_built_line(s, sum(n in public for n in names), sum(n not in public for n in names)))
    for problem in broken:
        typer.echo(f"Skipped a draft that does not load: {problem}", err=True)
    if broken:
        raise typer.Exit(1)


def _built_line(s: Settings, published: int, drafts: int) -> str:
    """``Built 1 issue into build/ and 1 draft into .mailer/preview/``: where each went."""

    def count(n: int, word: str) -> str:
        return f"{n} {word}{'s' if n != 1 else ''}"

    parts = []
    if published or not drafts:
        parts.append(f"{count(published, 'issue')} into {_rel(s.build_dir, s.root)}/")
    if drafts:
        parts.append(f"{count(drafts, 'draft')} into {_rel(s.preview_dir, s.root)}/")
    return "Built " + " and ".join(parts)


def new(
    slug: Annotated[str, typer.Argument(help="The new issue's folder name, e.g. 2026-01.")],
    date: Annotated[
        str | None,
        typer.Option(
            help="The date it goes out: 2026-01-06, 6/1/2026 or 6 January 2026 (default: today)."
        ),
    ] = None,
    previous: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="PREVIOUS",
            help="Start from this issue: keep its sections, drop what is past by --date.",
        ),
    ] = None,
) -> None:
    """Create issues/SLUG/issue.yaml from a commented template, or from an earlier issue.

    With --from, the sections of the earlier issue are kept (with their images), and
    training sessions, awareness days and closing dates that are past by the new date are
    dropped; every line to check is marked with a REVIEW comment.

    \b
    Examples:
      mailer new 2026-01 --date 2026-01-06
      mailer new 2026-02 --date 2026-02-03 --from 2026-01
    """
    from mailer.content import carry, scaffold
    from mailer.typed import TypedValueError, read_date

    s = settings()
    day = s.today()
    if date:
        try:
            day = read_date(date)
        except TypedValueError as exc:
            raise ContentError(
                [Problem("--date", None, "", f"{date!r} is not a valid date ({exc})")]
            ) from None
    if previous:
        path = carry.start_from(s, slug, previous, day)
        typer.echo(
            f"Created {_rel(path, s.root)} from {previous}: check the lines marked REVIEW, "
            f"then run: mailer build {slug}"
        )
        return
    path = scaffold.new_issue(s, slug, day)
    typer.echo(f"Created {_rel(path, s.root)}: edit it, then run: mailer build {slug}")


def _rel(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return path


def preview(
    slug: Annotated[
        str | None, typer.Argument(help="The issue to show (default: the list of issues).")
    ] = None,
    port: Annotated[int, typer.Option(help="The port to listen on (0: any free one).")] = 8100,
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    browser: Annotated[
        bool, typer.Option("--browser/--no-browser", help="Open it in a web browser.")
    ] = True,
) -> None:
    """Show an issue as readers will see it, and rebuild it whenever you save.

    A local web page shows the email at phone and desktop widths, its text part and its
    web version, with the images from the issue folder. It reloads itself when issue.yaml,
    an image, a template or mailer.toml changes, and shows any mistake with its line.
    Stop it with Ctrl-C. Nothing is written to build/.

    \b
    Example:
      mailer preview 2025-11
    """
    import os
    import sys
    import webbrowser

    from mailer.content import ISSUE_FILE, load_issue
    from mailer.site.preview import PREFIX, serve

    s = settings()
    if slug is not None and not (s.issues_dir / slug / ISSUE_FILE).is_file():
        # A misspelt slug is refused now, with the closest one suggested; a mistake inside
        # the issue is shown in the page instead, until it is fixed.
        load_issue(s.issues_dir, slug, s.root, s.limits)
    server, watched = serve(s.root, host, port)
    url = watched.base_url + (f"{PREFIX}/{slug}/" if slug else "/")
    typer.echo(f"Previewing on {url} (Ctrl-C to stop)")
    # Only a desktop session has a browser to open; on a server, webbrowser could start a
    # text browser in this terminal instead.
    desktop = sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if browser and desktop:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        watched.stop()
        server.server_close()
    typer.echo("Preview stopped.")
