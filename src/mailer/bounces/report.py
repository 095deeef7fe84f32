"""``mailer report SLUG``: what happened to the latest send of an issue, for the board.

The numbers come from the send's ledger and from what came back since (bounce events,
unsubscribes). Nothing in the report names a person unless ``people`` is asked for.

How a recipient is counted, each in exactly one of these:

- **delivered**: accepted by the mail server, and no failure reported since;
- **bounced (hard)** / **bounced (soft)**: accepted, then reported failed (a hard failure
  wins when both came back);
- **refused while sending**: the server refused the copy during the SMTP conversation;
- **not mailed**: skipped at their turn, because they had unsubscribed, bounced,
  complained or been erased since the send started;
- **not sent yet**: still waiting (the send is paused, or was cancelled before their turn);
- **unknown**: the whole message was written and no final reply came, or it was in flight
  when the sender stopped: the server may or may not have it.

Complaints, unsubscribes and policy refusals are counted beside these, since a person
who complained was also delivered to.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import dataclass, field

from mailer.bounces.diagnose import status_code
from mailer.clock import utcnow
from mailer.config import Settings
from mailer.store import bounces as returned
from mailer.store import clicks as link_clicks
from mailer.store import deliveries, reports, sends
from mailer.store.database import Database
from mailer.store.status import BounceKind, DeliveryStatus

K, D = BounceKind, DeliveryStatus
# What the commonest enhanced status codes (RFC 3463) mean, in the report's words.
REASONS = {
    "5.1.1": "address does not exist",
    "5.1.10": "address does not exist (Microsoft 365)",
    "5.1.2": "domain does not exist",
    "5.1.0": "address rejected",
    "5.2.1": "mailbox disabled",
    "5.2.2": "mailbox full",
    "5.2.0": "mailbox unavailable",
    "5.3.4": "message too large",
    "5.4.1": "recipient rejected by the domain",
    "5.4.4": "no route to the domain",
    "5.4.7": "delivery time expired",
    "5.7.1": "refused by the receiver's policy",
    "5.7.0": "refused for security or policy",
    "4.2.2": "mailbox full (temporary)",
    "4.4.7": "delivery time expired",
}
# Bucket widths for the deliveries-over-time chart, in seconds.
_BUCKETS = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 6 * 3600, 86400)
MAX_BARS = 60
Clicks = list[tuple[str, int]]


def reason_label(code: str) -> str:
    if code in REASONS:
        return REASONS[code]
    if code.startswith("5.7."):
        return "refused for policy or reputation"
    if code.startswith("5.1."):
        return "address rejected"
    if code.startswith("4."):
        return "temporary failure"
    if code.startswith("5."):
        return "permanent failure"
    return "no status code given"


@dataclass(frozen=True)
class Outcomes:
    """The counts of one group of recipients (the whole send, or one of its lists)."""

    recipients: int = 0
    accepted: int = 0
    delivered: int = 0
    hard: int = 0
    soft: int = 0
    refused: int = 0
    skipped: int = 0
    waiting: int = 0
    unknown: int = 0
    policy: int = 0
    complained: int = 0
    unsubscribed: int = 0

    ROWS = (
        ("recipients", "Recipients"),
        ("accepted", "Accepted by the mail server"),
        ("delivered", "Delivered (no failure reported)"),
        ("hard", "Bounced: address gone (hard)"),
        ("soft", "Bounced: temporary failure (soft)"),
        ("refused", "Refused while sending"),
        ("skipped", "Not mailed: left or bounced before their turn"),
        ("waiting", "Not sent yet (paused or cancelled)"),
        ("unknown", "Outcome unknown (the server may have it)"),
        ("policy", "Refused for policy or reputation"),
        ("complained", "Marked as spam (complaints)"),
        ("unsubscribed", "Unsubscribed since the send"),
    )


@dataclass(frozen=True)
class PersonRow:
    email: str
    outcome: str
    status: str
    reason: str


@dataclass(frozen=True)
class ListOutcomes:
    slug: str
    name: str
    outcomes: Outcomes


@dataclass(frozen=True)
class SendReport:
    settings_name: str
    slug: str
    send_id: int
    subject: str
    status: str
    lists: list[str]
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration: float | None
    rate: float | None
    outcomes: Outcomes
    per_list: list[ListOutcomes]
    reasons: list[tuple[str, str, int]]  # (code, meaning, count)
    timeline: list[tuple[dt.datetime, int]]  # (bucket start, copies accepted)
    bucket_seconds: int
    people: list[PersonRow] | None = None
    # Clicks per link, from `mailer serve` when track_clicks is on; None when not counted.
    clicks: Clicks | None = None
    # Returned mail since the send started that changed nobody: reports no MAC tied to a
    # copy (`mailer bounces list --unverified`) and messages too broken to read.
    unverified: int = 0
    quarantined: int = 0
    generated_at: dt.datetime = field(default_factory=utcnow)


def _outcomes(
    ids: set[int] | None,
    status: dict[int, str],
    kinds: dict[int, set[str]],
    unsubscribed: set[int],
) -> Outcomes:
    counts: Counter[str] = Counter()
    for sid, copy in status.items():
        if ids is not None and sid not in ids:
            continue
        counts["recipients"] += 1
        came_back = kinds.get(sid, set())
        if copy == D.SENT:
            counts["accepted"] += 1
            if K.HARD in came_back:
                counts["hard"] += 1
            elif K.SOFT in came_back or K.FULL in came_back:
                counts["soft"] += 1
            else:
                counts["delivered"] += 1
        elif copy in (D.FAILED_PERMANENT, D.FAILED_TEMPORARY):
            counts["refused"] += 1
        elif copy == D.SKIPPED:
            counts["skipped"] += 1
        elif copy == D.PENDING:
            counts["waiting"] += 1
        else:
            counts["unknown"] += 1
        if K.POLICY in came_back:
            counts["policy"] += 1
        if K.COMPLAINT in came_back:
            counts["complained"] += 1
        elif sid in unsubscribed or K.UNSUBSCRIBE in came_back:
            counts["unsubscribed"] += 1
    return Outcomes(**counts)


def _timeline(
    times: list[dt.datetime], start: dt.datetime | None
) -> tuple[list[tuple[dt.datetime, int]], int]:
    if not times:
        return [], 60
    first = start if start is not None and start <= min(times) else min(times)
    span = max((max(times) - first).total_seconds(), 1.0)
    width = next((b for b in _BUCKETS if span / b <= MAX_BARS), _BUCKETS[-1])
    bars = Counter(int((t - first).total_seconds() // width) for t in times)
    count = max(bars) + 1
    return [(first + dt.timedelta(seconds=i * width), bars.get(i, 0)) for i in range(count)], width


def build(
    settings: Settings,
    database: Database,
    slug: str,
    *,
    people: bool = False,
    clicks: Clicks | None = None,
) -> SendReport:
    """The report of the latest send of ``slug``."""
    with database.session() as session:
        send = sends.latest(session, slug)
        assert send.id is not None
        summary = deliveries.report(session, send, failed_limit=0)
        copies = reports.copies(session, send.id)
        came_back = reports.events(session, send.id)
        start = summary.started_at
        left = (
            reports.unsubscribed_between(
                session, send.id, start, reports.next_send_started(session, send.id)
            )
            if start is not None
            else set()
        )
        lists = reports.lists_of(session, send.id)
        members = reports.members(session, send.id)
        unverified, quarantined = returned.counts_since(session, start)
        if clicks is None and settings.web.track_clicks:
            # Counted by `mailer serve` per link, never per person.
            clicks = [(c.url, c.clicks) for c in link_clicks.clicks_per_link(session, slug)]
    status = {c.subscriber_id: c.status for c in copies}
    kinds: dict[int, set[str]] = {}
    for event in came_back:
        if event.subscriber_id is not None:
            kinds.setdefault(event.subscriber_id, set()).add(event.kind)
    reasons: Counter[str] = Counter()
    for copy in copies:
        if copy.status in (D.FAILED_PERMANENT, D.FAILED_TEMPORARY):
            reasons[status_code("", copy.error) or ""] += 1
    for event in came_back:
        if event.kind in (K.HARD, K.FULL, K.SOFT, K.POLICY):
            reasons[event.status] += 1
    timeline, width = _timeline([c.sent_at for c in copies if c.sent_at is not None], start)
    return SendReport(
        settings_name=settings.name,
        slug=slug,
        send_id=send.id,
        subject=send.subject,
        status=str(send.status),
        lists=[s for _, s, _ in lists],
        started_at=start,
        finished_at=summary.finished_at,
        duration=summary.duration,
        rate=summary.rate,
        outcomes=_outcomes(None, status, kinds, left),
        per_list=[
            ListOutcomes(s, name, _outcomes(members.get(i, set()), status, kinds, left))
            for i, s, name in lists
        ],
        reasons=[(code, reason_label(code), n) for code, n in reasons.most_common()],
        timeline=timeline,
        bucket_seconds=width,
        people=_people(copies, came_back, left) if people else None,
        clicks=clicks,
        unverified=unverified,
        quarantined=quarantined,
    )


def _people(
    copies: list[reports.CopyRow], came_back: list[reports.EventRow], left: set[int]
) -> list[PersonRow]:
    worst: dict[int, reports.EventRow] = {}
    order = {K.HARD: 6, K.COMPLAINT: 5, K.POLICY: 4, K.FULL: 3, K.SOFT: 2, K.UNSUBSCRIBE: 1}
    for event in came_back:
        if event.subscriber_id is None or event.kind not in order:
            continue
        held = worst.get(event.subscriber_id)
        if held is None or order[BounceKind(event.kind)] > order[BounceKind(held.kind)]:
            worst[event.subscriber_id] = event
    rows = []
    for copy in copies:
        found = worst.get(copy.subscriber_id)
        email = copy.email or "(erased)"
        if copy.status in (D.FAILED_PERMANENT, D.FAILED_TEMPORARY):
            code = status_code("", copy.error)
            rows.append(PersonRow(email, f"refused ({copy.status})", code, copy.error))
        elif found is not None:
            rows.append(PersonRow(email, found.kind, found.status, found.reason))
        elif copy.status == D.SKIPPED:
            rows.append(PersonRow(email, "not mailed (skipped)", "", copy.error))
        elif copy.subscriber_id in left:
            rows.append(PersonRow(email, "unsubscribed", "", ""))
        elif copy.status == D.PENDING:
            rows.append(PersonRow(email, "not sent yet", "", ""))
        elif copy.status != D.SENT:
            rows.append(PersonRow(email, f"unknown ({copy.status})", "", ""))
    return rows


def nice_ceiling(value: int) -> int:
    """The axis maximum: the next 1, 2 or 5 times a power of ten at or above ``value``."""
    if value <= 1:
        return 1
    power = int(10 ** math.floor(math.log10(value)))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)
