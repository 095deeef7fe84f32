"""Commands for the public web side: ``mailer serve`` and ``mailer publish``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mailer.cli.common import settings
from mailer.errors import ConfigError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("publish")(publish)


def serve(
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The port to listen on.")] = 8000,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            help="Reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are trusted "
            "(comma-separated addresses or networks); mailer.toml [web] trusted_proxies "
            "when not given."
        ),
    ] = None,
    rehearsal: Annotated[
        bool,
        typer.Option(
            "--rehearsal",
            help="Serve with the outbox transport: confirmation emails are written to "
            "outbox/_web/ and no mail leaves, which every page that promises an email says.",
        ),
    ] = False,
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

    Put it behind a reverse proxy that serves base_url over https (docs/deploy/ has the
    systemd unit and the nginx site). With the outbox transport it refuses to start unless
    --rehearsal says that no mail should leave. Stop it with Ctrl-C.

    \b
    Example:
      mailer serve --port 8000
      mailer serve --port 8000 --rehearsal   # try the pages; mail goes to outbox/_web/
      mailer serve --port 8000 --max-connections 2000
    """
    import logging

    import uvicorn

    from mailer.web import create_app
    from mailer.web.limits import throttle_logging

    s = settings()
    rehearsing = s.transport.name == "outbox"
    if rehearsing and not rehearsal:
        raise ConfigError(
            "the transport is outbox, so sign-up and manage emails would never leave "
            "(they go to outbox/_web/): set the mail settings (MAILER_TRANSPORT=smtp and "
            "MAILER_SMTP_*, see docs/sending.md), or add --rehearsal to try the pages"
        )
    trusted = forwarded_allow_ips or ",".join(s.web.trusted_proxies)
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
        forwarded_allow_ips=trusted,
        log_level="warning",
        server_header=False,
        limit_concurrency=max_connections,
        backlog=backlog,
    )
    note = (
        " - rehearsal: no mail leaves, confirmation emails go to outbox/_web/" if rehearsing else ""
    )
    throttle_logging()  # after uvicorn.Config, which gives uvicorn's loggers their handlers

    class WebServer(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                # Said once the socket listens, so a supervisor (or a test) can wait for it.
                typer.echo(
                    f"Serving {s.name} on http://{host}:{port}/ (public address {s.base_url}/)"
                    + note
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
