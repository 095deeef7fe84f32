"""Small helpers shared by the command modules."""

from __future__ import annotations

from typing import Annotated

import typer

from mailer import config
from mailer.config import Settings

# The lists a send or a schedule goes to: `--list practitioners --list schools`.
TargetLists = Annotated[
    list[str] | None, typer.Option("--list", "-l", help="A list to send to (repeat for more).")
]


def settings() -> Settings:
    """The settings of the newsletter folder around the current directory."""
    return config.load()


def human_size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 / 1024:.1f} MB"
