"""Accessibility: alt text, colour contrast, heading levels and long capitals."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import PurePosixPath

from mailer.checks.registry import Context, Hit, Severity, check, quote
from mailer.config import CONFIG_NAME
from mailer.render.markdown import parser

# Alt text that names the kind of thing instead of saying what it shows.
GENERIC_ALT = {
    "image",
    "img",
    "photo",
    "photograph",
    "picture",
    "pic",
    "graphic",
    "logo",
    "banner",
    "icon",
    "screenshot",
    "untitled",
    "alt",
    "alt text",
}
_CAMERA_NAME = re.compile(r"^(img|dsc|dscn|pxl|photo|image|screenshot)[\s_-]*\d", re.IGNORECASE)
# WCAG 2.2 AA for normal text.
MIN_CONTRAST = 4.5
# Text and background colours the shipped templates use besides the brand's own.
WHITE = "#ffffff"
SMALL_TEXT = "#52606d"
_CAPS = re.compile(r"\b(?:[A-Z][A-Z'’&-]*[A-Z]\b[\s,.:;!?]*){4,}")


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))


@check(
    "image-alt-missing",
    Severity.ERROR,
    "An image in the built email has no alt attribute (a template that sets none).",
    'give the image alt text in the template, or alt="" if it is only decoration',
)
def images_have_alt(ctx: Context) -> Iterator[Hit]:
    found = _Images()
    found.feed(ctx.compiled.email_html)
    for attrs in found.images:
        if "alt" not in attrs:
            yield Hit(f"the image {quote(attrs.get('src') or '?', 70)} has no alt attribute")


@check(
    "image-alt-useless",
    Severity.ERROR,
    'An image\'s alt text is its file name or a word like "image" or "photo".',
    "say what the picture shows, as you would to someone on the phone",
)
def alt_text_useful(ctx: Context) -> Iterator[Hit]:
    for i, section in enumerate(ctx.issue.sections):
        image = section.image
        if image is None:
            continue
        alt = " ".join(image.alt.split()).strip(" .")
        name = PurePosixPath(image.src).name.lower()
        stem = PurePosixPath(image.src).stem.lower()
        lowered = alt.lower()
        if lowered in (name, stem, stem.replace("-", " ").replace("_", " ")):
            problem = "is the picture's file name"
        elif lowered in GENERIC_ALT or _CAMERA_NAME.match(alt):
            problem = "does not say what the picture shows"
        else:
            continue
        yield Hit(
            f"the alt text {quote(image.alt)} {problem}",
            ctx.source.line("sections", i, "image", "alt"),
        )


def luminance(colour: str) -> float:
    """Relative luminance of ``#rrggbb`` (WCAG 2.2)."""
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def _toml_line(ctx: Context, key: str) -> int | None:
    try:
        lines = (ctx.settings.root / CONFIG_NAME).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for n, text in enumerate(lines, 1):
        if re.match(rf"\s*{key}\s*=", text):
            return n
    return None


@check(
    "colour-contrast",
    Severity.ERROR,
    f"A brand colour against its background is below the WCAG AA contrast of {MIN_CONTRAST}:1.",
    "choose a darker colour in mailer.toml [brand] (check it with a contrast checker)",
)
def colours_readable(ctx: Context) -> Iterator[Hit]:
    brand = ctx.settings.brand
    pairs = [
        ("primary", brand.primary, WHITE, "titles and links on the white card"),
        ("primary", WHITE, brand.primary, "the white masthead text on it"),
        ("accent", brand.accent, WHITE, "section labels on the white card"),
        ("accent", WHITE, brand.accent, "the white button text on it"),
        ("background", SMALL_TEXT, brand.background, "the grey footer text on it"),
    ]
    for key, text, background, what in pairs:
        ratio = contrast(text, background)
        if ratio < MIN_CONTRAST:
            yield Hit(
                f"brand.{key} {getattr(brand, key)}: {what} has a contrast of {ratio:.1f}:1",
                _toml_line(ctx, key),
                file=CONFIG_NAME,
            )


@check(
    "heading-skip",
    Severity.WARNING,
    "A Markdown heading skips a level, or competes with the section title.",
    "use ### for headings inside a section body, #### below those",
)
def headings_in_order(ctx: Context) -> Iterator[Hit]:
    for field in ctx.source.fields():
        if field.kind not in ("intro", "body"):
            continue
        # The masthead is the page's h1 and each section title an h2.
        top = 1 if field.kind == "intro" else 2
        previous = top
        for token in parser().parse(field.text):
            if token.type != "heading_open":
                continue
            level = int(token.tag[1])
            line = field.line_at(0)
            if token.map and field.block_line is not None:
                line = field.block_line + token.map[0]
            if level <= top:
                yield Hit(
                    f"a level-{level} heading ({'#' * level}) in the {field.kind} competes with "
                    f"the {'masthead' if top == 1 else 'section title'}",
                    line,
                )
            elif level > previous + 1:
                yield Hit(
                    f"a level-{level} heading ({'#' * level}) in the {field.kind} follows a "
                    f"level-{previous} one, skipping a level",
                    line,
                )
            previous = max(level, top)


@check(
    "all-caps",
    Severity.NOTE,
    "Long text in capitals is hard to read and reads as shouting.",
    "write it in sentence case; use bold for emphasis",
)
def no_shouting(ctx: Context) -> Iterator[Hit]:
    for field in ctx.source.fields():
        for m in _CAPS.finditer(field.text):
            if sum(c.isalpha() for c in m.group()) >= 15:
                yield Hit(
                    f"{quote(m.group())} in the {field.kind} is in capitals",
                    field.line_at(m.start()),
                )
