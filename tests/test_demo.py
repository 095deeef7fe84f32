"""``make demo``: the main job end to end on the embedded defaults, safe to run twice."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys
from pathlib import Path


def _demo(root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    return subprocess.run(
        [sys.executable, "-m", "mailer.cli.demo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_make_demo_builds_sends_to_the_demo_list_and_is_safe_to_run_again(
    newsletter: Path,
) -> None:
    first = _demo(newsletter)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    key = newsletter / ".mailer" / "secret_key"
    assert key.is_file() and key.stat().st_mode & 0o777 == 0o600
    assert "list 'demo': 5 subscribed, 1 unsubscribed" in first.stdout
    assert "5 of 5 sent" in first.stdout
    messages = sorted((newsletter / "outbox" / "2025-11").glob("*.eml"))
    assert len(messages) == 5
    recipients = {
        email.message_from_bytes(m.read_bytes(), policy=email.policy.default)["To"]
        .addresses[0]
        .addr_spec
        for m in messages
    }
    assert len(recipients) == 5
    assert "finn.robson@example.org" not in recipients  # unsubscribed
    for page in ("build/2025-11/email.html", "build/2025-11/index.html", "build/index.html"):
        assert (newsletter / page).is_file()
        assert page in first.stdout

    second = _demo(newsletter)
    assert second.returncode == 0, second.stderr
    assert "everyone on the demo list already has this issue" in second.stdout
    assert len(sorted((newsletter / "outbox" / "2025-11").glob("*.eml"))) == 5
