"""The operations behind ``mailer approve``, ``send``, ``pause``, ``cancel`` and ``status``.

Each function takes settings, does one job, and returns plain results for the command
line or the worker to print. The worker's scheduled sends go through :func:`create` and
:func:`run` too, so a send behaves the same however it was started.

Each mode of ``mailer send`` is one function: :func:`proof`, :func:`start` (after
:func:`preview`), :func:`resume`, :func:`retry_failed` and :func:`resend_unknown` (after
:func:`unknown`). All but a proof choose their send in one transaction, then run it
(:func:`_choose_and_run`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mailer import checks, clock
from mailer.addresses import normalise
from mailer.config import Settings
from mailer.content import scaffold
from mailer.content.overrides import issue_settings, overrides_json, with_overrides
from mailer.errors import ApprovalError, MailerError, NotFound, StateError
from mailer.operations import approval as approvals
from mailer.render import CompiledIssue, compile_slug
from mailer.sending import engine, ratelimit, transports
from mailer.sending.engine import Progress, RunResult
from mailer.sending.journal import Journals
from mailer.sending.message import Content, DkimSigner, MessageTemplate, Recipient
from mailer.sending.transports import TransportFactory
from mailer.sending.workers import SendAsSeen
from mailer.site import build, reach
from mailer.store import deliveries, people, publications, schedules, send_workers, sends
from mailer.store.database import Database, open_db
from mailer.store.models import (
    Approval,
    DeliveryStatus,
    MailingList,
    Schedule,
    Send,
    SendStatus,
)
from mailer.store.status import PauseReason, PublishedBy

if TYPE_CHECKING:
    from sqlmodel import Session


def approve(settings: Settings, slug: str, by: str, skip_checks: str | None = None) -> Approval:
    rules = settings.approval
    if rules.approvers and not rules.allow_self_approval:
        raise ApprovalError(
            f"this newsletter's approvers ({', '.join(rules.approvers)}) approve it themselves: "
            f"ask them with: mailer approve {slug} --request (a name typed with --by counts "
            "only with allow_self_approval = true under [approval] in mailer.toml)"
        )
    compiled = compile_slug(settings, slug)
    require_written(compiled)
    # Preflight: judged on the date it is scheduled for, else today.
    send_date, _ = checks.planned_send_date(settings, compiled.issue)
    checks.require_clean(settings, compiled, send_date, skip_checks)
    build.require_built(settings, compiled)
    with open_db(settings) as database, database.session(write=True) as session:
        return approvals.approve(session, compiled, by)


def require_written(compiled: CompiledIssue) -> None:
    """Refuse the untouched `mailer new` template, whatever the checks are set to."""
    left = scaffold.untouched(compiled.issue)
    if left:
        slug = compiled.issue.slug
        raise ApprovalError(
            f"issues/{slug}/issue.yaml still has the mailer new template's sample text "
            f"({', '.join(left)}): write the issue, then run: mailer build {slug}"
        )


def transport_in_words(settings: Settings, slug: str) -> str:
    """How a send will travel, for the confirmation before it starts."""
    if settings.transport.name == "outbox":
        folder = settings.outbox_dir / slug
        shown = (
            folder.relative_to(settings.root) if folder.is_relative_to(settings.root) else folder
        )
        return (
            f"the outbox, a rehearsal: nobody will be emailed; messages are written to {shown}/ "
            '(set [transport] name = "smtp" in mailer.toml, or MAILER_TRANSPORT=smtp, to email '
            "people)"
        )
    smtp = settings.transport.smtp
    login = f", logging in as {smtp.username}" if smtp.username else ""
    return f"SMTP through {smtp.host}:{smtp.port} ({smtp.security}{login})"


@dataclass(frozen=True)
class SendPreview:
    compiled: CompiledIssue
    approval: Approval
    lists: list[str]
    recipients: int
    # The preflight checks, when they ran: errors here were skipped with a reason.
    checked: checks.Report | None = None
    # How it will travel, and the From line people will see.
    transport: str = ""
    sender: str = ""
    # How it fits the relay's day limit, when there is one (several days: --spread).
    day: ratelimit.DayPlan | None = None


def _refuse_if_open(session: Session, slug: str) -> None:
    busy = sends.open_sends(session, slug)
    if busy:
        b = busy[0]
        raise StateError(
            f"{slug} already has a send that is {b.status} (send {b.id}): "
            f"use `mailer send {slug} --resume`, or `mailer cancel {slug}` first"
        )


def preview(
    settings: Settings,
    slug: str,
    lists: Sequence[str],
    skip_checks: str | None = None,
    *,
    spread: bool = False,
) -> SendPreview:
    """Everything `mailer send` checks before asking for confirmation; changes nothing."""
    compiled = compile_slug(settings, slug)
    require_written(compiled)
    report = checks.require_clean(settings, compiled, settings.today(), skip_checks)
    reach.require_answering(settings, checks.clean_reason(skip_checks))
    with open_db(settings) as database, database.session() as session:
        approval = approvals.require(session, compiled, settings.tz, settings.approval)
        build.require_built(settings, compiled)
        found = [people.get_list(session, name) for name in dict.fromkeys(lists)]
        if not found:
            raise StateError("name at least one list with --list")
        _refuse_if_open(session, slug)
        count = _require_someone(session, slug, found)
        day = ratelimit.require_day(
            settings, session.connection(), slug, count, spread, clock.utcnow().timestamp()
        )
        sender = issue_settings(settings, compiled.issue).sender
        return SendPreview(
            compiled,
            approval,
            [lst.slug for lst in found],
            count,
            report,
            transport=transport_in_words(settings, slug),
            sender=f"{sender.from_name} <{sender.from_address}>",
            day=day,
        )


def _require_someone(session: Session, slug: str, found: Sequence[MailingList]) -> int:
    """How many a new send would mail; StateError, before any send exists, if nobody."""
    ids = [lst.id for lst in found if lst.id is not None]
    count = deliveries.count_recipients(session, ids, slug)
    if count == 0:
        names = ", ".join(lst.slug for lst in found)
        if people.count_eligible(session, ids) == 0:
            raise StateError(f"nobody on {names} can be mailed: see mailer lists show")
        raise StateError(
            f"everyone on {names} who can be mailed already has {slug}: nothing to send "
            f"(see mailer status {slug})"
        )
    return count


def blockers(
    settings: Settings,
    slug: str,
    lists: Sequence[str],
    *,
    database: Database,
    scheduled_at: datetime,
    skip_checks: str | None = None,
) -> list[str]:
    """Everything that stops :func:`create` for a scheduled slot, each with its fix, in the
    order to fix them: an alert that names only the first costs a round per problem."""
    found: list[str] = []
    try:
        compiled = compile_slug(settings, slug)
    except MailerError as exc:
        return [str(exc)]
    steps: list[Callable[[], object]] = [
        lambda: require_written(compiled),
        lambda: checks.require_clean(
            settings, compiled, checks.local_date(settings, scheduled_at), skip_checks
        ),
        lambda: build.require_built(settings, compiled),
    ]
    for step in steps:
        try:
            step()
        except MailerError as exc:
            found.append(str(exc))
    with database.session() as session:
        try:
            approvals.require(session, compiled, settings.tz, settings.approval)
        except MailerError as exc:
            found.append(str(exc))
        try:
            _require_someone(session, slug, [people.get_list(session, n) for n in lists])
        except MailerError as exc:
            found.append(str(exc))
    return found


def create(
    settings: Settings,
    slug: str,
    lists: Sequence[str],
    *,
    database: Database,
    scheduled_at: datetime | None = None,
    skip_checks: str | None = None,
    on_create: Callable[[Session, int], None] | None = None,
    spread: bool = False,
) -> int:
    """A new send of the approved issue to these lists, frozen as compiled; its id.

    ``on_create(session, send_id)`` runs in the transaction that makes the send (a
    schedule moves past its slot there): if it raises, no send is made."""
    compiled = compile_slug(settings, slug)
    require_written(compiled)
    # Preflight for the day it really goes out: a schedule's slot, else today.
    send_date = checks.local_date(settings, scheduled_at) if scheduled_at else settings.today()
    checks.require_clean(settings, compiled, send_date, skip_checks)
    # The links of every copy work only if base_url is this folder's mailer serve.
    reach.require_answering(settings, checks.clean_reason(skip_checks))
    # Settings that would stop every message are checked before the send exists.
    settings.require_secret_key()
    DkimSigner.from_environment()
    with database.session(write=True) as session:
        approval = approvals.require(session, compiled, settings.tz, settings.approval)
        build.require_built(settings, compiled, published=publications.is_published(session, slug))
        _refuse_if_open(session, slug)
        if not lists:
            raise StateError("name at least one list with --list")
        count = _require_someone(session, slug, [people.get_list(session, n) for n in lists])
        now = clock.utcnow().timestamp()
        ratelimit.require_day(settings, session.connection(), slug, count, spread, now)
        frozen = Send(
            slug=slug,
            content_hash=compiled.content_hash,
            subject=compiled.issue.subject,
            html=compiled.email_html,
            text=compiled.email_text,
            approved_by=approval.approved_by,
            scheduled_at=scheduled_at,
            checks_skipped=checks.clean_reason(skip_checks),
            transport=settings.transport.name,
            overrides=overrides_json(compiled.issue),
        )
        send = sends.create(session, frozen, lists, on_create)
        assert send.id is not None
        # The first send of an issue puts it in the public archive and feed; a rehearsal
        # (the outbox transport) emails nobody, so it publishes nothing either.
        if settings.transport.name != "outbox":
            publications.publish(session, slug, PublishedBy.SEND)
        send_id = send.id
    # Published and stored: its pages leave the preview root for build/.
    build.publish_pages(settings, slug)
    return send_id


def start(
    settings: Settings,
    slug: str,
    lists: Sequence[str],
    *,
    factory: TransportFactory | None = None,
    on_progress: Progress | None = None,
    stop: threading.Event | None = None,
    skip_checks: str | None = None,
    spread: bool = False,
) -> RunResult:
    """Create a send of the approved issue to these lists and run it; ``spread``: over as
    many days as the relay's day limit needs (it pauses, and the worker resumes it)."""

    def new_send(database: Database) -> tuple[int, int]:
        made = create(
            settings, slug, lists, database=database, skip_checks=skip_checks, spread=spread
        )
        return made, 0

    _, result = _choose_and_run(
        settings, new_send, factory=factory, on_progress=on_progress, stop=stop
    )
    return result


def _choose_and_run(
    settings: Settings,
    choose: Callable[[Database], tuple[int, int]],
    *,
    factory: TransportFactory | None,
    on_progress: Progress | None,
    stop: threading.Event | None,
) -> tuple[int, RunResult]:
    """What every mode of `mailer send` but a proof does: ``choose`` the send in a
    transaction of its own (it returns the send's id and how many rows it put back to
    send), then run it; that count and the run's result."""
    with open_db(settings) as database:
        send_id, count = choose(database)
        result = run(
            settings,
            send_id,
            database=database,
            factory=factory,
            on_progress=on_progress,
            stop=stop,
        )
    return count, result


def run(
    settings: Settings,
    send_id: int,
    *,
    database: Database | None = None,
    factory: TransportFactory | None = None,
    on_progress: Progress | None = None,
    stop: threading.Event | None = None,
    seen: SendAsSeen | None = None,
) -> RunResult:
    """Run a send with the configured transport and number of connections (only if it is
    still as ``seen``, when a worker took it up by itself)."""
    if database is None:
        with open_db(settings) as opened:
            return run(
                settings,
                send_id,
                database=opened,
                factory=factory,
                on_progress=on_progress,
                stop=stop,
                seen=seen,
            )
    with database.session() as session:
        send = sends.get(session, send_id)
        slug, transport, overrides = send.slug, send.transport, send.overrides
    if transport is not None and transport != settings.transport.name:
        # A rehearsal must never turn into a real send half way, nor the reverse.
        raise StateError(
            f"send {send_id} of {slug} was started through the {transport} transport and "
            f"cannot go on through {settings.transport.name}: run mailer cancel {slug}, then "
            "start a new send"
        )
    settings = with_overrides(settings, overrides)
    return engine.run(
        settings,
        database,
        send_id,
        factory or transports.connector(settings, slug),
        connections=transports.connections(settings),
        on_progress=on_progress,
        stop=stop,
        seen=seen,
    )


def _latest(session: Session, slug: str, action: str) -> Send:
    try:
        send = sends.latest(session, slug)
    except NotFound:
        raise StateError(
            f"{slug} has never been sent: nothing to {action} "
            f"(start a send with: mailer send {slug} --list LIST)"
        ) from None
    assert send.id is not None
    return send


def resume(
    settings: Settings,
    slug: str,
    *,
    factory: TransportFactory | None = None,
    on_progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> RunResult:
    """Continue the latest unfinished send of ``slug`` after a crash, Ctrl-C or pause."""
    _, result = _choose_and_run(
        settings,
        lambda database: (_resumable(database, slug), 0),
        factory=factory,
        on_progress=on_progress,
        stop=stop,
    )
    return result


def _resumable(database: Database, slug: str) -> int:
    """The latest send of ``slug``, if it is unfinished."""
    with database.session() as session:
        send = _latest(session, slug, "resume")
        if send.status in (SendStatus.SENT, SendStatus.CANCELLED):
            raise StateError(
                f"the latest send of {slug} is {send.status}: there is nothing to resume"
            )
        assert send.id is not None
        return send.id


def retry_failed(
    settings: Settings,
    slug: str,
    *,
    factory: TransportFactory | None = None,
    on_progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> tuple[int, RunResult]:
    """Send again to the recipients of the latest send that failed temporarily."""
    return _choose_and_run(
        settings,
        lambda database: _reset_failed(database, slug),
        factory=factory,
        on_progress=on_progress,
        stop=stop,
    )


def _reset_failed(database: Database, slug: str) -> tuple[int, int]:
    """The latest send of ``slug``, its temporary failures put back to send; how many."""
    with database.session(write=True) as session:
        send = _latest(session, slug, "retry")
        assert send.id is not None
        _refuse_while_sending(session, send, slug)
        if send.status not in (SendStatus.SENT, SendStatus.PAUSED):
            raise StateError(
                f"the latest send of {slug} is {send.status}: there is nothing to retry"
            )
        count = deliveries.reset_for_retry(session, send.id, [DeliveryStatus.FAILED_TEMPORARY])
        if count == 0:
            raise StateError(f"no recipient of {slug} failed temporarily: nothing to retry")
        return send.id, count


def _refuse_while_sending(session: Session, send: Send, slug: str) -> None:
    """Rows must not be reset while a worker sends the send, or finishes messages in hand."""
    assert send.id is not None
    if send.status == SendStatus.SENDING or send_workers.any_live(session.connection(), send.id):
        raise StateError(f"{slug} is being sent right now; wait for it to finish")


@dataclass(frozen=True)
class Unknown:
    """The latest send of an issue with copies whose outcome is unknown, and how many."""

    send_id: int
    count: int
    emails: list[str]


def unknown(settings: Settings, slug: str) -> Unknown:
    """What ``mailer send SLUG --resend-unknown`` would send again (shown before it asks)."""
    with open_db(settings) as database, database.session() as session:
        send = _resendable(session, slug)
        assert send.id is not None
        report = deliveries.report(session, send)
        return Unknown(send.id, report.counts.get(DeliveryStatus.UNKNOWN, 0), report.unknown)


def _resendable(session: Session, slug: str) -> Send:
    """The latest send of ``slug`` that has unknown copies and may run again."""
    _latest(session, slug, "resend")
    for send in sends.of_issue(session, slug):
        assert send.id is not None
        if send.status == SendStatus.CANCELLED:
            continue
        if deliveries.count_with_status(session.connection(), send.id, DeliveryStatus.UNKNOWN):
            return send
    raise StateError(f"no copy of {slug} has an unknown outcome: nothing to resend")


def resend_unknown(
    settings: Settings,
    slug: str,
    *,
    factory: TransportFactory | None = None,
    on_progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> tuple[int, RunResult]:
    """Send again the copies of ``slug`` whose outcome is unknown: the server may have
    accepted them, so some of these people may get a second copy. Only on request."""
    return _choose_and_run(
        settings,
        lambda database: _reset_unknown(database, slug),
        factory=factory,
        on_progress=on_progress,
        stop=stop,
    )


def _reset_unknown(database: Database, slug: str) -> tuple[int, int]:
    """The send of ``slug`` with unknown copies, those put back to send; how many."""
    with database.session(write=True) as session:
        send = _resendable(session, slug)
        assert send.id is not None
        _refuse_while_sending(session, send, slug)
        return send.id, deliveries.reset_for_retry(session, send.id, [DeliveryStatus.UNKNOWN])


def proof(
    settings: Settings, slug: str, to: Sequence[str], *, factory: TransportFactory | None = None
) -> list[tuple[str, str]]:
    """Send a ``[PROOF]`` copy to each address; no approval needed and no ledger written."""
    compiled = compile_slug(settings, slug)
    settings = issue_settings(settings, compiled.issue)
    content = Content(slug, compiled.issue.subject, compiled.email_html, compiled.email_text)
    template = MessageTemplate(
        settings, content, list_id=f"proof.{settings.sender.domain}", subject_prefix="[PROOF] "
    )
    signer = DkimSigner.from_environment()
    results = []
    open_transport = factory or transports.factory(settings, f"{slug}/proofs")
    with open_transport() as transport:
        for address in to:
            email = normalise(address)
            _, data = template.render(Recipient(email))
            if signer is not None:
                data = signer.sign(data)
            results.append((email, transport.send(settings.sender.from_address, email, data)))
    return results


def pause(settings: Settings, slug: str) -> int:
    with open_db(settings) as database, database.session(write=True) as session:
        for send in sends.open_sends(session, slug):
            if send.status == SendStatus.SENDING:
                assert send.id is not None
                sends.transition(
                    session,
                    send.id,
                    SendStatus.PAUSED,
                    "paused by mailer pause",
                    pause=PauseReason.OPERATOR,
                )
                return send.id
        raise StateError(f"{slug} is not being sent: nothing to pause")


@dataclass(frozen=True)
class Cancelled:
    send_id: int | None
    schedules: list[Schedule]


def cancel(settings: Settings, slug: str) -> Cancelled:
    """Cancel the send of ``slug`` (new, paused, or sending: every worker stops at its next
    commit) and every active schedule that would send it."""
    journals = Journals(settings)
    with open_db(settings) as database, database.session(write=True) as session:
        cancelled: int | None = None
        for send in sends.open_sends(session, slug):
            assert send.id is not None
            sends.transition(session, send.id, SendStatus.CANCELLED, "cancelled by mailer cancel")
            # Rows a crashed worker left in flight were never recorded as sent: they become
            # unknown, so a later send of the issue mails these people (at most a second
            # copy). Workers still running record what they have in hand, then stop.
            send_workers.reap(session.connection(), send.id, journals)
            cancelled = send.id
        dropped = [
            schedules.cancel(session, item.id)
            for item in schedules.active_for_issue(session, slug)
            if item.id is not None
        ]
        if cancelled is None and not dropped:
            raise NotFound(
                f"{slug} has no scheduled, new or paused send to cancel "
                "(see: mailer status and mailer schedules)"
            )
    journals.discard()
    return Cancelled(cancelled, dropped)


def skipped_checks(settings: Settings, slug: str) -> dict[int, str]:
    """Why each send of ``slug`` that skipped the preflight checks did, by send id."""
    with open_db(settings) as database, database.session() as session:
        return sends.checks_skipped(session, slug)


def rehearsals(settings: Settings, slug: str) -> set[int]:
    """The ids of the sends of ``slug`` that went through the outbox: rehearsals."""
    with open_db(settings) as database, database.session() as session:
        return {s.id for s in sends.of_issue(session, slug) if s.id and s.transport == "outbox"}


def status(settings: Settings, slug: str) -> list[deliveries.SendSummary]:
    """Every send of ``slug``, newest first, with the workers sending it."""
    with open_db(settings) as database, database.session() as session:
        found = sends.of_issue(session, slug)
        if not found:
            raise NotFound(f"{slug} has never been sent: nothing to show")
        conn = session.connection()
        return [
            deliveries.report(session, send, workers=send_workers.of_send(conn, send.id or 0))
            for send in found
        ]


def recent(settings: Settings, limit: int = 20) -> list[deliveries.SendSummary]:
    """The newest sends across issues, newest first."""
    with open_db(settings) as database, database.session() as session:
        return [
            deliveries.report(session, send, failed_limit=0)
            for send in sends.recent(session, limit)
        ]
