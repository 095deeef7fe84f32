"""``make demo``: the whole pipeline on the embedded defaults, end to end.

It creates a demo list of made-up subscribers, approves the 2025-11 issue, sends it to
the demo list through the outbox transport (``.eml`` files, no mail server needed),
publishes it (a rehearsal send does not), builds every example issue and the archive, and
says where everything is, ending with how to start ``mailer serve`` and an unsubscribe
link that works in it. It is safe to run again: an issue already sent to the demo list is
not sent twice.
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from email.parser import BytesParser
from email.policy import default
from pathlib import Path

from mailer import config, urls
from mailer.config import Settings
from mailer.content import all_slugs
from mailer.errors import MailerError, NotFound
from mailer.formats import human_size
from mailer.operations import service
from mailer.site import build
from mailer.store.database import describe
from mailer.store.models import SendStatus
from mailer.subscribers.demo import seed_demo

DEMO_ISSUE = "2025-11"
DEMO_PORT = 8000
DEMO_ORIGIN = f"http://127.0.0.1:{DEMO_PORT}"
DEMO_APPROVER = "Demo Editor"
# The example issue went out in 2025: its dates are past, so the preflight checks would
# refuse it. The demo says so and goes ahead, as a person would with --skip-checks.
DEMO_SKIP = "make demo sends an example issue whose dates have passed"


def run(settings: Settings) -> None:
    # The demo always uses the embedded defaults, whatever the shell says.
    settings = replace(settings, transport=replace(settings.transport, name="outbox"))
    root = settings.root

    print("1. Subscribers")
    summary = seed_demo(settings)
    print(
        f"   list '{summary.list_slug}': {summary.subscribed} subscribed, "
        f"{summary.unsubscribed} unsubscribed (never mailed)"
    )
    print(f"   database: {describe(settings.database_url)}")

    print(f"2. Building and approving {DEMO_ISSUE}")
    build.build(settings, [DEMO_ISSUE])
    print(f"   checks skipped: {DEMO_SKIP} (see: mailer check {DEMO_ISSUE})")
    approval = service.approve(settings, DEMO_ISSUE, DEMO_APPROVER, DEMO_SKIP)
    print(f"   approved by {approval.approved_by} (content {approval.content_hash})")

    print(f"3. Sending {DEMO_ISSUE} to '{summary.list_slug}' through the outbox")
    # The outbox is a rehearsal, which a later send does not count: a second demo run
    # looks for its own earlier send instead, and sends nothing again.
    try:
        earlier = [r for r in service.status(settings, DEMO_ISSUE) if r.status == SendStatus.SENT]
    except NotFound:
        earlier = []
    if earlier:
        print("   everyone on the demo list already has this issue: nothing sent again")
    else:
        result = service.start(settings, DEMO_ISSUE, [summary.list_slug], skip_checks=DEMO_SKIP)
        if result.status != SendStatus.SENT:
            raise MailerError(f"the demo send ended {result.status}: {result.reason}")
        print(f"   {result.counts.get('sent', 0)} of {result.total} sent")
    messages = sorted((settings.outbox_dir / DEMO_ISSUE).glob("*.eml"))
    print(
        f"   {len(messages)} message(s) in {(settings.outbox_dir / DEMO_ISSUE).relative_to(root)}/"
    )

    # A rehearsal send publishes nothing: the demo publishes its issue as `mailer publish`
    # does. Built after that: drafts stay out of the archive.
    build.publish(settings, DEMO_ISSUE)
    print("4. Building every example issue, and the archive of the published ones")
    files = build.build(settings, all_slugs(settings), archive=True)
    for f in files:
        if f.path.name in ("email.html", "email.txt", "index.html", "feed.xml"):
            print(f"   {f.path.relative_to(root)}  {human_size(f.size)}")

    issue_dir = build.output_dir(settings, DEMO_ISSUE, published=True).relative_to(root)
    print("\nDone. Look at:")
    print(f"   {issue_dir / 'email.html'}   the email as sent")
    print(f"   {issue_dir / 'index.html'}   the web version")
    print(f"   {settings.build_dir.relative_to(root) / 'index.html'}           the archive")
    if messages:
        print(f"   {messages[0].relative_to(root)}")
    print(f"   mailer status {DEMO_ISSUE}")
    unsubscribe = local_unsubscribe_url(settings, messages)
    print("\nThe web side (archive, unsubscribe, preferences, sign-up) runs with:")
    print(f"   .venv/bin/mailer serve --port {DEMO_PORT} --rehearsal      # Ctrl-C stops it")
    print(f"   then open {DEMO_ORIGIN}/")
    if unsubscribe:
        print("   and this unsubscribe link, taken from the first message in the outbox:")
        print(f"   {unsubscribe}")


def local_unsubscribe_url(settings: Settings, messages: list[Path]) -> str | None:
    """The first message's List-Unsubscribe link, pointed at a local `mailer serve`."""
    origin = settings.base_url.removesuffix(urls.base_path(settings))
    for path in messages:
        with path.open("rb") as f:
            headers = BytesParser(policy=default).parse(f, headersonly=True)
        found = re.search(r"<(https?://[^>]+)>", str(headers.get("List-Unsubscribe", "")))
        if found and found.group(1).startswith(origin):
            return DEMO_ORIGIN + found.group(1).removeprefix(origin)
    return None


def main() -> None:
    try:
        settings = config.load(config.find_root())
        if not settings.has_secret_key:
            settings.require_secret_key()  # created once, mode 0600, never committed
            shown = settings.key_file.relative_to(settings.root)
            print(f"Created the signing key in {shown} (git-ignored): back it up.")
        run(settings)
    except MailerError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
