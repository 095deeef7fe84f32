"""What to do about a mistake in issue.yaml, in the words of the person who made it.

The YAML parser reports where it stopped and why in its own terms ("found character '\\t'
that cannot start any token", "mapping values are not allowed here"). A comms officer
needs the fix: use spaces, not tabs; put text containing a colon in quotes; use straight
quotes; save the file as UTF-8. Each function here turns one kind of mistake into a
message that keeps the parser's line and adds that fix.
"""

from __future__ import annotations

import re

from ruamel.yaml.error import MarkedYAMLError

# The quotes word processors type instead of the straight ones YAML understands.
CURLY = "“”‘’„"
_KEY_VALUE = re.compile(r"^(\s*(?:-\s+)?)([A-Za-z_]+):\s+(.*?)\s*$")
# Bytes that Windows-1252 uses for punctuation people type, and what they are there.
_WINDOWS_1252 = {
    0x91: "‘",
    0x92: "’",
    0x93: "“",
    0x94: "”",
    0x96: "–",
    0x97: "—",
    0x85: "…",
    0xA3: "£",
    0xE9: "é",
}


def yaml_error(exc: MarkedYAMLError, text: str) -> tuple[int | None, str]:
    """The line of a YAML syntax error, and a message that says how to fix it."""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else None
    problem = str(exc.problem or "")
    source = text.splitlines()[line - 1] if line and line <= len(text.splitlines()) else ""
    if "'\\t'" in problem or "\t" in problem:
        return line, "malformed YAML: a tab character: use spaces, not tabs, to indent"
    if "found duplicate key" in problem:
        key = re.search(r'duplicate key "([^"]*)"', problem)
        name = key.group(1) if key else "a key"
        return line, f"malformed YAML: {name} appears twice here: keep one of them"
    if any(c in source for c in CURLY) and (
        "mapping values" in problem or "expected ','" in problem
    ):
        return line, (
            'malformed YAML: use straight quotes (") around text, not curly ones (“ ”), '
            'like title: "Update: Family Help"'
        )
    if "mapping values are not allowed" in problem or (
        "expected ',' or '}'" in problem and ":" in problem
    ):
        return line, (
            "malformed YAML: put text containing a colon in quotes, like "
            f"{_quoted_example(source, ':')}"
        )
    message = f"malformed YAML: {problem}"
    # An unclosed quote or bracket is only noticed lines later, so name where it began.
    start = exc.context_mark.line + 1 if exc.context_mark else None
    if exc.context and start is not None and start != line:
        message += f" ({exc.context} that starts on line {start})"
        if "quoted scalar" in str(exc.context):
            message += ": close the quote on that line"
    elif "expected <block end>" in problem or "could not find expected ':'" in problem:
        message += (
            ": check the indentation and the colon after each key (the keys of one section "
            "line up under each other, indented with spaces)"
        )
    return line, message


def _quoted_example(source: str, mark: str) -> str:
    """``title: "Update: Family Help"``, made from the line that needs quotes."""
    found = _KEY_VALUE.match(source.strip("{} "))
    if found and mark in found.group(3):
        key, value = found.group(2), found.group(3).strip().rstrip("}").strip()
        return f'{key}: "{value}"'
    return 'title: "Update: Family Help"'


def comma_in_braces(previous_key: str | None, value: object, stray: str) -> str:
    """A key with no value inside ``{...}``: a comma in someone's text started a new key."""
    if previous_key is not None:
        example = f'{previous_key}: "{value}, {stray}"'
    else:
        example = f'venue: "Civic Centre, {stray}"'
    return (
        "a comma inside {...} starts a new key: put text containing a comma in quotes, "
        f"like {example}"
    )


def curly_quotes(raw: str) -> str | None:
    """A hint for a value wrapped in curly quotes, or None if it has none."""
    if raw[:1] in CURLY or raw[-1:] in CURLY:
        return 'use straight quotes (") around it, not curly ones (“ ”)'
    return None


def not_utf8(data: bytes, start: int) -> tuple[int, str]:
    """The line of the first byte that is not UTF-8, and what it probably is."""
    line = data.count(b"\n", 0, start) + 1
    byte = data[start]
    guess = _WINDOWS_1252.get(byte)
    what = f"byte 0x{byte:02x}" + (
        f", probably {guess} typed in a Windows program" if guess else ""
    )
    return line, f"not UTF-8 text ({what}): save the file as UTF-8"
