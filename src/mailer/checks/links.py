"""Links: well-formed addresses, meaningful link text, booking links, shorteners."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from email_validator import EmailNotValidError, validate_email

from mailer.checks.registry import Context, Hit, Severity, check, quote
from mailer.render.markdown import parser

# FoundLink text that says nothing about where the link goes (WCAG 2.4.4).
GENERIC = {
    "click here",
    "click",
    "here",
    "read more",
    "more",
    "learn more",
    "find out more",
    "link",
    "this link",
    "this",
    "go",
}
SHORTENERS = {
    "bit.ly",
    "bitly.com",
    "tinyurl.com",
    "t.co",
    "goo.gl",
    "ow.ly",
    "buff.ly",
    "is.gd",
    "v.gd",
    "rebrand.ly",
    "cutt.ly",
    "shorturl.at",
    "tiny.cc",
    "lnkd.in",
    "rb.gy",
    "t.ly",
    "bl.ink",
    "s.id",
    "short.io",
    "tiny.one",
}
_TEL = re.compile(r"^\+?[0-9][0-9().\-]*$")
_HOST = re.compile(
    r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$|^localhost$"
)


@dataclass(frozen=True)
class FoundLink:
    url: str
    text: str
    # "link" (a section's links:), "markdown" (in a body), "booking" or "session".
    kind: str
    line: int | None
    section: int | None

    @property
    def written(self) -> bool:
        """Whether a person wrote the link text (the button and join links are mailer's)."""
        return self.kind in ("link", "markdown")


def _markdown_links(ctx: Context) -> Iterator[FoundLink]:
    for field in ctx.source.fields():
        if field.kind not in ("intro", "body"):
            continue
        tokens = parser().parse(field.text)
        for block in tokens:
            line = field.line_at(0)
            if block.map and field.block_line is not None:
                line = field.block_line + block.map[0]
            href: str | None = None
            text: list[str] = []
            for child in block.children or []:
                if child.type == "link_open":
                    href, text = str(child.attrGet("href") or ""), []
                elif child.type == "link_close" and href is not None:
                    yield FoundLink(href, "".join(text), "markdown", line, field.section)
                    href = None
                elif href is not None and child.type in ("text", "code_inline"):
                    text.append(child.content)


def links(ctx: Context) -> list[FoundLink]:
    """Every link in the issue, with where it is written (worked out once per run)."""
    if "links" not in ctx.memo:
        ctx.memo["links"] = _find_links(ctx)
    found: list[FoundLink] = ctx.memo["links"]
    return found


def _find_links(ctx: Context) -> list[FoundLink]:
    found: list[FoundLink] = []
    src = ctx.source
    for i, section in enumerate(ctx.issue.sections):
        for j, link in enumerate(section.links):
            found.append(
                FoundLink(link.url, link.text, "link", src.line("sections", i, "links", j), i)
            )
        if section.booking_url:
            line = src.line("sections", i, "booking_url")
            found.append(FoundLink(section.booking_url, section.booking_text, "booking", line, i))
        for j, session in enumerate(section.sessions):
            if session.url:
                line = src.line("sections", i, "sessions", j, "url")
                found.append(FoundLink(session.url, "Join the session online", "session", line, i))
    found.extend(_markdown_links(ctx))
    return sorted(found, key=lambda link: link.line or 0)


def _web(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


@check(
    "link-malformed",
    Severity.ERROR,
    "A web address is not well formed (no host, spaces, a bad port).",
    "copy the address again from the browser's address bar",
)
def urls_well_formed(ctx: Context) -> Iterator[Hit]:
    for link in links(ctx):
        if not _web(link.url):
            continue
        problem = None
        try:
            parts = urlsplit(link.url)
            host = (parts.hostname or "").lower()
            parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
        except ValueError as exc:
            problem = str(exc)
        else:
            if any(c.isspace() or c in '<>"{}|\\^`' for c in link.url):
                problem = "it contains a space or a character that must be encoded"
            elif not _HOST.match(host):
                problem = f"{host or 'the host'} is not a host name"
        if problem:
            yield Hit(f"{quote(link.url, 70)}: {problem}", link.line)


@check(
    "link-http",
    Severity.WARNING,
    "A link uses http:// where https:// is expected.",
    "use the https:// address (most sites have one; browsers warn about http://)",
)
def links_secure(ctx: Context) -> Iterator[Hit]:
    for link in links(ctx):
        if link.url.lower().startswith("http://"):
            yield Hit(f"{quote(link.url, 70)} is not https://", link.line)


@check(
    "link-mailto",
    Severity.ERROR,
    "A mailto: link does not hold a valid email address.",
    "write it as mailto:name@example.org",
)
def mailto_well_formed(ctx: Context) -> Iterator[Hit]:
    for link in links(ctx):
        if not link.url.lower().startswith("mailto:"):
            continue
        addresses = unquote(link.url[7:].partition("?")[0]).split(",")
        for address in addresses:
            try:
                validate_email(address.strip(), check_deliverability=False)
            except EmailNotValidError as exc:
                yield Hit(f"{quote(link.url, 70)}: {exc}", link.line)


@check(
    "link-tel",
    Severity.ERROR,
    "A tel: link is not a telephone number.",
    "write it as tel:+441228000000 (digits, with the country code)",
)
def tel_well_formed(ctx: Context) -> Iterator[Hit]:
    for link in links(ctx):
        if link.url.lower().startswith("tel:"):
            number = link.url[4:].replace(" ", "")
            digits = sum(c.isdigit() for c in number)
            if not _TEL.match(number) or not 7 <= digits <= 15:
                yield Hit(f"{quote(link.url)} is not a telephone number", link.line)


def _looks_like_url(text: str) -> bool:
    t = text.strip().lower()
    return t.startswith(("http://", "https://", "www.")) or bool(
        re.match(r"^[\w-]+(\.[\w-]+)+/", t)
    )


@check(
    "link-bare-url",
    Severity.ERROR,
    "FoundLink text is a web address: screen readers spell it out and it says nothing.",
    "write link text that says where the link goes",
)
def link_text_not_url(ctx: Context) -> Iterator[Hit]:
    for link in links(ctx):
        if link.written and _looks_like_url(link.text):
            yield Hit(f"the link text {quote(link.text, 70)} is a web address", link.line)


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@check(
    "link-generic",
    Severity.ERROR,
    'FoundLink text is generic ("click here", "read more"), so it makes no sense out of context.',
    "write link text that says where the link goes",
)
def link_text_meaningful(ctx: Context) -> Iterator[Hit]:
    for link in links(ctx):
        if link.written and _normal(link.text) in GENERIC:
            yield Hit(f"the link text {quote(link.text)} does not say where it goes", link.line)


@check(
    "link-text-reused",
    Severity.WARNING,
    "The same link text leads to different addresses.",
    "give each link text that names its own target",
)
def link_text_unique(ctx: Context) -> Iterator[Hit]:
    seen: dict[str, FoundLink] = {}
    for link in links(ctx):
        if not link.written or not link.text.strip():
            continue
        key = _normal(link.text)
        first = seen.setdefault(key, link)
        if first.url != link.url:
            yield Hit(
                f"the link text {quote(link.text)} goes to {quote(link.url, 50)} here and to "
                f"{quote(first.url, 50)} on line {first.line}",
                link.line,
            )


@check(
    "link-same-url",
    Severity.NOTE,
    "One address is linked with different texts.",
    "use the same words for the same place, or check the address",
)
def url_text_consistent(ctx: Context) -> Iterator[Hit]:
    seen: dict[str, FoundLink] = {}
    for link in links(ctx):
        if not link.written:
            continue
        first = seen.setdefault(link.url, link)
        if _normal(first.text) != _normal(link.text):
            yield Hit(
                f"{quote(link.url, 50)} is {quote(link.text, 40)} here and "
                f"{quote(first.text, 40)} on line {first.line}",
                link.line,
            )


@check(
    "booking-missing",
    Severity.WARNING,
    "A training section has no booking_url (and its sessions have no joining links).",
    "add booking_url: with the booking page, or a mailto: address to book by email",
)
def training_bookable(ctx: Context) -> Iterator[Hit]:
    for i, section in enumerate(ctx.issue.sections):
        if section.type != "training" or section.booking_url:
            continue
        if section.sessions and all(s.url for s in section.sessions):
            continue
        yield Hit(
            f"{quote(section.title, 50)} says nothing about how to book",
            ctx.source.line("sections", i),
        )


@check(
    "link-shortener",
    Severity.WARNING,
    "A link goes through a URL shortener: readers cannot see where it leads, and spam filters "
    "distrust it.",
    "link to the full address",
)
def no_shorteners(ctx: Context) -> Iterator[Hit]:
    for link in links(ctx):
        if not _web(link.url):
            continue
        try:
            host = (urlsplit(link.url).hostname or "").lower().removeprefix("www.")
        except ValueError:
            continue
        if host in SHORTENERS:
            yield Hit(f"{quote(link.url, 70)} is a shortened link ({host})", link.line)
