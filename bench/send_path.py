"""Benchmark: making one recipient's message, as ratios taken in the same run.

Run it from the repository: ``.venv/bin/python bench/send_path.py [--recipients 5000]``.
It prints figures and asserts nothing, because timings depend on the (shared) machine.

Splicing byte segments encoded once (:class:`mailer.sending.message.MessageTemplate`), as
stored and as it travels after SMTP's DATA (dot-stuffed), against building an
``EmailMessage`` per recipient, the obvious way. The whole send, over SMTP and against
Postfix's own client, is measured by bench/send_smtp.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from mailer import config, urls  # noqa: E402
from mailer.render import compile_slug  # noqa: E402
from mailer.sending.message import Content, MessageTemplate, Recipient  # noqa: E402


def newsletter_folder() -> Path:
    root = Path(tempfile.mkdtemp(prefix="mailer-bench-"))
    shutil.copy(REPO / "mailer.toml", root / "mailer.toml")
    shutil.copytree(REPO / "issues", root / "issues")
    return root


def email_message(settings: config.Settings, content: Content, r: Recipient) -> bytes:
    """The straightforward way: a new EmailMessage for each recipient."""
    msg = EmailMessage()
    msg["From"] = formataddr((settings.sender.from_name, settings.sender.from_address))
    msg["To"] = formataddr((r.name, r.email))
    msg["Subject"] = content.subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=settings.sender.domain)
    link = urls.unsubscribe_url(settings, f"{r.subscriber_id}.token")
    msg["List-Unsubscribe"] = f"<{link}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    text = content.text.replace(urls.UNSUBSCRIBE_PLACEHOLDER, link)
    html = content.html.replace(urls.UNSUBSCRIBE_PLACEHOLDER, link)
    msg.set_content(text, cte="quoted-printable")
    msg.add_alternative(html, subtype="html", cte="quoted-printable")
    return msg.as_bytes()


def timed(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=5000)
    args = parser.parse_args()
    n = args.recipients
    os.environ.setdefault("MAILER_SECRET_KEY", "bench-key-with-at-least-thirty-two-bytes")
    root = newsletter_folder()
    try:
        settings = config.load(root)
        compiled = compile_slug(settings, "2025-11")
        content = Content(
            "2025-11", compiled.issue.subject, compiled.email_html, compiled.email_text
        )
        template = MessageTemplate(settings, content, list_id="bench.example.org", send_id=1)
        people_ = [
            Recipient(f"person{i}@example.org", f"Person {i}", i + 1, i + 1) for i in range(n)
        ]
        size = len(template.render(people_[0])[1])

        splice = timed(lambda i: template.render(people_[i % n]), n)
        wire = timed(lambda i: template.render(people_[i % n], wire=True), n)
        baseline_n = max(n // 10, 200)
        baseline = timed(lambda i: email_message(settings, content, people_[i % n]), baseline_n)
        print(f"message size: {size / 1024:.1f} KB")
        print(f"splice:        {splice * 1e6:8.1f} µs per recipient")
        print(f"splice, wire:  {wire * 1e6:8.1f} µs per recipient (dot-stuffed for DATA)")
        print(f"EmailMessage:  {baseline * 1e6:8.1f} µs per recipient")
        print(f"ratio:         splicing is {baseline / splice:.0f}x cheaper")

    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
