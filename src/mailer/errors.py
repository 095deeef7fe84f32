"""The one exception tree of mailer.

Every error the product raises on purpose is a :class:`MailerError`; the CLI turns it into
one line on stderr and exit code 1. Third-party errors are mapped at the boundary with
``raise Ours(...) from exc``, through a table where the most specific class wins
(:func:`map_exception`).

::

    MailerError
    ├── ConfigError            mailer.toml or the environment is wrong or incomplete
    ├── ContentError           an issue folder is invalid (carries every Problem found)
    ├── RenderError            a template or the MJML/CSS toolchain failed
    ├── InvalidInput           a value given to a command is not valid (an address, a slug)
    │   ├── NothingImported    no row of a subscriber file could be imported
    │   ├── BadToken           an unsubscribe or preferences link was altered or forged
    │   │   └── ExpiredToken   a genuine confirmation link that is too old
    │   └── WebhookRefused     a relay's webhook request failed its signature, time or replay check
    ├── StoreError             the database refused or is unusable
    │   ├── NotFound           a list, subscriber, issue or send does not exist
    │   ├── AlreadyExists      a list with that slug exists already
    │   ├── SchemaTooNew       the database was written by a newer mailer
    │   └── ImportFileError    a subscriber file cannot be read at all
    ├── StateError             an action is not allowed in the current state
    │   ├── ApprovalError      the issue is not approved, or changed since approval
    │   ├── ChecksFailed       the preflight checks found errors for the send date
    │   ├── WebCheckFailed     base_url is not answered by this folder's mailer serve
    │   ├── EditConflict       issue.yaml changed on disk since the editor opened it
    │   ├── Suppressed         the person unsubscribed, bounced, complained or was erased
    │   ├── TooManyRequests    a web form was posted too often from one place or for one address
    │   └── CrossSite          a form was posted from another site
    ├── ScheduleError          a time or rule cannot be scheduled
    ├── MailboxError           the bounce mailbox cannot be reached or refused the login
    ├── UnreadableMessage      a returned message is beyond the reading limits: quarantined
    └── SendError              delivery failed
        ├── TemporarySendError a 4xx reply or a dropped connection: worth retrying
        ├── PermanentSendError a 5xx reply for a recipient: never retry
        ├── DeliveryUnknown    the message was sent and no final reply came: never guessed
        └── TransportUnavailable  the server is down or refused our credentials: pause
            └── TokenRefused   no OAuth 2.0 access token could be had (auth = "oauth2")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


class MailerError(Exception):
    """Base class of every error mailer raises on purpose."""


class ConfigError(MailerError):
    """mailer.toml or the environment is wrong or incomplete."""


@dataclass(frozen=True)
class Problem:
    """One problem in a content file, located precisely enough to fix it."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ContentError(MailerError):
    """An issue folder is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class RenderError(MailerError):
    """A template or the MJML/CSS toolchain failed."""


class InvalidInput(MailerError):
    """A value given to a command is not valid: an email address, a list slug, a name."""


class BadToken(InvalidInput):
    """A signed link was altered, truncated, or signed with another key."""


class ExpiredToken(BadToken):
    """A genuine link that has expired (confirmation links do; unsubscribe links never)."""


class WebhookRefused(InvalidInput):
    """A request at a relay's webhook failed its check: the signature, the credentials, its
    time, or it replays an earlier one. It changes nobody and is kept for the operator.
    ``retry``: the check could not be made now (the signing certificate could not be
    fetched), so the relay is asked to send it again later."""

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


class NothingImported(InvalidInput):
    """No row of a subscriber file could be imported; the report says why for each row."""


class StoreError(MailerError):
    """The database refused or is unusable."""


class NotFound(StoreError):
    """A list, subscriber, issue or send does not exist."""


class AlreadyExists(StoreError):
    """A list with that slug exists already."""


class SchemaTooNew(StoreError):
    """The database was written by a newer version of mailer."""


class ImportFileError(StoreError):
    """A subscriber file cannot be read at all."""


class StateError(MailerError):
    """An action is not allowed in the current state."""


class ApprovalError(StateError):
    """The issue is not approved, or its content changed since it was approved."""


class EditConflict(StateError):
    """issue.yaml changed on disk since ``mailer edit`` opened it: nothing was saved."""

    def __init__(self, message: str, diff: Sequence[str]) -> None:
        super().__init__(message)
        self.diff = list(diff)


class ChecksFailed(StateError):
    """The preflight checks (``mailer check``) found errors for the date the issue goes out."""


class WebCheckFailed(StateError):
    """base_url is not answered by this folder's ``mailer serve``: links would be dead."""


class Suppressed(StateError):
    """The person unsubscribed, bounced, complained or was erased: never subscribed again."""


class TooManyRequests(StateError):
    """A web form was posted too often from one IP address or for one email address."""


class CrossSite(StateError):
    """A form of the site was posted from another site (or without proof of its origin)."""


class LeaseLost(StateError):
    """Another worker took over a job only one may run (the scheduler, the bounce mailbox)."""


class ScheduleError(MailerError):
    """A time or a rule cannot be scheduled."""


class MailboxError(MailerError):
    """The bounce mailbox cannot be reached, refused the login, or refused a command."""


class UnreadableMessage(MailerError):
    """A returned message cannot be read within the limits (size, depth, parts, time)."""


class SendError(MailerError):
    """Delivery failed."""


class TemporarySendError(SendError):
    """A 4xx reply or a dropped connection: worth retrying later."""


class PermanentSendError(SendError):
    """A 5xx reply for a recipient: retrying will not help.

    ``bounce`` says whether the address itself is bad (refused at RCPT TO, or a 5.1.x
    status), so the subscriber is marked bounced; a message refused for its content is not.
    """

    def __init__(self, message: str, *, bounce: bool = True) -> None:
        super().__init__(message)
        self.bounce = bounce


class DeliveryUnknown(SendError):
    """The whole message reached the server and no final reply came (the line dropped, or
    the reply was later than the timeout): the server may have accepted it. Such a copy is
    never retried on its own, since retrying could deliver a second one."""


class TransportUnavailable(SendError):
    """The server is down or refused our credentials: the send pauses, nobody is marked failed."""


class TokenRefused(TransportUnavailable):
    """The identity provider gave no OAuth 2.0 access token (a wrong secret, an unknown
    application, no answer): nothing can log in, so a send pauses as for a refused login."""


# -- mapping third-party errors -------------------------------------------------------------

ErrorTable = Sequence[tuple[type[BaseException], Callable[[Any], MailerError]]]


def map_exception(exc: BaseException, table: ErrorTable) -> MailerError | None:
    """Our error for a third-party ``exc``, from the row of ``table`` whose class is the most
    specific one ``exc`` is an instance of (its nearest base in the MRO), or None.

    Order in the table does not matter: ``smtplib.SMTPException`` is an ``OSError``, and a
    row for ``SMTPNotSupportedError`` wins over both.
    """
    mro = type(exc).__mro__
    best: tuple[int, Callable[[Any], MailerError]] | None = None
    for kind, make in table:
        if isinstance(exc, kind):
            rank = mro.index(kind) if kind in mro else len(mro)
            if best is None or rank < best[0]:
                best = (rank, make)
    return best[1](exc) if best is not None else None
