"""The operations behind ``mailer approve``, ``send``, ``pause``, ``cancel`` and ``status``.

Each function takes settings, does one job through :mod:`mailer.sends` and
:mod:`mailer.sender`, and returns plain results for the CLI (or the worker) to print.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlmodel import Session

from mailer import db, sender, sends, store, transports
from mailer.build import compile_slug
from mailer.config import Settings
from mailer.errors import NotFound, StateError
from mailer.message import Content, DkimSigner, MessageTemplate, Recipient
from mailer.models import Approval, DeliveryStatus, Send, SendStatus
from mailer.render import CompiledIssue
from mailer.sender import RunResult
from mailer.subscribers import normalise
from mailer.transports import TransportFactory

Progress = Callable[[int, int], None]


def approve(settings: Settings, slug: str, by: str) -> Approval:
    compiled = compile_slug(settings, slug)
    with db.open_db(settings) as database, database.session(write=True) as session:
        return sends.approve(session, compiled, by)


@dataclass(frozen=True)
class Preview:
    compiled: CompiledIssue
    approval: Approval
    lists: list[str]
    recipients: int


def preview(settings: Settings, slug: str, lists: Sequence[str]) -> Preview:
    """Everything `mailer send` checks before asking for confirmation; changes nothing."""
    compiled = compile_slug(settings, slug)
    with db.open_db(settings) as database, database.session() as session:
        approval = sends.require_approval(session, compiled)
        found = [store.get_list(session, name) for name in dict.fromkeys(lists)]
        if not found:
            raise StateError("name at least one list with --list")
        busy = sends.open_sends(session, slug)
        if busy:
            raise StateError(
                f"{slug} already has a send that is {busy[0].status}: "
                f"use `mailer send {slug} --resume`, or `mailer cancel {slug}` first"
            )
        count = sends.count_recipients(session, [lst.id for lst in found if lst.id], slug)
        return Preview(compiled, approval, [lst.slug for lst in found], count)


def start(
    settings: Settings,
    slug: str,
    lists: Sequence[str],
    *,
    factory: TransportFactory | None = None,
    on_progress: Progress | None = None,
) -> RunResult:
    """Create a send of the approved issue to these lists and run it."""
    compiled = compile_slug(settings, slug)
    # Settings that would stop every message are checked before the send exists.
    settings.require_secret_key()
    DkimSigner.from_environment()
    with db.open_db(settings) as database, database.session(write=True) as session:
        approval = sends.require_approval(session, compiled)
        send = sends.create(session, compiled, lists, approval)
        assert send.id is not None
        send_id = send.id
    return run(settings, send_id, factory=factory, on_progress=on_progress)


def run(
    settings: Settings,
    send_id: int,
    *,
    database: db.Database | None = None,
    factory: TransportFactory | None = None,
    on_progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> RunResult:
    """Run a send with the configured transport and number of connections."""
    if database is None:
        with db.open_db(settings) as opened:
            return run(
                settings,
                send_id,
                database=opened,
                factory=factory,
                on_progress=on_progress,
                stop=stop,
            )
    with database.session() as session:
        slug = sends.get(session, send_id).slug
    return sender.run(
        settings,
        database,
        send_id,
        factory or transports.factory(settings, slug),
        connections=transports.connections(settings),
        on_progress=on_progress,
        stop=stop,
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


def _resumable(session: Session, slug: str) -> int:
    send = _latest(session, slug, "resume")
    assert send.id is not None
    if send.status in (SendStatus.SENT, SendStatus.CANCELLED):
        raise StateError(f"the latest send of {slug} is {send.status}: there is nothing to resume")
    return send.id


def resume(
    settings: Settings,
    slug: str,
    *,
    factory: TransportFactory | None = None,
    on_progress: Progress | None = None,
) -> RunResult:
    """Continue the latest unfinished send of ``slug`` after a crash, Ctrl-C or pause."""
    with db.open_db(settings) as database, database.session() as session:
        send_id = _resumable(session, slug)
    return run(settings, send_id, factory=factory, on_progress=on_progress)


def retry_failed(
    settings: Settings,
    slug: str,
    *,
    factory: TransportFactory | None = None,
    on_progress: Progress | None = None,
) -> tuple[int, RunResult]:
    """Send again to the recipients of the latest send that failed temporarily."""
    with db.open_db(settings) as database, database.session(write=True) as session:
        send = _latest(session, slug, "retry")
        assert send.id is not None
        if send.status == SendStatus.SENDING or (
            send.claimed_by is not None and not sends.abandoned(send.claimed_by, send.heartbeat_at)
        ):
            raise StateError(f"{slug} is being sent right now; wait for it to finish")
        if send.status not in (SendStatus.SENT, SendStatus.PAUSED, SendStatus.FAILED):
            raise StateError(
                f"the latest send of {slug} is {send.status}: there is nothing to retry"
            )
        count = sends.reset_for_retry(session, send.id, [DeliveryStatus.FAILED_TEMPORARY])
        if count == 0:
            raise StateError(f"no recipient of {slug} failed temporarily: nothing to retry")
        send_id = send.id
    return count, run(settings, send_id, factory=factory, on_progress=on_progress)


def proof(
    settings: Settings, slug: str, to: Sequence[str], *, factory: TransportFactory | None = None
) -> list[tuple[str, str]]:
    """Send a ``[PROOF]`` copy to each address; no approval needed and no ledger written."""
    compiled = compile_slug(settings, slug)
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
    with db.open_db(settings) as database, database.session(write=True) as session:
        for send in sends.open_sends(session, slug):
            if send.status in (SendStatus.SENDING, SendStatus.SCHEDULED):
                assert send.id is not None
                sends.transition(session, send.id, SendStatus.PAUSED, "paused by mailer pause")
                return send.id
        raise StateError(f"{slug} is not being sent: nothing to pause")


def cancel(settings: Settings, slug: str) -> int:
    with db.open_db(settings) as database, database.session(write=True) as session:
        for send in sends.open_sends(session, slug):
            assert send.id is not None
            if send.status == SendStatus.SENDING:
                raise StateError(f"{slug} is being sent: run `mailer pause {slug}` first")
            sends.transition(session, send.id, SendStatus.CANCELLED, "cancelled by mailer cancel")
            return send.id
        raise NotFound(f"{slug} has no scheduled or paused send to cancel")


def status(settings: Settings, slug: str) -> sends.Report:
    with db.open_db(settings) as database, database.session() as session:
        return sends.report(session, sends.latest(session, slug))
