"""Commands about the newsletter folder itself: ``mailer init`` and ``mailer doctor``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("doctor")(doctor)


def _ask_profile() -> str:
    """The mail service, asked last; no answer (an empty line, or no more input) is
    "generic": any other SMTP server."""
    typer.echo(
        "Your mail service (microsoft365, ses, mailgun, postmark, sendgrid, smtp2go or "
        "generic) [generic]: ",
        nl=False,
    )
    answer = sys.stdin.readline().strip()
    if not answer:
        typer.echo("")
    return answer or "generic"


def _ask_privacy() -> str:
    """The privacy notice's address, checked as it is given; an empty line leaves it for
    later (`mailer doctor` reminds)."""
    from mailer.errors import MailerError
    from mailer.folder import create

    while True:
        typer.echo("Your privacy notice's web address (https://..., Enter for later): ", nl=False)
        line = sys.stdin.readline()
        try:
            return create.check_answer("privacy_url", line)
        except MailerError as exc:
            if not line:
                raise
            typer.echo(f"Error: {exc}", err=True)


def _folder_first(value: Path) -> Path:
    """The folder is checked before any question is asked."""
    from mailer.folder import create

    return create.check_folder(value)


def _checked(ctx: typer.Context, param: typer.CallbackParam, value: str) -> str:
    """An answer typed at a question is checked at once, and asked again if refused; one
    given as an option is checked with the others (nothing is written if one is refused)."""
    from mailer.errors import MailerError
    from mailer.folder import create

    assert param.name is not None
    source = ctx.get_parameter_source(param.name)
    if source is None or source.name == "PROMPT":
        try:
            create.check_answer(param.name, value)
        except MailerError as exc:
            raise typer.BadParameter(str(exc).split(": ", 1)[-1]) from None
    return value


def init(
    ctx: typer.Context,
    folder: Annotated[
        Path,
        typer.Argument(
            help="The folder to make (or fill): default, the current one.",
            callback=_folder_first,
        ),
    ] = Path("."),
    name: Annotated[
        str,
        typer.Option(
            show_default=False,
            prompt="The newsletter's name",
            callback=_checked,
            help="e.g. CSCP Newsletter",
        ),
    ] = "",
    organisation: Annotated[
        str,
        typer.Option(
            show_default=False,
            prompt="The organisation that sends it",
            callback=_checked,
            help="Who sends it.",
        ),
    ] = "",
    base_url: Annotated[
        str,
        typer.Option(
            show_default=False,
            prompt="The web address of its archive (https://...)",
            callback=_checked,
            help="Where build/ (or mailer serve) is published, e.g. https://news.example.org.",
        ),
    ] = "",
    from_address: Annotated[
        str,
        typer.Option(
            show_default=False,
            prompt="The address it is sent from",
            callback=_checked,
            help="e.g. newsletter@example.org",
        ),
    ] = "",
    postal_address: Annotated[
        str,
        typer.Option(
            show_default=False,
            prompt="The organisation's postal address (shown in every issue's footer)",
            callback=_checked,
            help="Required in every marketing email.",
        ),
    ] = "",
    profile: Annotated[
        str | None,
        typer.Option(
            show_default=False,
            help="Your mail service: microsoft365, ses, mailgun, postmark, sendgrid, smtp2go or "
            "generic (the default); sets the SMTP host, port, security and sending limits "
            "(docs/mail-services.md).",
        ),
    ] = None,
    privacy_url: Annotated[
        str | None,
        typer.Option(
            show_default=False,
            help="Your privacy notice (https://...), linked from the sign-up form and every "
            "footer; may be set later as [footer] privacy_url.",
        ),
    ] = None,
    templates: Annotated[
        bool,
        typer.Option(
            "--templates",
            help="Also copy mailer's templates into templates/, to change the design.",
        ),
    ] = False,
) -> None:
    """Make a new newsletter folder: a commented mailer.toml, issues/, .gitignore and the
    signing key of unsubscribe links.

    It asks for what only you know (name, organisation, web address, sender, postal
    address, mail service); give them as options to skip the questions. Nothing is
    written if a value is refused. The design comes from mailer's own templates unless
    you copy them with --templates and change your copies.

    \b
    Example:
      mailer init cscp-news --name "CSCP Newsletter" \\
        --organisation "Cumberland Safeguarding Children Partnership" \\
        --base-url https://news.example.org --from-address newsletter@example.org \\
        --postal-address "Cumberland House, Botchergate, Carlisle CA1 1RZ" \\
        --profile microsoft365
    """
    from mailer.folder import create

    if profile is None:
        # Asked with the other questions: at a terminal, or when they were asked too.
        source = ctx.get_parameter_source("name")
        asked = source is not None and source.name == "PROMPT"
        profile = _ask_profile() if asked or sys.stdin.isatty() else "generic"
    if privacy_url is None:
        source = ctx.get_parameter_source("name")
        asked = source is not None and source.name == "PROMPT"
        privacy_url = _ask_privacy() if asked or sys.stdin.isatty() else ""
    answers = create.Answers(
        name,
        organisation,
        base_url,
        from_address,
        postal_address,
        profile=profile,
        privacy_url=privacy_url,
    )
    made = create.create(folder, answers, templates=templates)
    shown = folder if not folder.is_absolute() else made.root
    typer.echo(f"Created the newsletter folder {made.root}:")
    for item in made.written:
        typer.echo(f"  {item}")
    if made.key.startswith("MAILER_"):
        typer.echo(f"  (the signing key comes from {made.key})")
    else:
        typer.echo(f"  {made.key}  the signing key of unsubscribe links: back it up")
    cd = f"cd {shown}\n  " if str(shown) != "." else ""
    typer.echo(
        "\nWhat next (README.md, 'A month with mailer', walks through a whole month):\n"
        f"  {cd}mailer doctor                  # check the settings; --smtp tries the login\n"
        "  mailer lists create practitioners --name Practitioners\n"
        "  mailer subscribers import people.csv --list practitioners\n"
        "  mailer new 2026-01 --date 2026-01-06\n"
        "  mailer preview 2026-01         # see it as you write it\n"
        f"Messages go to the outbox (a rehearsal) until you set [transport] in mailer.toml."
    )


def doctor(
    smtp: Annotated[
        bool,
        typer.Option(
            "--smtp", help="Also connect and log in to the mail server (nothing is sent)."
        ),
    ] = False,
    web: Annotated[
        bool,
        typer.Option(
            "--web",
            help="Also ask base_url whether this folder's mailer serve answers there, "
            "one-click unsubscribe included (as every send does first).",
        ),
    ] = False,
) -> None:
    """Check the newsletter folder, its settings, the signing key, the database, the
    templates and the transport, one line per check; exit 1 if one fails.

    \b
    Examples:
      mailer doctor
      mailer doctor --smtp           # also log in to the mail server, sending nothing
      mailer doctor --web            # does base_url answer as this folder's mailer serve?
    """
    from mailer.folder.doctor import Verdict, diagnose

    failed = False
    for line in diagnose(smtp=smtp, web=web):
        typer.echo(str(line))
        failed = failed or line.verdict == Verdict.FAIL
    if failed:
        raise typer.Exit(1)
