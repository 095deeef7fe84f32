"""Commands for the public web side: ``mailer serve`` and ``mailer publish``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mailer.cli.common import settings


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("publish")(publish)


def serve(
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The port to listen on.")] = 8000,
    forwarded_allow_ips: Annotated[
        str,
        typer.Option(
            help="Reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are trusted "
            "(comma-separated addresses, or '*')."
        ),
    ] = "127.0.0.1",
    max_connections: Annotated[
        int,
        typer.Option(
            min=1,
            help="Connections served at once; past it, new requests get 503 at once. Keep it "
            "well under the file-descriptor limit (LimitNOFILE).",
        ),
    ] = 1000,
    backlog: Annotated[
        int, typer.Option(min=1, help="Connections the system holds waiting to be accepted.")
    ] = 512,
) -> None:
    """Serve the archive, the issues and the personal pages: unsubscribe, preferences,
    sign-up with confirmation, and manage by email.

    Put it behind a reverse proxy that serves base_url over https (see docs/web.md).
    Stop it with Ctrl-C.

    \b
    Example:
      mailer serve --port 8000
      mailer serve --port 8000 --max-connections 2000
    """
    import logging

    import uvicorn

    from mailer.web import create_app
    from mailer.web.limits import throttle_logging

    s = settings()
    app = create_app(s, send_mail=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # uvicorn's own access log prints each path, tokens included: mailer.web.access logs
    # the route pattern instead.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        log_level="warning",
        server_header=False,
        limit_concurrency=max_connections,
        backlog=backlog,
    )
    throttle_logging()  # after uvicorn.Config, which gives uvicorn's loggers their handlers

    class WebServer(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                # Said once the socket listens, so a supervisor (or a test) can wait for it.
                typer.echo(
                    f"Serving {s.name} on http://{host}:{port}/ (public address {s.base_url}/)"
                )

    WebServer(config).run()


def publish(
    slug: Annotated[str, typer.Argument(help="The issue to show in the archive and the feed.")],
) -> None:
    """Put an issue in the public archive and feed without sending it.

    An issue is also published when its first send to a list starts; until then it is a
    draft, left out of the archive and the feed (static or served).

    \b
    Example:
      mailer publish 2025-11
      mailer build --all          # rebuild the static archive and feed
    """
    from mailer.site import build

    if build.publish(settings(), slug):
        typer.echo(f"Published {slug}: it is in the archive and the feed.")
    else:
        typer.echo(f"{slug} was already published; nothing changed.")
