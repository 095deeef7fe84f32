"""Approval by the approvers themselves: ``mailer approve SLUG --request``, the approval
page of ``mailer serve``, and ``mailer history``.

A request mails each approver named in mailer.toml the issue as readers will get it, with
a banner and a link. The link's token is signed, names the request (which names the
approver and the content hash) and the minute it was made: it expires after
``[approval] link_days``, and deciding the request (approve, or ask for changes with a
reason) works once, for that content only. The address the link was mailed to is what
the approval records: whoever holds the link proved they can read that mailbox.

Asking for changes emails the reason to ``[approval] notify`` (else ``alerts_to``): the
email is queued with the decision (:mod:`mailer.subscribers.outgoing`) and sent by the
background sender, so the page never waits for a mail server.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING

from mailer import checks, tokens, urls
from mailer.config import Settings
from mailer.content.overrides import issue_settings
from mailer.errors import ApprovalError, BadToken, InvalidInput, SendError
from mailer.formats import local_time
from mailer.operations import approval as approvals
from mailer.operations.service import require_written
from mailer.render import CompiledIssue, compile_slug
from mailer.sending import transports
from mailer.sending.message import Content, DkimSigner, MessageTemplate, Recipient
from mailer.sending.transports import TransportFactory
from mailer.site import build
from mailer.store import reviews
from mailer.store.database import Database, open_db
from mailer.store.models import ApprovalMethod, RequestStatus
from mailer.subscribers import outgoing

if TYPE_CHECKING:
    from sqlmodel import Session

log = logging.getLogger("mailer.approval")
REASON_MAX = 2000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BODY = re.compile(r"<body[^>]*>", re.IGNORECASE)


@dataclass(frozen=True)
class Asked:
    """One approver mailed a link, or why they could not be."""

    approver: str
    request_id: int
    error: str = ""


def _moment(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC)


def request(
    settings: Settings,
    slug: str,
    *,
    skip_checks: str | None = None,
    factory: TransportFactory | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[CompiledIssue, list[Asked]]:
    """Mail each approver the issue as it is now, with a link to approve it or ask for
    changes; SendError naming those who could not be mailed (the others were)."""
    rules = settings.approval
    if not rules.approvers:
        raise ApprovalError(
            "mailer.toml names no approvers: add them under [approval], like approvers = "
            f'["chair@example.org"], or approve it yourself: mailer approve {slug} --by NAME'
        )
    compiled = compile_slug(settings, slug)
    require_written(compiled)
    send_date, _ = checks.planned_send_date(settings, compiled.issue)
    checks.require_clean(settings, compiled, send_date, skip_checks)
    build.require_built(settings, compiled)
    key = settings.require_secret_key()
    text = approvals.readable(compiled)
    now = clock()
    with open_db(settings) as database, database.session(write=True) as session:
        made = [
            reviews.add_request(
                session, slug, compiled.content_hash, approver, text, at=_moment(now)
            )
            for approver in rules.approvers
        ]
        pending = [(r.id, r.approver) for r in made if r.id is not None]
    until = local_time(_moment(now) + dt.timedelta(days=rules.link_days), settings.tz)
    sent_as = issue_settings(settings, compiled.issue)
    signer = DkimSigner.from_environment()
    asked: list[Asked] = []
    open_transport = factory or transports.factory(settings, f"{slug}/approvals")
    with open_transport() as transport:
        for request_id, approver in pending:
            link = urls.approval_url(
                settings, tokens.make_expiring(key, tokens.APPROVAL, now, request_id)
            )
            content = Content(
                slug,
                compiled.issue.subject,
                with_banner(compiled.email_html, settings, link, compiled.content_hash, until),
                banner_text(settings, link, compiled.content_hash, until) + compiled.email_text,
            )
            template = MessageTemplate(
                sent_as,
                content,
                list_id=f"approval.{settings.sender.domain}",
                subject_prefix="[For approval] ",
            )
            _, data = template.render(Recipient(approver))
            if signer is not None:
                data = signer.sign(data)
            try:
                transport.send(settings.sender.from_address, approver, data)
                asked.append(Asked(approver, request_id))
            except SendError as exc:
                asked.append(Asked(approver, request_id, str(exc)))
    failed = [a for a in asked if a.error]
    if failed:
        with open_db(settings) as database, database.session(write=True) as session:
            for a in failed:
                reviews.forget_request(session, a.request_id)
        names = "; ".join(f"{a.approver}: {a.error}" for a in failed)
        done = [a.approver for a in asked if not a.error]
        also = f" ({', '.join(done)} {'was' if len(done) == 1 else 'were'} asked)" if done else ""
        raise SendError(f"could not mail the approval request to {names}{also}")
    return compiled, asked


def banner_text(settings: Settings, link: str, content_hash: str, until: str) -> str:
    return (
        f"FOR APPROVAL: this is {settings.name} as readers will get it. Before it goes to "
        "the lists, approve it or ask for changes here:\n\n"
        f"{link}\n\n"
        f"(content {content_hash}; the link works once, until {until})\n\n" + "-" * 72 + "\n\n"
    )


def with_banner(html: str, settings: Settings, link: str, content_hash: str, until: str) -> str:
    """The email with a banner above it saying what it is and where to decide."""
    banner = (
        '<div style="background:#fff4e0;border:3px solid #a15c00;padding:16px;'
        "margin:12px auto;max-width:568px;font-family:Arial,Helvetica,sans-serif;"
        'font-size:16px;line-height:1.5;color:#1f2933">'
        f'<p style="margin:0 0 8px"><strong>For approval:</strong> this is {escape(settings.name)} '
        "as readers will get it. Before it goes to the lists, please approve it or ask for "
        "changes.</p>"
        f'<p style="margin:0 0 8px"><a href="{escape(link)}" style="color:#1d4ed8;'
        'font-weight:bold">Approve it or ask for changes</a></p>'
        f'<p style="margin:0;font-size:14px">Content {escape(content_hash)}. The link works '
        f"once, until {escape(until)}.</p></div>"
    )
    found = _BODY.search(html)
    if found is None:
        return banner + html
    return html[: found.end()] + banner + html[found.end() :]


# -- the approval page ----------------------------------------------------------------------


@dataclass
class Review:
    """What the page behind an approval link shows."""

    # open: it can be decided; used: it was; changed: the issue is other content now;
    # removed: the address is no longer an approver.
    state: str
    slug: str
    approver: str
    content_hash: str
    subject: str = ""
    content_text: str = ""
    requested_at: dt.datetime | None = None
    decided_at: dt.datetime | None = None
    decision: str = ""
    reason: str = ""
    # What changed since the last approved version: unified diff lines, and who approved it.
    diff: list[str] = field(default_factory=list)
    previous: str = ""
    notified: bool = False


def _read(settings: Settings, token: str, now: float) -> int:
    (request_id,) = tokens.read_expiring(
        tokens.keys_of(settings),
        tokens.APPROVAL,
        token,
        now=now,
        max_age_seconds=settings.approval.link_days * 86400,
    )
    return request_id


def review(settings: Settings, database: Database, token: str, now: float) -> Review:
    """The approval page of ``token``; BadToken (or ExpiredToken) if it does not work.
    Reading it changes nothing."""
    request_id = _read(settings, token, now)
    with database.session() as session:
        found = reviews.get_request(session, request_id)
        if found is None:
            raise BadToken("this approval link is not valid")
        shown = Review(
            state="open",
            slug=found.slug,
            approver=found.approver,
            content_hash=found.content_hash,
            content_text=found.content_text,
            requested_at=found.requested_at,
            decided_at=found.decided_at,
            decision=str(found.status),
            reason=found.reason or "",
        )
        previous = reviews.last_approved(session, found.slug, found.content_hash)
        if previous is not None and previous.content_text is not None:
            shown.previous = (
                f"{previous.approved_by} on {local_time(previous.approved_at, settings.tz)}"
            )
            shown.diff = _diff(previous.content_text, found.content_text)
    if found.status != RequestStatus.PENDING:
        shown.state = "used"
    elif found.approver not in settings.approval.approvers:
        shown.state = "removed"
    else:
        compiled = compile_slug(settings, found.slug)
        shown.subject = compiled.issue.subject
        if compiled.content_hash != found.content_hash:
            shown.state = "changed"
    return shown


def _diff(before: str, after: str) -> list[str]:
    return [
        line.rstrip("\n")
        for line in difflib.unified_diff(
            before.splitlines(), after.splitlines(), "approved", "now", n=2, lineterm=""
        )
    ][2:]


def clean_reason(reason: str) -> str:
    """A reason for changes as it is kept: plain text, some of it, at most REASON_MAX."""
    text = reason.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        raise InvalidInput("say what should change, so the issue can be put right")
    if len(text) > REASON_MAX:
        raise InvalidInput(f"keep the reason under {REASON_MAX} characters")
    return _CONTROL.sub("", text)


def decide(
    settings: Settings,
    database: Database,
    token: str,
    now: float,
    *,
    approve: bool,
    reason: str = "",
) -> Review:
    """Approve the content behind ``token``, or ask for changes with ``reason``: once, for
    that content, by that approver. The page to show afterwards."""
    shown = review(settings, database, token, now)
    if shown.state != "open":
        return shown
    text = "" if approve else clean_reason(reason)
    compiled = compile_slug(settings, shown.slug)
    request_id = _read(settings, token, now)
    at = _moment(now)
    with database.session(write=True) as session:
        status = RequestStatus.APPROVED if approve else RequestStatus.CHANGES_REQUESTED
        if not reviews.decide(session, request_id, status, at, text or None):
            shown.state = "used"
            return shown
        shown.state, shown.decision, shown.decided_at, shown.reason = "decided", status, at, text
        if approve:
            approvals.approve(session, compiled, shown.approver, ApprovalMethod.LINK)
        else:
            shown.notified = tell_of_changes(session, settings, shown, at)
    log.info("%s: request %d %s", shown.slug, request_id, status)
    return shown


def tell_of_changes(session: Session, settings: Settings, shown: Review, at: dt.datetime) -> bool:
    """Queue an email of the reason for changes to whoever writes the newsletter, in the
    decision's own transaction; whether anyone is to be told."""
    to = settings.approval.notify or settings.alerts_to
    if not to:
        log.warning("%s: changes were asked for, and nobody is set to be told", shown.slug)
        return False
    when = local_time(at, settings.tz)
    body = (
        f"{shown.approver} asked for changes to {shown.slug} ({shown.subject}), content "
        f"{shown.content_hash}, on {when}:\n\n"
        f"{shown.reason}\n\n"
        f"Change it (mailer edit {shown.slug}), build it, then ask again:\n\n"
        f"  mailer approve {shown.slug} --request\n\n"
        f"Its history: mailer history {shown.slug}\n"
    )
    subject = f"[mailer] {shown.approver} asked for changes to {shown.slug}"
    for address in to:
        outgoing.queue(
            session,
            settings,
            outgoing.STAFF,
            kind=outgoing.APPROVAL,
            to=address,
            subject=subject,
            text=body,
            due=True,
            now=at,
        )
    return True


# -- history --------------------------------------------------------------------------------


def history(settings: Settings, slug: str) -> list[reviews.HistoryEvent]:
    with open_db(settings) as database, database.session() as session:
        return reviews.history(session, slug)


def history_json(events: list[reviews.HistoryEvent]) -> str:
    return json.dumps([e.as_dict() for e in events], indent=2)
