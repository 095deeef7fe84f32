"""The README's "A month with mailer", walked from `mailer init` in an empty folder to a
delivered send through a real SMTP server (aiosmtpd) and a schedule a real worker picks
up; and the cron recipe of docs/scheduling.md, run as written."""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import signal
import subprocess
import sys
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import httpx
import pytest
from typer.testing import CliRunner

from conftest import REPO, Result
from mailer.cli import app
from nginx_server import nginx_in_front
from send_helpers import Lines, addresses, mailer_process, make_list, sql
from smtp_server import SMTPServer
from web_helpers import free_port

LONDON = ZoneInfo("Europe/London")
PEOPLE = ["amira@example.org", "ben@example.org", "chloe@example.org"]
CHAIR = "chair@example.org"


def mailer(*args: str, input: str | None = None) -> Result:
    r = CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)
    result = Result(r.exit_code, r.stdout, r.stderr)
    assert r.exit_code == 0, f"mailer {' '.join(args)}:\n{result.output}"
    return result


def shape(command: str) -> tuple[str, ...]:
    """A command's words without their values: ``mailer new --date --from``."""
    words = shlex.split(command.split("  #")[0])
    kept = [words[0], words[1]]
    if len(words) > 2 and words[1] in ("lists", "subscribers") and not words[2].startswith("-"):
        kept.append(words[2])
    return (*kept, *sorted(w for w in words[2:] if w.startswith("--")))


def readme_walk() -> list[tuple[str, ...]]:
    """The mailer commands of the README's month, in order, as shapes."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    month = text[text.index("## A month with mailer") : text.index("## Commands")]
    lines = re.findall(r"^\$ (mailer .*)$", month, re.MULTILINE)
    return [shape(line) for line in lines]


def environment_file(path: Path, port: int) -> None:
    """/etc/mailer/environment as docs/scheduling.md shows it, for the test's server (and
    on PostgreSQL its MAILER_DATABASE_URL, as docs/scaling.md says to add)."""
    path.parent.mkdir(parents=True)
    database = os.environ.get("MAILER_DATABASE_URL")
    path.write_text(
        "# /etc/mailer/environment\n"
        "MAILER_TRANSPORT=smtp\n"
        "MAILER_SMTP_HOST=127.0.0.1\n"
        f"MAILER_SMTP_PORT={port}\n"
        "MAILER_SMTP_SECURITY=none\n"
        + (f"MAILER_DATABASE_URL={shlex.quote(database)}\n" if database else ""),
        encoding="utf-8",
    )
    path.chmod(0o600)


def sourced(path: Path) -> dict[str, str]:
    """What `set -a; . FILE; set +a` exports, read from a real shell."""
    out = subprocess.run(
        ["sh", "-c", f"set -a; . {shlex.quote(str(path))}; set +a; env -0"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        check=True,
    ).stdout.decode()
    pairs = (item.partition("=") for item in out.split("\0") if item)
    return {k: v for k, _, v in pairs if k.startswith("MAILER_")}


def stopped(process: subprocess.Popen[bytes]) -> None:
    """Stop a `mailer serve` as systemd does, and close its error stream."""
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    if process.stderr is not None:
        process.stderr.close()


def session_day(after: dt.date) -> dt.date:
    """A weekday at least two weeks on that is not a bank holiday: a clean training date."""
    closed = holidays.country_holidays("GB", subdiv="ENG", years=[after.year, after.year + 1])
    day = after + dt.timedelta(days=14)
    while day.weekday() >= 5 or day in closed:
        day += dt.timedelta(days=1)
    return day


def issue_text(day: dt.date, session: dt.date) -> str:
    return f"""\
subject: "CSCP Newsletter – {day:%B %Y}"
preheader: "A new chair for the partnership, and new dates for Understanding the Levels of Need"
date: {day.isoformat()}
intro: |
  Welcome to this month's newsletter from the Cumberland Safeguarding Children
  Partnership.
sections:
  - type: news
    title: "A new chair for the partnership"
    body: |
      The partnership has appointed a new independent chair, who starts this month
      and will meet the safeguarding leads of every agency in the first weeks.
  - type: training
    title: "Understanding the Levels of Need"
    body: |
      For everyone who works with children, young people and families.
    booking_url: "https://training.cumberland-lscp.org.uk/levels-of-need"
    sessions:
      - {{date: {session.isoformat()}, start: "09:30", end: "12:30", venue: Carlisle}}
"""


def _shows_the_issue(root: Path, says: str, *args: str) -> subprocess.Popen[bytes]:
    """``mailer ARGS``, which prints ``says`` and its address: the issue is on that page;
    stopped with Ctrl-C, and returned once it has exited."""
    process = mailer_process(root, *args)
    assert process.stdout is not None and process.stderr is not None
    lines = Lines(process.stdout)
    try:
        url = lines.wait_for(says).split()[2]
        assert "A new chair for the partnership" in httpx.get(url, timeout=60).text
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
        lines.close()
        process.stderr.close()
    return process


@pytest.fixture
def empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILER_SECRET_KEY")
    return tmp_path


def test_the_readme_month_from_mailer_init_to_a_scheduled_send(
    empty: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    walked: list[str] = []

    def run(*args: str, input: str | None = None) -> Result:
        walked.append(shlex.join(["mailer", *args]))
        return mailer(*args, input=input)

    with ExitStack() as stack:
        server = stack.enter_context(SMTPServer())
        # The web server of docs/deploy/: nginx with TLS at base_url, mailer serve behind it.
        port = free_port()
        nginx = stack.enter_context(nginx_in_front(empty / "nginx", port))
        monkeypatch.setenv("SSL_CERT_FILE", str(nginx.prefix / "cert.pem"))
        # Once: the folder, the list, the mail server.
        answers = [
            "CSCP Newsletter",
            "Cumberland Safeguarding Children Partnership",
            nginx.url,
            "newsletter@cumberland-lscp.org.uk",
            "Cumberland House, Botchergate, Carlisle CA1 1RZ",
        ]
        r = run("init", "cscp-news", input="\n".join(answers) + "\n")
        assert "What next" in r.stdout
        root = empty / "cscp-news"
        os.chdir(root)
        with (root / "mailer.toml").open("a", encoding="utf-8") as toml:
            toml.write(f'\n[approval]\napprovers = ["{CHAIR}"]\n')
        run("lists", "create", "practitioners", "--name", "Practitioners")
        (root / "people.csv").write_text(
            "email,name\n" + "".join(f"{p},{p.split('@')[0].title()}\n" for p in PEOPLE)
        )
        run("subscribers", "import", "people.csv", "--list", "practitioners")
        env_file = empty / "etc/mailer/environment"
        environment_file(env_file, server.port)
        for key, value in sourced(env_file).items():
            monkeypatch.setenv(key, value)
        # systemd starts mailer serve (docs/deploy/mailer.service) with the same environment.
        serve = mailer_process(root, "serve", "--port", str(port))
        assert serve.stdout is not None
        served = Lines(serve.stdout)
        stack.callback(served.close)
        stack.callback(stopped, serve)
        started = served.wait_for(f"on http://127.0.0.1:{port}/")
        assert "rehearsal" not in started
        doctor = run("doctor", "--smtp", "--web").stdout
        assert f"ok    smtp        connected to 127.0.0.1:{server.port}" in doctor
        assert f"ok    web         {nginx.url}/ is this folder's mailer serve" in doctor

        # Each month.
        today = dt.datetime.now(LONDON).date()
        first, second = "walk-1", "walk-2"
        run("new", first, "--date", today.isoformat())
        (root / "issues" / first / "issue.yaml").write_text(
            issue_text(today, session_day(today)), encoding="utf-8"
        )
        walked.append(f"mailer preview {first}")
        _shows_the_issue(root, "Previewing on ", "preview", first, "--port", "0", "--no-browser")
        walked.append(f"mailer edit {first}")
        editor = _shows_the_issue(root, "Editing on ", "edit", first, "--no-browser")
        assert editor.returncode == 0
        run("build", first)
        run("check", first)
        run("send", first, "--to", "me@example.org")
        (proof,) = server.received
        assert proof.rcpt_tos == ["me@example.org"]
        assert proof.message["Subject"].startswith("[PROOF] CSCP Newsletter")

        # The chair approves, through the link mailed to them, on the web side.
        def approve_by_link(slug: str) -> None:
            run("approve", slug, "--request")
            mailed = [r.message for r in server.received if r.rcpt_tos == [CHAIR]][-1]
            text = mailed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            (page,) = re.findall(r"https://\S+/approve/\S+", text)[-1:]
            assert page.startswith(nginx.url)
            assert httpx.get(page, timeout=60).status_code == 200
            done = httpx.post(
                page,
                data={"decision": "approve"},
                headers={"Sec-Fetch-Site": "same-origin"},
                timeout=60,
            )
            assert done.status_code == 200 and f"approved by {CHAIR}" in done.text

        approve_by_link(first)
        r = run("send", first, "--list", "practitioners", input="y\n")
        assert f"{first}, approved by {CHAIR}:" in r.stdout
        assert f"  Transport:  SMTP through 127.0.0.1:{server.port} (none)" in r.stdout
        assert "  To:         practitioners: 3 people" in r.stdout
        readers = [a for a in server.handler.recipients() if a in PEOPLE]
        assert Counter(readers) == Counter(PEOPLE)
        run("build", "--all")
        assert f'href="{nginx.url}/{first}/"' in (root / "build/index.html").read_text(
            encoding="utf-8"
        )
        assert "sent" in run("status", first).stdout
        story = run("history", first).stdout
        assert f"approved by {CHAIR}" in story and "sent, approved by" in story

        # The next one goes out on its own: a real worker picks up its schedule.
        run("new", second, "--date", today.isoformat(), "--from", first)
        # Every line marked REVIEW checked, and its mark deleted (check refuses one left).
        carried = root / "issues" / second / "issue.yaml"
        marked = carried.read_text(encoding="utf-8")
        carried.write_text(re.sub(r"\s*# REVIEW:.*", "", marked), encoding="utf-8")
        run("build", second)
        approve_by_link(second)
        soon = dt.datetime.now(LONDON) + dt.timedelta(minutes=5)
        at = f"{soon.day}/{soon.month}/{soon.year} {soon.hour % 12 or 12}.{soon:%M}{soon:%p}"
        r = run("schedule", second, "--list", "practitioners", "--at", at.lower())
        assert f"({soon.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC)" in r.stdout
        run("schedule", "--monthly", "first Tuesday 9am", "--list", "practitioners")
        # systemd runs the worker with the environment file (EnvironmentFile=): the same
        # variables, read as systemd reads them; its clock runs ten minutes ahead.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
        for line in env_file.read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key] = value
        env["MAILER_CLOCK_OFFSET"] = "600"
        walked.append("mailer worker")
        worker = subprocess.Popen(
            [sys.executable, "-m", "mailer", "worker", "--poll", "0.5"],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert worker.stderr is not None
        log = Lines(worker.stderr)
        try:
            log.wait_for(f"finished {second}")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=120)
            log.close()
        assert worker.returncode == 0, log.text()
        listing = run("schedules").stdout
        assert f"{second}  to practitioners  [done]" in listing
        assert Counter(server.handler.recipients()) == Counter(
            ["me@example.org", CHAIR, *PEOPLE, CHAIR, *PEOPLE]
        )
        # Every reader's copies carried their own unsubscribe link, and nobody's address
        # was in the worker's log.
        for received in server.received[1:]:
            assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert not any(p in log.text() for p in PEOPLE)
        # A reader unsubscribes with the one-click POST of their mail program, through nginx.
        (copy,) = [r.message for r in server.received if r.rcpt_tos == [PEOPLE[0]]][-1:]
        (link,) = re.findall(r"<(https://[^>]+)>", str(copy["List-Unsubscribe"]))
        assert link.startswith(nginx.url + "/unsubscribe/")
        done = httpx.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=60)
        assert done.status_code == 200 and "You are unsubscribed" in done.text

    # The walk is the README's, command for command (the worker stands for systemd).
    done = [shape(c) for c in walked]
    for step in readme_walk():
        assert step in done, f"the README's `{' '.join(step)}` is not walked by this test"


def test_the_cron_recipe_exports_the_environment_and_reports_a_failure(
    cli: Any, newsletter: Path, tmp_path: Path
) -> None:
    text = (REPO / "docs/scheduling.md").read_text(encoding="utf-8")
    (crontab,) = re.findall(r"```cron\n(.*?)```", text, re.DOTALL)
    (line,) = [x for x in crontab.splitlines() if x.startswith("*/5")]
    command = line.split(None, 5)[5]
    mailer_bin = Path(sys.executable).parent / "mailer"
    env_file = tmp_path / "etc/mailer/environment"
    make_list(cli, newsletter, "practitioners", addresses(3))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    soon = (dt.datetime.now(LONDON) + dt.timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M")
    assert cli("schedule", "2025-11", "--list", "practitioners", "--at", soon).exit_code == 0
    command = (
        command.replace("/srv/newsletter", shlex.quote(str(newsletter)))
        .replace("/etc/mailer/environment", shlex.quote(str(env_file)))
        .replace(".venv/bin/mailer", shlex.quote(str(mailer_bin)))
    )
    # Cron's environment: no MAILER_ variable but the test's clock offset.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(MAILER_CLOCK_OFFSET="600", MAILER_SECRET_KEY=os.environ["MAILER_SECRET_KEY"])
    with SMTPServer() as server:
        environment_file(env_file, server.port)
        done = subprocess.run(
            ["sh", "-c", command], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr
        # Through the SMTP server of the environment file, not the outbox.
        assert Counter(server.handler.recipients()) == Counter(addresses(3))
        assert not (newsletter / "outbox/2025-11").exists()

        # A slot that fails: the run prints one line, which cron mails to MAILTO.
        path = newsletter / "issues/2025-11/issue.yaml"
        path.write_text(path.read_text(encoding="utf-8").replace("Impact Chronology", "Impact"))
        soon = (dt.datetime.now(LONDON) + dt.timedelta(minutes=6)).strftime("%Y-%m-%d %H:%M")
        assert cli("build", "2025-11").exit_code == 0
        assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
        assert cli("lists", "create", "schools", "--name", "Schools").exit_code == 0
        assert cli("schedule", "2025-11", "--list", "schools", "--at", soon).exit_code == 0
        path.write_text(path.read_text(encoding="utf-8").replace("Impact", "Impacts"))
        done = subprocess.run(
            ["sh", "-c", command], env=env, capture_output=True, text=True, timeout=300
        )
    assert done.stdout.startswith("mailer worker --once failed: see "), done.stdout
    log = (newsletter / ".mailer/cron.log").read_text(encoding="utf-8")
    assert "not sent: 2025-11 changed since Sam Patel approved it" in log
    assert sql(newsletter, "SELECT status FROM schedule ORDER BY id") == [
        ("done",),
        ("active",),
    ]
