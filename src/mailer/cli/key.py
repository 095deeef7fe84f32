"""``mailer key``: the signing key's fingerprint, and rotating the key."""

from __future__ import annotations

import typer

from mailer.cli.common import settings
from mailer.config import Settings

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="""The signing key that signs every personal link and keys the suppression list.

It is MAILER_SECRET_KEY, or .mailer/secret_key, which mailer creates once (mode 0600).
Back it up: without it, unsubscribe links stop working. See docs/security.md.

\b
Example:
  mailer key fingerprint
  mailer key rotate
""",
)


@app.command("fingerprint")
def fingerprint() -> None:
    """Print the key's fingerprint (safe to share), to check a backup is the right key.

    \b
    Example:
      mailer key fingerprint
    """
    from mailer.store import keys

    s = settings()
    typer.echo(f"{keys.fingerprint(s.require_secret_key())}  ({_source(s)})")


@app.command("rotate")
def rotate() -> None:
    """Change the signing key, keeping erased people suppressed and old links working.

    With .mailer/secret_key: a new key is written there and the old one is kept in
    .mailer/secret_key.previous, so links in emails already sent keep working. With
    MAILER_SECRET_KEY: set it to the new key and MAILER_SECRET_KEY_PREVIOUS to the old one,
    then run this command. Either way the database follows the new key in one transaction.

    \b
    Example:
      mailer key rotate
    """
    from mailer.store import keyring

    s = settings()
    where = keyring.rotate(s)
    typer.echo(f"The database now uses the new signing key ({where}).")
    typer.echo("Links signed with the previous key keep working while it is kept as previous.")


def _source(s: Settings) -> str:
    return s.secret_key_from or str(s.key_file)
