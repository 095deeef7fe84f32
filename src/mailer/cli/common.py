"""Small helpers shared by the command modules.

Command modules import only typer and light parts of mailer at the top; each command
imports the library code it calls inside its function, so ``mailer --help`` starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mailer import config
from mailer.config import Settings

if TYPE_CHECKING:
    from mailer.store.database import Database

# The lists a send or a schedule goes to: `--list practitioners --list schools`.
TargetLists = Annotated[
    list[str] | None, typer.Option("--list", "-l", help="A list to send to (repeat for more).")
]

# Send despite errors from the preflight checks; the reason is kept with the send.
SkipChecks = Annotated[
    str | None,
    typer.Option(
        "--skip-checks",
        metavar="REASON",
        help="Go ahead despite errors from mailer check or from the web check of base_url; "
        "the reason is recorded.",
    ),
]


def settings() -> Settings:
    """The settings of the newsletter folder around the current directory."""
    return config.load()


def database() -> Database:
    """The newsletter folder's database, opened (and upgraded if need be)."""
    from mailer.store.database import open_db

    return open_db(settings())
