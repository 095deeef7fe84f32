"""Approval: a send needs someone's approval of exactly the content it delivers.

An approval is bound to the compiled content's hash. When the content changes afterwards,
the refusal names what changed (the subject, a section added, removed or changed), from a
summary stored with the approval.

When mailer.toml names approvers (``[approval] approvers``), only their approvals count,
given through the link mailed to each of them (:mod:`mailer.operations.signoff`); a name typed
with ``--by`` counts only where ``allow_self_approval`` says so. A refusal names who must
approve.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING

from mailer import urls
from mailer.errors import ApprovalError
from mailer.formats import local_time, utc_minute
from mailer.render import CompiledIssue
from mailer.store import reviews, sends
from mailer.store.models import Approval, ApprovalMethod

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from sqlmodel import Session

    from mailer.config import ApprovalSettings

# Each reader's own links, as the approver's copy of the text shows them.
OWN_LINK = "(the reader's own link)"


def readable(compiled: CompiledIssue) -> str:
    """The content as readers get it, in text: what an approver reads and compares."""
    text = compiled.email_text
    for placeholder in urls.PLACEHOLDERS:
        text = text.replace(placeholder, OWN_LINK)
    return text


def content_summary(compiled: CompiledIssue) -> dict[str, object]:
    """What a reviewer approved, part by part, so a later change can be named."""

    def digest(value: object) -> str:
        blob = json.dumps(value, default=str, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    issue = compiled.issue
    sections = []
    for section in issue.sections:
        data = dataclasses.asdict(section)
        if data.get("image"):
            data["image"].pop("path", None)
        sections.append({"title": section.title, "hash": digest(data)})
    return {
        "subject": issue.subject,
        "preheader": issue.preheader,
        "date": issue.date.isoformat(),
        "intro": digest(issue.intro),
        "sections": sections,
        "envelope": compiled.envelope,
    }


def approve(
    session: Session,
    compiled: CompiledIssue,
    by: str,
    method: ApprovalMethod = ApprovalMethod.COMMAND,
) -> Approval:
    """Record that ``by`` approved exactly this compiled content."""
    by = by.strip()
    if not by:
        raise ApprovalError("say who approves with --by NAME")
    summary = json.dumps(content_summary(compiled))
    return sends.add_approval(
        session,
        compiled.issue.slug,
        compiled.content_hash,
        by,
        summary,
        method=method,
        content_text=readable(compiled),
    )


def require(
    session: Session,
    compiled: CompiledIssue,
    tz: ZoneInfo | None = None,
    rules: ApprovalSettings | None = None,
) -> Approval:
    """The approval of exactly this content, or an ApprovalError saying what changed (with
    the time of the approval in ``tz``, the newsletter's time zone). With approvers in
    ``rules``, only theirs count, and the refusal names who must approve."""
    if rules is not None and rules.approvers:
        return _require_approvers(session, compiled, rules, tz)
    slug = compiled.issue.slug
    approval = sends.latest_approval(session, slug)
    again = f"review it, then run: mailer approve {slug} --by NAME"
    if approval is None:
        raise ApprovalError(f"{slug} has not been approved: {again}")
    if approval.content_hash == compiled.content_hash:
        return approval
    when = local_time(approval.approved_at, tz) if tz else utc_minute(approval.approved_at)
    changes = describe_changes(json.loads(approval.summary), content_summary(compiled))
    raise ApprovalError(
        f"{slug} changed since {approval.approved_by} approved it on {when} "
        f"({'; '.join(changes)}): {again}"
    )


def counts(approval: Approval, rules: ApprovalSettings) -> bool:
    """Whether an approval counts under ``rules``: an approver's through their link, or a
    typed name where the folder allows it."""
    if approval.method == ApprovalMethod.LINK:
        return approval.approved_by in rules.approvers
    return rules.allow_self_approval


def _require_approvers(
    session: Session, compiled: CompiledIssue, rules: ApprovalSettings, tz: ZoneInfo | None
) -> Approval:
    slug = compiled.issue.slug

    def when(moment: object) -> str:
        return local_time(moment, tz) if tz else utc_minute(moment)  # type: ignore[arg-type]

    asked = reviews.changes_requested(session, slug, compiled.content_hash)
    if asked:
        last = asked[-1]
        raise ApprovalError(
            f"{last.approver} asked for changes to {slug} on {when(last.decided_at)}: "
            f"{last.reason}. Change it, build it, then ask again: mailer approve {slug} --request"
        )
    counted = [a for a in reviews.approvals_of(session, slug, compiled.content_hash)]
    counted = [a for a in counted if counts(a, rules)]
    people = list(dict.fromkeys(a.approved_by for a in counted))
    if len(people) >= rules.required:
        return counted[-1]
    others = [a for a in rules.approvers if a not in people]
    who = (
        others[0]
        if len(others) == 1
        else f"{'one' if rules.required - len(people) == 1 else 'two'} of {', '.join(others)}"
    )
    ask = f"ask {who} with: mailer approve {slug} --request"
    if people:
        raise ApprovalError(
            f"{slug} is approved by {', '.join(people)} and needs {rules.required} different "
            f"approvers: {ask}"
        )
    latest = sends.latest_approval(session, slug)
    if latest is not None and latest.content_hash != compiled.content_hash:
        changes = describe_changes(json.loads(latest.summary), content_summary(compiled))
        raise ApprovalError(
            f"{slug} changed since {latest.approved_by} approved it on {when(latest.approved_at)} "
            f"({'; '.join(changes)}): it must be approved again: {ask}"
        )
    raise ApprovalError(f"{slug} has not been approved by an approver: {ask}")


def describe_changes(old: dict[str, object], new: dict[str, object]) -> list[str]:
    changes = [
        f"{key} changed"
        for key in ("subject", "preheader", "date", "intro")
        if old.get(key) != new.get(key)
    ]
    before = {s["title"]: s["hash"] for s in old.get("sections", [])}  # type: ignore[attr-defined]
    after = {s["title"]: s["hash"] for s in new.get("sections", [])}  # type: ignore[attr-defined]
    changes += [f"section '{t}' added" for t in after if t not in before]
    changes += [f"section '{t}' removed" for t in before if t not in after]
    changes += [f"section '{t}' changed" for t in after if t in before and before[t] != after[t]]
    was: dict[str, str] = old.get("envelope", {})  # type: ignore[assignment]
    now: dict[str, str] = new.get("envelope", {})  # type: ignore[assignment]
    changes += [
        f"{key} changed" + (f" (now {now[key]!r})" if key in ("From", "Reply-To") else "")
        for key in sorted(set(was) | set(now))
        if was.get(key) != now.get(key) and (key in was and key in now)
    ]
    changes += [f"{key} added" for key in sorted(set(now) - set(was)) if was]
    changes += [f"{key} removed" for key in sorted(set(was) - set(now)) if now]
    if not changes and list(before) != list(after):
        changes.append("sections reordered")
    return changes or ["the templates or mailer.toml changed"]
