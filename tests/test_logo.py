"""The logo: a real picture in the newsletter folder, with alt text, within size limits, at
the top of the email, the web version, the archive and the training page."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import lxml.html
import pytest

from conftest import Result
from mailer import config
from mailer.errors import ConfigError


def png(width: int, height: int) -> bytes:
    """A real PNG of one colour (a plain picture is enough: its header says its size)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + b"\x5b\x2a\x86" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def with_brand(root: Path, lines: str) -> None:
    toml = (root / "mailer.toml").read_text(encoding="utf-8")
    toml = toml.replace('background = "#f3f1f6"\n', f'background = "#f3f1f6"\n{lines}\n')
    (root / "mailer.toml").write_text(toml, encoding="utf-8")


def test_the_logo_is_at_the_top_of_the_email_and_every_web_page(newsletter: Path, cli: Any) -> None:
    (newsletter / "assets").mkdir()
    (newsletter / "assets" / "logo.png").write_bytes(png(320, 80))
    with_brand(
        newsletter,
        'logo = "assets/logo.png"\nlogo_alt = "Cumberland Safeguarding Children Partnership"',
    )
    assert cli("publish", "2025-11").exit_code == 0
    result: Result = cli("build", "--all")
    assert result.exit_code == 0, result.output
    build = newsletter / "build"
    assert (build / "assets" / "logo.png").read_bytes() == png(320, 80)
    for page in ("2025-11/email.html", "2025-11/index.html", "index.html", "training/index.html"):
        doc = lxml.html.document_fromstring((build / page).read_bytes())
        first = doc.xpath("//body//img")[0]
        assert first.get("src") == "https://news.example.org/assets/logo.png", page
        assert first.get("alt") == "Cumberland Safeguarding Children Partnership", page
        assert first.get("width") == "160", page


@pytest.mark.parametrize(
    ("lines", "picture", "message"),
    [
        (
            'logo = "assets/logo.png"',
            png(320, 80),
            "brand.logo_alt: is required with a logo",
        ),
        (
            'logo = "assets/logo.png"\nlogo_alt = "CSCP"',
            png(2400, 80),
            "brand.logo: assets/logo.png is 2400×80 pixels: make it at most 2000×2000",
        ),
        (
            'logo = "assets/logo.png"\nlogo_alt = "CSCP"\nlogo_width = 400',
            png(320, 80),
            "brand.logo: assets/logo.png is 320 pixels wide, narrower than it is shown",
        ),
        (
            'logo = "assets/logo.png"\nlogo_alt = "CSCP"\nlogo_width = 900',
            png(320, 80),
            "brand.logo_width: 900 is not a width from 16 to 600 pixels",
        ),
        (
            'logo = "assets/logo.png"\nlogo_alt = "CSCP"',
            b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            "brand.logo: assets/logo.png is not a PNG, JPEG or GIF picture",
        ),
        (
            'logo = "assets/logo.png"\nlogo_alt = "CSCP"',
            png(320, 80) + b"\0" * (101 * 1024),
            "brand.logo: assets/logo.png is 101 KB: make it at most 100 KB",
        ),
        (
            'logo = "../logo.png"\nlogo_alt = "CSCP"',
            png(320, 80),
            "brand.logo: ../logo.png must be a file inside the newsletter folder",
        ),
    ],
)
def test_a_wrong_logo_is_one_line_naming_the_file_and_the_field(
    newsletter: Path, cli: Any, lines: str, picture: bytes, message: str
) -> None:
    (newsletter / "assets").mkdir()
    (newsletter / "assets" / "logo.png").write_bytes(picture)
    (newsletter.parent / "logo.png").write_bytes(picture)
    with_brand(newsletter, lines)
    with pytest.raises(ConfigError) as caught:
        config.load(newsletter)
    assert str(caught.value).startswith(f"{newsletter / 'mailer.toml'}: ")
    assert message in str(caught.value)
    result: Result = cli("build", "2025-11")
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
