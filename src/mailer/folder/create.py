"""``mailer init``: a new newsletter folder, ready for its first issue.

It writes a commented ``mailer.toml`` (checked as every command would read it before
anything is written), a ``.gitignore`` that keeps the database, the key and the build out
of git, an empty ``issues/``, optionally a copy of the default templates to change the
design, and the signing key of unsubscribe links, once, readable only by its owner.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from mailer import config
from mailer.config import CONFIG_NAME, CONTROL, Settings
from mailer.errors import InvalidInput
from mailer.profiles import PROFILES

GITIGNORE = """\
# Written by mailer init. Never commit the database (it holds people's addresses), the
# signing key, or what mailer writes.
subscribers.sqlite
subscribers.sqlite-*
.mailer/
build/
outbox/
"""


@dataclass(frozen=True)
class Answers:
    """What only the newsletter's owner knows; everything else has a sensible default."""

    name: str
    organisation: str
    base_url: str
    from_address: str
    postal_address: str
    from_name: str = ""
    # The mail service (mailer.profiles): its host, port, security and limits.
    profile: str = "generic"
    # The privacy notice's address; may be left for later (`mailer doctor` reminds).
    privacy_url: str = ""

    def values(self) -> dict[str, str]:
        return {
            "profile": self.profile.strip().lower() or "generic",
            "name": self.name.strip(),
            "organisation": self.organisation.strip(),
            "base_url": self.base_url.strip().rstrip("/"),
            "from_name": (self.from_name or self.organisation).strip(),
            "from_address": self.from_address.strip(),
            "postal_address": self.postal_address.strip(),
        }


@dataclass(frozen=True)
class Created:
    root: Path
    settings: Settings
    # What was written, relative to the folder, in the order it was written.
    written: list[str] = field(default_factory=list)
    # Where the signing key is: the key file, or the environment variable that holds it.
    key: str = ""


def check_folder(folder: Path) -> Path:
    """``folder`` if a newsletter folder can be made there, else InvalidInput: checked
    before any question is asked."""
    root = folder.resolve()
    if (root / CONFIG_NAME).exists():
        raise InvalidInput(
            f"{root} is already a newsletter folder (it has a {CONFIG_NAME}): check it with "
            "mailer doctor"
        )
    if root.exists() and not root.is_dir():
        raise InvalidInput(f"{root} is a file, not a folder: choose another name")
    return folder


def check_answer(key: str, value: str) -> str:
    """One answer, checked as it is given (the same rules as when mailer.toml is read)."""
    option = f"--{key.replace('_', '-')}"
    text = value.strip()
    if key == "privacy_url":
        return config.https_url(text, option)
    if CONTROL.search(text):
        raise InvalidInput(f"{option}: must be one line of text")
    if not text:
        raise InvalidInput(f"{option}: must not be empty")
    if key == "base_url":
        return config.web_address(text, option)
    if key == "from_address":
        return config.sender_address(text, option)
    return text


def settings_text(answers: Answers) -> str:
    """The commented mailer.toml for these answers."""
    template = resources.files("mailer.folder").joinpath("mailer.toml.template").read_text("utf-8")
    values = answers.values()
    if values["profile"] not in PROFILES:
        raise InvalidInput(f"--profile: must be one of {', '.join(PROFILES)}")
    for key, value in values.items():
        if CONTROL.search(value):
            raise InvalidInput(f"--{key.replace('_', '-')}: must be one line of text")
        if not value:
            raise InvalidInput(f"--{key.replace('_', '-')}: must not be empty")
        # A TOML basic string: JSON's escaping of quotes and backslashes is TOML's too.
        template = template.replace(f"{{{key}_toml}}", json.dumps(value, ensure_ascii=False))
    privacy = config.https_url(answers.privacy_url, "--privacy-url")
    line = (
        f"privacy_url = {json.dumps(privacy)}"
        if privacy
        else '# privacy_url = "https://example.org/privacy"'
    )
    return template.replace("{privacy_line}", line).replace("{name}", values["name"])


def create(
    folder: Path, answers: Answers, *, templates: bool = False, env: dict[str, str] | None = None
) -> Created:
    """Make ``folder`` a newsletter folder; nothing is written if a value is refused."""
    root = check_folder(folder).resolve()
    env = dict(os.environ) if env is None else env
    text = settings_text(answers)
    # Read back exactly as every command will read it, before anything is written.
    config.from_text(root, text)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    _write_new(root / CONFIG_NAME, text)
    written.append(CONFIG_NAME)
    if not (root / ".gitignore").exists():
        (root / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
        written.append(".gitignore")
    (root / "issues").mkdir(exist_ok=True)
    written.append("issues/")
    if templates:
        written += copy_templates(root)
    settings = config.load(root, env={k: v for k, v in env.items() if k != "MAILER_ROOT"})
    settings.require_secret_key()
    key = settings.secret_key_from or str(settings.key_file.relative_to(root))
    return Created(root, settings, written, key)


def _write_new(path: Path, text: str) -> None:
    """Write a file that must not exist yet, whole or not at all."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        # A link, not a rename: it fails if the file appeared meanwhile.
        os.link(tmp, path)
    except FileExistsError:
        raise InvalidInput(f"{path} exists already: nothing was changed") from None
    finally:
        tmp.unlink(missing_ok=True)


def copy_templates(root: Path) -> list[str]:
    """Copy mailer's default templates into ``root/templates/`` to change the design; a
    file already there is kept."""
    source = resources.files("mailer.render").joinpath("templates")
    copied: list[str] = []

    def walk(node: Traversable, target: Path) -> None:
        for item in sorted(node.iterdir(), key=lambda i: i.name):
            if item.is_dir():
                walk(item, target / item.name)
            elif item.name.endswith(".j2"):
                out = target / item.name
                if not out.exists():
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(item.read_text(encoding="utf-8"), encoding="utf-8")
                    copied.append(str(out.relative_to(root)))

    walk(source, root / "templates")
    return copied
