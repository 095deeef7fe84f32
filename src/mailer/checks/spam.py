"""SpamAssassin's score for a real message of the issue, made for a test recipient.

``spamassassin -L -t`` scores offline with the rules Debian ships (no network tests). The
message is made by :class:`~mailer.sending.message.MessageTemplate`, exactly as a send
makes each recipient's, so the score is the one the issue would really get.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from mailer.checks.registry import Context, Hit, Severity, check
from mailer.sending.message import Content, MessageTemplate, Recipient

WARN_ABOVE = 2.0
SPAM_AT = 5.0
# SpamAssassin takes about a second; give a busy machine plenty of room.
TIMEOUT = 300
_STATUS = re.compile(
    r"^X-Spam-Status: \w+, score=(-?[\d.]+) required=[\d.]+\s+tests=(.*?)\s+autolearn",
    re.MULTILINE | re.DOTALL,
)
TEST_RECIPIENT = Recipient("reader@example.org", "Test Reader", subscriber_id=1, delivery_id=1)


@dataclass(frozen=True)
class Score:
    points: float
    rules: list[str]


def sample_message(ctx: Context) -> bytes:
    """The message one test recipient would get."""
    settings = ctx.settings
    if not settings.secret_key:
        # Only this sample's links are signed with it; nothing is sent.
        settings = dataclasses.replace(settings, secret_key="mailer-check-sample-" + "x" * 32)
    compiled = ctx.compiled
    content = Content(
        compiled.issue.slug, compiled.issue.subject, compiled.email_html, compiled.email_text
    )
    template = MessageTemplate(
        settings, content, list_id=f"check.{settings.sender.domain}", send_id=1
    )
    return template.render(TEST_RECIPIENT)[1]


def score(ctx: Context) -> Score | str:
    """The score, or why there is none."""
    if "spam" in ctx.memo:
        found: Score | str = ctx.memo["spam"]
        return found
    program = shutil.which("spamassassin")
    if program is None:
        result: Score | str = "spamassassin is not installed"
    else:
        try:
            done = subprocess.run(
                [program, "-L", "-t"],
                input=sample_message(ctx),
                capture_output=True,
                timeout=TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            result = f"spamassassin did not answer ({exc})"
        else:
            m = _STATUS.search(done.stdout.decode("utf-8", "replace"))
            if m is None:
                result = f"spamassassin gave no score (exit {done.returncode})"
            else:
                rules = [r for r in re.split(r"[\s,]+", m[2]) if r and r != "none"]
                result = Score(float(m[1]), rules)
    ctx.memo["spam"] = result
    return result


def _rules(found: Score) -> str:
    return ", ".join(found.rules[:8]) or "no rules"


@check(
    "spam-likely",
    Severity.ERROR,
    f"SpamAssassin scores the message {SPAM_AT} or more: most filters would call it spam.",
    "remove what the named rules object to (shouting, money words, image-only content), then "
    "check again",
)
def not_spam(ctx: Context) -> Iterator[Hit]:
    found = score(ctx)
    if isinstance(found, Score) and found.points >= SPAM_AT:
        yield Hit(f"SpamAssassin scores it {found.points:.1f} ({_rules(found)})")


@check(
    "spam-score",
    Severity.WARNING,
    f"SpamAssassin scores the message above {WARN_ABOVE}.",
    "look at the named rules; a well-formed newsletter scores about 1.7",
)
def low_spam_score(ctx: Context) -> Iterator[Hit]:
    found = score(ctx)
    if isinstance(found, Score) and WARN_ABOVE < found.points < SPAM_AT:
        yield Hit(f"SpamAssassin scores it {found.points:.1f} ({_rules(found)})")


@check(
    "spam-not-checked",
    Severity.NOTE,
    "SpamAssassin is not installed, so the spam score was not checked.",
    "install it: sudo apt-get install spamassassin (Debian and Ubuntu)",
)
def spam_checked(ctx: Context) -> Iterator[Hit]:
    found = score(ctx)
    if isinstance(found, str):
        yield Hit(f"no spam score: {found}")
