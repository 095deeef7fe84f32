"""Preflight checks: what a comms officer would be embarrassed to send (``mailer check``).

Each check is a small function with a stable code, a severity and a fix hint, registered
in :mod:`.registry`; the modules group them: :mod:`.dates`, :mod:`.awareness`,
:mod:`.links`, :mod:`.access`, :mod:`.leftovers`, :mod:`.output`, :mod:`.spam` and, for
``--online``, :mod:`.online`. :func:`run` runs them for a send date; :func:`require_clean`
is what approve, send and the worker call, and refuses an issue with errors.
"""

from __future__ import annotations

from mailer.checks.preflight import Report, clean_reason, require_clean, run
from mailer.checks.record import LastRun, last_run, record
from mailer.checks.registry import CHECKS, Check, Finding, Severity
from mailer.checks.when import local_date, planned_send_date

__all__ = [
    "CHECKS",
    "Check",
    "Finding",
    "LastRun",
    "Report",
    "Severity",
    "clean_reason",
    "last_run",
    "local_date",
    "planned_send_date",
    "record",
    "require_clean",
    "run",
]
