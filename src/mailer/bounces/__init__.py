"""Reading what comes back after a send (bounces, complaints, unsubscribe emails) and reporting.

:func:`classify` is the entry point for a raw message: one :class:`RecipientFinding` per recipient
(address, category, status code, the server's words), without a database or settings.

:mod:`.reading` reads a message under limits, :mod:`.diagnose` says what it reports per
recipient (with the phrases of :mod:`.wording`), :mod:`.process` ties it to a copy by a
MAC mailer made and commits the result, :mod:`.policy` decides what changes (for every
source: the mailbox, the pipe, later a relay's webhook), :mod:`.imap` reads the bounce
mailbox, :mod:`.listing` and :mod:`.explain` serve the operator, and :mod:`.report` with
:mod:`.report_html` summarise a send for the board.
"""

from mailer.bounces.diagnose import RecipientFinding, classify

__all__ = ["RecipientFinding", "classify"]
