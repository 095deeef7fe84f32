"""Compile an issue once into email HTML, plain text and a web page.

Pipeline: content → Markdown (markdown-it-py) → Jinja2 renders MJML from templates/ →
mjml-python → premailer (options pinned in :mod:`mailer.render.inline`) → email HTML;
the plain-text part is written from the content itself by :mod:`mailer.render.text`.
"""

from __future__ import annotations

from mailer.render.compile import CompiledIssue, compile_issue, compile_slug

__all__ = ["CompiledIssue", "compile_issue", "compile_slug"]
