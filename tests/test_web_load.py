"""Load: 200 concurrent one-click unsubscribes (and a stream of archive reads) against a
real `mailer serve` while a 10,000-recipient send runs through the outbox.

The driver is bench/web_load.py, which also reports requests per second and latencies
(bench/RESULTS.md); this test asserts only what a user would notice, never a speed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import web_load


def test_unsubscribes_during_a_big_send_all_succeed_and_stop_the_mail(tmp_path: Path) -> None:
    figures = web_load.run(tmp_path, recipients=10_000, posts=200)
    assert figures.sent_before_burst > 0  # the POSTs raced a send in progress
    assert figures.post_ok == 200
    assert figures.gets > 0 and figures.get_ok == figures.gets
    assert figures.recorded_unsubscribes == 200  # every unsubscribe recorded, once each
    assert figures.unsubscribed_memberships == 200
    # The send finished with its ledger complete: every row has an outcome.
    assert figures.ledger.get("pending", 0) == figures.ledger.get("in-flight", 0) == 0
    assert sum(figures.ledger.values()) == 10_000
    # Nobody was mailed after their unsubscribe was committed: whoever got a copy had it
    # claimed by the sender before they pressed the button.
    assert figures.mailed_after_unsubscribe == []
