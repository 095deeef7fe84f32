"""``mailer edit``: write an issue in the browser, without touching YAML."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mailer.cli.common import settings


def register(app: typer.Typer) -> None:
    app.command("edit")(edit)


def edit(
    slug: Annotated[
        str | None, typer.Argument(help="The issue to open (default: the list of issues).")
    ] = None,
    port: Annotated[int, typer.Option(help="The port to listen on (0: any free one).")] = 0,
    browser: Annotated[
        bool, typer.Option("--browser/--no-browser", help="Open it in a web browser.")
    ] = True,
) -> None:
    """Edit an issue in your browser: forms for each kind of section, the email beside them.

    It listens on 127.0.0.1 only, at an address with a secret made for this run, so only
    you can use it. Each problem mailer build or mailer check would report is shown beside
    its field. Saving writes issues/SLUG/issue.yaml, keeping its comments and anything the
    form does not show, and refuses if the file changed on disk meanwhile. A new issue can
    be started from the list of issues. Stop it with Ctrl-C.

    \b
    Examples:
      mailer edit 2025-12
      mailer edit                 # the list of issues, and a new one
    """
    import os
    import secrets
    import socket
    import sys
    import webbrowser

    import uvicorn

    from mailer.content import ISSUE_FILE, load_issue
    from mailer.web.editor import create_editor

    s = settings()
    if slug is not None and not (s.issues_dir / slug / ISSUE_FILE).is_file():
        # A misspelt slug is refused now, with the closest one suggested.
        load_issue(s.issues_dir, slug, s.root, s.limits)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    bound = int(listener.getsockname()[1])
    token = secrets.token_urlsafe(24)
    app = create_editor(s, token=token, port=bound)
    url = f"http://127.0.0.1:{bound}/{token}/" + (f"issue/{slug}" if slug else "")
    config = uvicorn.Config(
        app, access_log=False, log_level="warning", server_header=False, lifespan="off"
    )

    class EditorServer(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                typer.echo(f"Editing on {url} (Ctrl-C to stop)")
                # Only a desktop session has a browser to open; on a server, webbrowser
                # could start a text browser in this terminal instead.
                desktop = sys.platform in ("darwin", "win32") or bool(
                    os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                )
                if browser and desktop:
                    webbrowser.open(url)

    try:
        EditorServer(config).run(sockets=[listener])
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
    typer.echo("Editor stopped.")
