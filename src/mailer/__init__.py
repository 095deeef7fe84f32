"""mailer: plain content files in, a responsive newsletter out, delivered once to each reader."""

from __future__ import annotations

__version__ = "0.1.0"
