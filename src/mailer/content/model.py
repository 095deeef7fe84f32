"""What an issue is: the typed objects that issue.yaml is validated into."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

# The kinds of section an issue may have, and what the editor and the docs call each.
SECTION_NAMES = {
    "news": "Partnership news",
    "training": "Training",
    "nspcc": "NSPCC Learning",
    "awareness": "Awareness",
    "text": "Free text",
}
# The line above a section's title in the email, naming its kind; free text has none (a
# letter from the chair, a thank-you, a notice that fits no other kind).
KICKERS = {**SECTION_NAMES, "text": ""}

# What an id: key may be (a course's or a session's): lower-case letters, digits and "-".
ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
# A course's derived id is its title's words, cut at a word to at most this many letters.
_COURSE_ID_MAX = 32


def course_id_of(title: str) -> str:
    """The id a course gets from its title: ``understanding-the-levels-of-need``."""
    words = re.sub(r"[^a-z0-9]+", " ", title.lower()).split()
    out = ""
    for word in words:
        longer = f"{out}-{word}" if out else word
        if len(longer) > _COURSE_ID_MAX:
            break
        out = longer
    return out or (words[0][:_COURSE_ID_MAX] if words else "course")


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
    # None when the issue gives no end time (`mailer check` warns about it).
    end: dt.time | None
    venue: str
    online: bool = False
    url: str | None = None
    note: str | None = None
    # What identifies the session across issues, so its calendar entry keeps its UID when
    # a later issue moves it; by default its first date and start time (see key).
    id: str | None = None

    @property
    def key(self) -> str:
        """The session's id within its course: its ``id:``, else ``2026-01-12-0930``."""
        return self.id or f"{self.date.isoformat()}-{self.start:%H%M}"


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
    # A training section's id: (what identifies the course across issues), if written.
    id: str | None = None

    @property
    def course_id(self) -> str:
        """The course's id: its ``id:``, else one made from its title."""
        return self.id or course_id_of(self.title)

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
