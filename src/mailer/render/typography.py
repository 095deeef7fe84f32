"""What the newsletter does to the words people type: typographic quotes and telephone links.

Straight quotes and apostrophes become typographic ones (“…”, ‘…’, it’s) in the text of the
email, the web version and the plain-text part, with markdown-it's own smart-quotes
algorithm, so a pair is matched across bold and italic text. Never in what is not prose:
web addresses (``href``), code spans and blocks, HTML attributes (``alt`` text is left as
written), an address shown as its own link text (``<https://…>``), or the subject line.

UK telephone numbers (:mod:`mailer.content.phones`) in Markdown text, venues, notes and
the footer's contact line become ``tel:`` links in E.164 form; a number already inside a
link is left alone. In the plain-text part such a link is the number itself.
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.rules_core.smartquotes import process_inlines
from markdown_it.token import Token
from markupsafe import Markup, escape

from mailer.content import phones

# Marks the link tokens this module makes, so the text part prints the number alone.
TEL_META = "mailer_tel"
QUOTES = "“”‘’"


def _typography(state: StateCore) -> None:
    """Typographic quotes in every inline run, except the text of an address link."""
    for token in state.tokens:
        if token.type != "inline" or not token.children:
            continue
        hidden: list[Token] = []
        in_autolink = False
        for child in token.children:
            if child.type == "link_open":
                in_autolink = child.markup == "autolink"
            elif child.type == "link_close":
                in_autolink = False
            elif child.type == "text" and in_autolink:
                child.type = "text_address"
                hidden.append(child)
        process_inlines(token.children, state)
        for child in hidden:
            child.type = "text"


def _phone_links(state: StateCore) -> None:
    """Every telephone number in text outside a link becomes a ``tel:`` link."""
    for token in state.tokens:
        if token.type != "inline" or not token.children:
            continue
        out: list[Token] = []
        depth = 0
        for child in token.children:
            if child.type == "link_open":
                depth += 1
            elif child.type == "link_close":
                depth -= 1
            if child.type != "text" or depth or not any(phones.find(child.content)):
                out.append(child)
                continue
            at = 0
            for m in phones.find(child.content):
                if m.start() > at:
                    out.append(_text(child.content[at : m.start()]))
                link = Token("link_open", "a", 1, attrs={"href": phones.tel_href(m.group())})
                link.meta = {TEL_META: True}
                out += [link, _text(m.group()), Token("link_close", "a", -1)]
                at = m.end()
            if at < len(child.content):
                out.append(_text(child.content[at:]))
        token.children = out


def _text(content: str) -> Token:
    token = Token("text", "", 0)
    token.content = content
    return token


def install(md: MarkdownIt) -> None:
    """Add both rules to a parser (after inline parsing, before text runs are joined)."""
    md.options["quotes"] = QUOTES
    md.core.ruler.after("inline", "mailer_typography", _typography)
    md.core.ruler.after("mailer_typography", "mailer_phone_links", _phone_links)


def smart_quotes(text: str, md: MarkdownIt) -> str:
    """``text`` (plain, not Markdown) with typographic quotes, by the same algorithm."""
    if "'" not in text and '"' not in text:
        return text
    token = _text(text)
    process_inlines([token], StateCore("", md, {}))
    return token.content


def typo(text: str, md: MarkdownIt) -> Markup:
    """Plain text for HTML: escaped, with typographic quotes."""
    return escape(smart_quotes(text, md))


def prose(text: str, md: MarkdownIt) -> Markup:
    """Plain text for HTML with typographic quotes and linked telephone numbers."""
    text = smart_quotes(text, md)
    out: list[str] = []
    at = 0
    for m in phones.find(text):
        out.append(escape(text[at : m.start()]))
        out.append(Markup('<a href="{}">{}</a>').format(phones.tel_href(m.group()), m.group()))
        at = m.end()
    out.append(escape(text[at:]))
    return Markup("").join(out)
