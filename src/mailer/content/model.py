"""What an issue is: the typed objects that issue.yaml is validated into."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Link:
    text: str
    url: str


@dataclass(frozen=True)
class Image:
    src: str
    alt: str
    width: int = 600
    # Set for images stored in the issue folder; None for https URLs.
    path: Path | None = None


@dataclass(frozen=True)
class Session:
    date: dt.date
    start: dt.time
    end: dt.time
    venue: str
    online: bool = False
    url: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Section:
    type: str
    title: str
    body: str = ""
    image: Image | None = None
    links: tuple[Link, ...] = ()
    closes: dt.date | None = None
    # Awareness sections: a single day (date) or a campaign (start .. end).
    date: dt.date | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    # Training sections.
    booking_url: str | None = None
    booking_text: str = "Book your place"
    sessions: tuple[Session, ...] = ()

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")[:60] or "section"


@dataclass(frozen=True)
class Issue:
    slug: str
    folder: Path
    subject: str
    date: dt.date
    sections: tuple[Section, ...]
    preheader: str = ""
    intro: str = ""
    images: tuple[Path, ...] = field(default=())
    # What this issue says differently from mailer.toml: ("footer.why", "...") pairs, in
    # the order written (see mailer.content.overrides).
    overrides: tuple[tuple[str, str], ...] = ()
