"""Reading a returned message under limits, so that no message can stop the mailbox.

The standard library's parser descends into each nested ``multipart`` and
``message/rfc822`` part by recursion, so a small message of a thousand nested parts
raises ``RecursionError``; a message of many thousand parts, or one header of megabytes,
takes long to read. Before the parser sees a message, :func:`read` walks its raw bytes
once, line by line and without recursion, following the MIME structure as the parser
will (each boundary of an enclosing part ends the parts inside it), and refuses a
message that is too large, nested too deep, has too many parts or too long a header, or
takes too long. A refused message is *quarantined* by the caller, never retried.

The limits are settings of ``[bounces]`` (docs/bounces.md): ``max_message_kb``,
``max_depth``, ``max_parts`` and ``max_seconds``.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser

from mailer.errors import UnreadableMessage

# One header block (all the headers of one part) longer than this is refused.
MAX_HEADER_BYTES = 256 * 1024


@dataclass(frozen=True)
class ReadingLimits:
    """How much of a message mailer reads before it gives up and quarantines it."""

    max_bytes: int = 10 * 1024 * 1024
    max_depth: int = 16  # multipart and message parts inside each other
    max_parts: int = 500
    max_seconds: float = 10.0


class Deadline:
    """The time a message may take to read; :meth:`check` raises once it has passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.ends:
            raise UnreadableMessage(f"took longer than {self.seconds:g} seconds to read")


@dataclass
class _Frame:
    boundary: bytes | None  # b"--" + the boundary, for a multipart; None for a message part


def _content(header_block: bytes) -> tuple[str, bytes | None]:
    """The content type a header block gives, and its boundary for a multipart."""
    headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(header_block)
    kind = headers.get_content_type()
    boundary = headers.get_boundary() if kind.startswith("multipart/") else None
    if boundary is None:
        return kind, None
    return kind, b"--" + boundary.encode("utf-8", "surrogateescape").rstrip()


def check_size(size: int, limits: ReadingLimits) -> None:
    """Refuse a message of ``size`` bytes beyond the limit: said before it is downloaded
    when the mailbox tells its size (IMAP's ``RFC822.SIZE``)."""
    if size > limits.max_bytes:
        raise UnreadableMessage(f"larger than {limits.max_bytes // 1024} KB")


def check_structure(raw: bytes, limits: ReadingLimits, deadline: Deadline) -> None:
    """Refuse a message whose MIME structure is beyond ``limits``, reading it once, in a loop."""
    check_size(len(raw), limits)
    stack: list[_Frame] = []
    parts = 1
    in_headers = True  # reading the header block of the current part
    header: list[bytes] = []
    header_bytes = 0
    lines = raw.splitlines(keepends=False)
    for n, line in enumerate(lines):
        if n % 4096 == 0:
            deadline.check()
        if in_headers:
            if line.strip() == b"" and (header or line == b""):
                in_headers = False
                kind, boundary = _content(b"\n".join(header) + b"\n\n")
                header, header_bytes = [], 0
                if boundary is not None:
                    stack.append(_Frame(boundary))
                elif kind in ("message/rfc822", "message/global"):
                    # The body is a message of its own: its headers come next.
                    stack.append(_Frame(None))
                    in_headers = True
                if len(stack) > limits.max_depth:
                    raise UnreadableMessage(f"nested deeper than {limits.max_depth} parts")
                continue
            header.append(line)
            header_bytes += len(line) + 1
            if header_bytes > MAX_HEADER_BYTES:
                raise UnreadableMessage(f"a header block longer than {MAX_HEADER_BYTES // 1024} KB")
            continue
        if not line.startswith(b"--"):
            continue
        stripped = line.rstrip(b" \t")
        for depth in range(len(stack) - 1, -1, -1):
            boundary = stack[depth].boundary
            if boundary is None or not stripped.startswith(boundary):
                continue
            rest = stripped[len(boundary) :]
            if rest not in (b"", b"--"):
                continue
            del stack[depth + 1 :]
            if rest == b"--":
                stack.pop()  # the end of this multipart: what follows is its epilogue
            else:
                parts += 1
                if parts > limits.max_parts:
                    raise UnreadableMessage(f"more than {limits.max_parts} parts")
                in_headers = True
            break


def read(raw: bytes, limits: ReadingLimits, deadline: Deadline | None = None) -> Message:
    """The parsed message, or :class:`UnreadableMessage` saying which limit it is beyond."""
    deadline = deadline or Deadline(limits.max_seconds)
    # Blank lines before the first header (a message saved by hand) would make every
    # header part of the body.
    raw = raw.lstrip(b" \t\r\n")
    msg = _parsed(raw, limits, deadline)
    repaired = _with_boundary_repaired(msg)
    if repaired is not None:
        msg = _parsed(repaired, limits, deadline)
    deadline.check()
    return msg


def _parsed(raw: bytes, limits: ReadingLimits, deadline: Deadline) -> Message:
    try:
        check_structure(raw, limits, deadline)
    except UnreadableMessage:
        raise
    except Exception as exc:  # a header the check cannot read: never a traceback
        raise UnreadableMessage(f"cannot be read ({type(exc).__name__})") from None
    try:
        return email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception as exc:  # never expected after the check above; never a traceback
        raise UnreadableMessage(f"cannot be parsed ({type(exc).__name__})") from None


def _with_boundary_repaired(msg: Message) -> bytes | None:
    """A multipart whose quoted boundary runs on into other text (a header that lost its
    line break: ``boundary="x" Message-Id: <...>``), with the boundary the quotes give;
    None when the message needs no repair."""
    if not msg.get_content_type().startswith("multipart/") or msg.is_multipart():
        return None
    boundary = msg.get_param("boundary")
    found = re.match(r'\s*"([^"]{1,200})"\s*\S', boundary) if isinstance(boundary, str) else None
    body = msg.get_payload()
    if found is None or not isinstance(body, str) or f"--{found.group(1)}" not in body:
        return None
    msg.set_param("boundary", found.group(1))
    try:
        return msg.as_bytes()
    except Exception:  # a message the generator cannot write back is read as it is
        return None
