"""What a picture file really is and how big it is, read from its first bytes.

Used where pictures enter: an issue's images (:mod:`mailer.content.load`) and the logo
(:mod:`mailer.config`). No imaging library: the headers of PNG, JPEG, GIF and WebP say it.
"""

from __future__ import annotations

import struct
from pathlib import Path


def image_kind(head: bytes) -> str | None:
    """What an image file really is, from its first bytes; None if not PNG, JPEG, GIF, WebP."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def pixel_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG, JPEG or GIF file; None if its header does not say."""
    data = path.read_bytes()
    kind = image_kind(data[:16])
    if kind == "PNG" and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if kind == "GIF" and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if kind == "JPEG":
        return _jpeg_size(data)
    return None


# JPEG markers that start a frame (SOF0 to SOF15, less DHT, JPG and DAC), which holds the size.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 9 < len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:
            at += 1
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return int(width), int(height)
        at += 2 + length
    return None
