"""Per-issue settings: what one issue says differently from mailer.toml.

An issue may name another organisation, sender's name, footer or brand colours, for a
special edition or for the issues from before a rename (the 2021-12 example was sent by
the Cumbria partnership before it became Cumberland's):

.. code-block:: yaml

    settings:
      organisation: Cumbria Safeguarding Children Partnership
      sender: {from_name: Cumbria Safeguarding Children Partnership}
      footer: {postal_address: "Cumbria House, 117 Botchergate, Carlisle CA1 1RD"}
      brand: {primary: "#1d4f91"}

Values are checked as mailer.toml's are (one line, no control character; an address that
is an address; a colour like #1d4f91), and the approval covers them: they are part of the
compiled issue's envelope (From, Reply-To, organisation) and of its HTML.
"""

from __future__ import annotations

import dataclasses
import json

from mailer.config import CONTROL, Settings, is_address, is_colour
from mailer.content.model import Issue

# What an issue may set, by table, as in mailer.toml.
KEYS: dict[str, tuple[str, ...]] = {
    "": ("organisation",),
    "sender": ("from_name", "reply_to"),
    "footer": ("postal_address", "contact", "why"),
    "brand": ("primary", "accent", "background"),
}
MAX_LENGTH = 300


def problem(key: str, value: str) -> str | None:
    """What is wrong with ``value`` for the setting ``key`` (``"brand.primary"``), or None."""
    if CONTROL.search(value):
        return "must be one line with no control characters"
    if not value.strip():
        return "must not be empty"
    if len(value) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters"
    if key == "sender.reply_to" and not is_address(value):
        return f"{value!r} is not one email address (like news@example.org)"
    if key.startswith("brand.") and not is_colour(value):
        return f"{value!r} is not a colour like #5b2a86"
    return None


def with_overrides(settings: Settings, overrides: str | dict[str, str] | None) -> Settings:
    """``settings`` with the per-issue values (``{"footer.why": ...}``, or its JSON) applied."""
    if not overrides:
        return settings
    values: dict[str, str] = json.loads(overrides) if isinstance(overrides, str) else overrides
    top: dict[str, object] = {}
    tables: dict[str, dict[str, str]] = {}
    for key, value in values.items():
        table, _, name = key.rpartition(".")
        if table:
            tables.setdefault(table, {})[name] = value
        else:
            top[name] = value
    for table, changes in tables.items():
        top[table] = dataclasses.replace(getattr(settings, table), **changes)
    return dataclasses.replace(settings, **top)  # type: ignore[arg-type]


def issue_settings(settings: Settings, issue: Issue) -> Settings:
    """The settings ``issue`` is compiled and sent with: mailer.toml's, with its own."""
    return with_overrides(settings, dict(issue.overrides))


def overrides_json(issue: Issue) -> str | None:
    """The issue's own settings as JSON, to freeze with a send; None if it has none."""
    return json.dumps(dict(issue.overrides), sort_keys=True) if issue.overrides else None
