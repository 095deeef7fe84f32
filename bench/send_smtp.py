"""Benchmark: a send over SMTP against Postfix's own client, to the same sink, in one run.

Run it from the repository: ``.venv/bin/python bench/send_smtp.py [--sizes 10000 100000]``
(``make bench`` installs Debian's postfix for ``smtp-sink`` and ``smtp-source`` first).
It prints figures and asserts nothing: timings depend on the (shared) machine, so each
speed comes with a ratio to a baseline measured in the same run, the contenders taking
turns.

1. ``mailer send 2025-11 --resume`` as a real process, 4 connections to ``smtp-sink`` on
   127.0.0.1, the ledger on SQLite, every message personalised, against
   ``smtp-source -d -s 4 -m N -l SIZE`` (Postfix's C client: 4 sessions, N messages of the
   same size, no per-recipient work at all) to a fresh sink. Messages a second of the
   send phase (from the ledger's first to last acceptance, over N - 1; for smtp-source
   the whole run), the ratio, the sender's CPU per message and peak RSS, and the ledger's
   sent count against the sink's count, which must be equal.
2. The obvious approach, an ``EmailMessage`` per recipient sent with smtplib on one
   connection, for its ratio to smtp-source.
3. The ledger batch (rows each connection keeps claimed ahead), swept, with the engine in
   this process: the smallest batch at which the rate stops rising is the one that keeps
   the commit off the critical path.
4. The sending journal (mailer.sending.journal): ``mailer send`` without it takes turns
   with the two above (``--no-journal-turns``), and its writes alone are timed, the two
   records a message costs (begun, then its outcome) on the folder's state directory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import smtplib
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from machine import describe  # noqa: E402

from mailer import config, urls  # noqa: E402
from mailer.operations import approval, service  # noqa: E402
from mailer.render import compile_slug  # noqa: E402
from mailer.sending import engine, journal, transports  # noqa: E402
from mailer.sending.message import Content, MessageTemplate, Recipient  # noqa: E402
from mailer.site import build  # noqa: E402
from mailer.store import deliveries, joining, people, sends  # noqa: E402
from mailer.store.database import open_db  # noqa: E402
from mailer.store.models import DeliveryStatus, LawfulBasis  # noqa: E402

SINK = "/usr/sbin/smtp-sink"
SOURCE = "/usr/sbin/smtp-source"
SLUG = "2025-11"
CONNECTIONS = 4
KEY = "bench-key-with-at-least-thirty-two-bytes-of-it"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """A fresh smtp-sink on a free port, counting the messages it takes."""

    def __init__(self, workdir: Path, delay: int = 0) -> None:
        """``delay``: whole seconds it waits before each reply to DATA, like a distant or
        busy relay (smtp-sink's ``-w``)."""
        self.port = free_port()
        self.out = workdir / f"sink-{self.port}.out"
        slow = ["-w", str(delay)] if delay else []
        with self.out.open("wb") as out:
            # -c: counters on stdout; -u: the user it runs as when started by root.
            self.process = subprocess.Popen(
                [SINK, "-c", "-u", "nobody", *slow, f"127.0.0.1:{self.port}", "256"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("smtp-sink did not start") from None
                time.sleep(0.05)

    def count(self) -> int:
        self.process.terminate()
        self.process.wait(timeout=60)
        found = re.findall(rb"mesg=(\d+)", self.out.read_bytes())
        return int(found[-1]) if found else 0


def prepare(root: Path, recipients: int) -> int:
    """A newsletter folder whose send of 2025-11 has its ``recipients`` fixed; its size."""
    root.mkdir(parents=True)
    shutil.copy(REPO / "mailer.toml", root / "mailer.toml")
    shutil.copytree(REPO / "issues", root / "issues")
    # The send is made for SMTP (through the outbox it would be a rehearsal), and an issue
    # is sent only once its web version is built.
    os.environ["MAILER_TRANSPORT"] = "smtp"
    try:
        settings = config.load(root)
    finally:
        del os.environ["MAILER_TRANSPORT"]
    build.build(settings, [SLUG])
    compiled = compile_slug(settings, SLUG)
    with open_db(settings) as database:
        with database.session(write=True) as session:
            lst = people.create_list(session, "bench", "Bench")
            batch = 10_000
            for start in range(0, recipients, batch):
                candidates = [
                    joining.Candidate(f"person{i:07d}@example.org", f"Person {i}", "")
                    for i in range(start, min(start + batch, recipients))
                ]
                joining.subscribe_many(
                    session, lst, candidates, basis=LawfulBasis.PUBLIC_TASK, source="bench"
                )
            approval.approve(session, compiled, "bench")
        send_id = service.create(
            settings, SLUG, ["bench"], database=database, skip_checks="benchmark"
        )
        with database.session(write=True) as session:
            deliveries.fix_recipients(session, sends.get(session, send_id))
        content = Content(SLUG, compiled.issue.subject, compiled.email_html, compiled.email_text)
        template = MessageTemplate(settings, content, list_id="bench.example.org", send_id=send_id)
        _, data = template.render(Recipient("person0000001@example.org", "Person 1", 1, 1))
    return len(data)


def copy_of(template: Path, workdir: Path, name: str) -> Path:
    target = workdir / name
    shutil.copytree(template, target)
    return target


def smtp_env(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_SECRET_KEY=KEY,
        MAILER_TRANSPORT="smtp",
        MAILER_SMTP_HOST="127.0.0.1",
        MAILER_SMTP_PORT=str(port),
        MAILER_SMTP_CONNECTIONS=str(CONNECTIONS),
    )
    return env


def run_source(workdir: Path, count: int, size: int) -> dict[str, float]:
    sink = Sink(workdir)
    start = time.perf_counter()
    subprocess.run(
        [
            SOURCE,
            "-d",
            "-s",
            str(CONNECTIONS),
            "-m",
            str(count),
            "-l",
            str(size),
            f"127.0.0.1:{sink.port}",
        ],
        check=True,
    )
    seconds = time.perf_counter() - start
    return {"rate": count / seconds, "sink": sink.count()}


# `mailer send` with the journal left out, for its cost in the same run (bench only).
WITHOUT_JOURNAL = (
    "from mailer.sending import journal\n"
    "journal.Journal.create = classmethod(lambda cls, *args: cls())\n"
    "from mailer.cli import main\n"
    "main()\n"
)


def run_mailer(folder: Path, workdir: Path, count: int, journal: bool = True) -> dict[str, float]:
    sink = Sink(workdir)
    log = workdir / "mailer-send.err"
    how = ["-m", "mailer"] if journal else ["-c", WITHOUT_JOURNAL]
    with log.open("wb") as err:  # a file, not a pipe: the progress bar must never block
        process = subprocess.Popen(
            [sys.executable, *how, "send", SLUG, "--resume"],
            cwd=folder,
            env=smtp_env(sink.port),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"mailer send failed: {log.read_text(errors='replace')[-2000:]}")
    with sqlite3.connect(folder / "subscribers.sqlite") as conn:
        first, last, sent = conn.execute(
            "SELECT min(sent_at), max(sent_at), count(*) FROM delivery WHERE status = 'sent'"
        ).fetchone()
    phase = (dt.datetime.fromisoformat(last) - dt.datetime.fromisoformat(first)).total_seconds()
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "rate": (count - 1) / phase,
        "cpu_us": cpu / count * 1e6,
        "rss_mb": usage.ru_maxrss / 1024,
        "ledger": sent,
        "sink": sink.count(),
    }


def email_message(settings: config.Settings, content: Content, i: int) -> bytes:
    """The obvious way: a new EmailMessage for each recipient."""
    msg = EmailMessage()
    msg["From"] = formataddr((settings.sender.from_name, settings.sender.from_address))
    msg["To"] = formataddr((f"Person {i}", f"person{i:07d}@example.org"))
    msg["Subject"] = content.subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=settings.sender.domain)
    link = urls.unsubscribe_url(settings, f"{i}.token")
    msg["List-Unsubscribe"] = f"<{link}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    text = content.text.replace(urls.UNSUBSCRIBE_PLACEHOLDER, link)
    html = content.html.replace(urls.UNSUBSCRIBE_PLACEHOLDER, link)
    msg.set_content(text, cte="quoted-printable")
    msg.add_alternative(html, subtype="html", cte="quoted-printable")
    return msg.as_bytes()


def run_obvious(folder: Path, workdir: Path, count: int) -> dict[str, float]:
    os.environ["MAILER_SECRET_KEY"] = KEY
    settings = config.load(folder)
    compiled = compile_slug(settings, SLUG)
    content = Content(SLUG, compiled.issue.subject, compiled.email_html, compiled.email_text)
    sink = Sink(workdir)
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", sink.port) as conn:
        for i in range(count):
            conn.sendmail(
                settings.sender.from_address,
                [f"person{i:07d}@example.org"],
                email_message(settings, content, i),
            )
    seconds = time.perf_counter() - start
    return {"rate": count / seconds, "sink": sink.count()}


def run_batch(folder: Path, workdir: Path, batch: int) -> dict[str, float]:
    """The engine in this process with a given ledger batch: its rate and commits."""
    sink = Sink(workdir)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(smtp_env(sink.port))
    try:
        settings = config.load(folder)
        with open_db(settings) as database:
            with database.session() as session:
                (send,) = sends.of_issue(session, SLUG)
            assert send.id is not None
            start = time.perf_counter()
            result = engine.run(
                settings,
                database,
                send.id,
                transports.connector(settings, SLUG),
                connections=CONNECTIONS,
                batch=batch,
            )
            seconds = time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(saved)
    sent = result.counts.get("sent", 0)
    return {
        "rate": sent / seconds,
        "commits": result.commits,
        "rows_per_commit": 2 * sent / max(result.commits, 1),
        "sink": sink.count(),
    }


def run_journal(folder: Path, count: int) -> dict[str, float]:
    """The journal's writes alone: CPU and wall time per message (two records each)."""
    os.environ["MAILER_SECRET_KEY"] = KEY
    settings = config.load(folder)
    kept = journal.Journal.create(settings, 0, f"bench:{os.getpid()}:0/1")
    mid = "<1.123456.abcdefghij@news.example.org>"
    cpu, wall = time.process_time(), time.perf_counter()
    for row in range(1, count + 1):
        kept.begun(row)
        kept.ended(row, DeliveryStatus.SENT, mid)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    size = kept.path.stat().st_size if kept.path else 0
    kept.close()
    return {"cpu_us": cpu / count * 1e6, "wall_us": wall / count * 1e6, "bytes": size / count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=2, help="turns each contender takes")
    parser.add_argument("--obvious", type=int, default=1000, help="messages the obvious way")
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument(
        "--no-journal-turns", action="store_true", help="also run mailer without its journal"
    )
    parser.add_argument("--journal", type=int, default=100_000, help="journal writes timed")
    args = parser.parse_args()
    for tool in (SINK, SOURCE):
        if not Path(tool).exists():
            raise SystemExit(f"{tool} is missing: run `make postfix` (Debian's postfix package)")
    os.environ["MAILER_SECRET_KEY"] = KEY
    print(describe())
    with tempfile.TemporaryDirectory(prefix="mailer-bench-") as tmp:
        workdir = Path(tmp)
        results: dict[int, dict[str, list[dict[str, float]]]] = {}
        size = 0
        for count in args.sizes:
            template = workdir / f"template-{count}"
            size = prepare(template, count)
            print(f"\n{count:,} recipients, {size:,}-byte messages, {CONNECTIONS} connections")
            contenders = ["smtp-source", "mailer"]
            if args.no_journal_turns:
                contenders.append("no journal")
            runs: dict[str, list[dict[str, float]]] = {who: [] for who in contenders}
            for turn in range(args.rounds):
                shift = turn % len(contenders)
                order = contenders[shift:] + contenders[:shift]
                for who in order:
                    if who == "smtp-source":
                        got = run_source(workdir, count, size)
                    else:
                        folder = copy_of(template, workdir, f"run-{count}-{turn}")
                        got = run_mailer(folder, workdir, count, journal=who == "mailer")
                        shutil.rmtree(folder)
                    runs[who].append(got)
                    print(f"  {who:<12} " + "  ".join(f"{k} {v:,.1f}" for k, v in got.items()))
            results[count] = runs
            if count != args.sizes[-1]:
                continue
        print("\nsend phase, median of the turns:")
        print(
            "| recipients | smtp-source msg/s | mailer msg/s | ratio | mailer CPU/msg | "
            "peak RSS | ledger sent | sink count |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for count, runs in results.items():
            source = statistics.median(r["rate"] for r in runs["smtp-source"])
            mailer = statistics.median(r["rate"] for r in runs["mailer"])
            cpu = statistics.median(r["cpu_us"] for r in runs["mailer"])
            rss = max(r["rss_mb"] for r in runs["mailer"])
            last = runs["mailer"][-1]
            print(
                f"| {count:,} | {source:,.0f} | {mailer:,.0f} | **{mailer / source:.2f}x** | "
                f"{cpu:.0f} µs | {rss:.0f} MB | {last['ledger']:,.0f} | {last['sink']:,.0f} |"
            )
            if "no journal" in runs:
                bare = statistics.median(r["rate"] for r in runs["no journal"])
                bare_cpu = statistics.median(r["cpu_us"] for r in runs["no journal"])
                print(
                    f"|   without the journal | | {bare:,.0f} | {bare / source:.2f}x | "
                    f"{bare_cpu:.0f} µs | | | |"
                )

        small = min(args.sizes)
        template = workdir / f"template-{small}"
        if args.journal:
            got = run_journal(template, args.journal)
            print(
                f"\nthe journal alone, {args.journal:,} messages (begun + outcome): "
                f"{got['cpu_us']:.2f} µs CPU, {got['wall_us']:.2f} µs wall, "
                f"{got['bytes']:.0f} bytes per message"
            )
        source = run_source(workdir, args.obvious * 4, size)["rate"]
        obvious = run_obvious(template, workdir, args.obvious)
        print(
            f"\nthe obvious way (EmailMessage + smtplib, 1 connection, {args.obvious:,} "
            f"messages): {obvious['rate']:,.0f} msg/s, {obvious['rate'] / source:.2f}x "
            f"smtp-source ({source:,.0f} msg/s in the same run); sink count {obvious['sink']:,.0f}"
        )

        if args.batches:
            print(f"\nledger batch, engine in-process, {small:,} recipients:")
            print("| batch per connection | msg/s | commits | rows per commit | crash bound |")
            print("|---|---|---|---|---|")
            for batch in args.batches:
                folder = copy_of(template, workdir, f"batch-{batch}")
                got = run_batch(folder, workdir, batch)
                shutil.rmtree(folder)
                print(
                    f"| {batch} | {got['rate']:,.0f} | {got['commits']:,.0f} | "
                    f"{got['rows_per_commit']:.1f} | {batch * CONNECTIONS} rows |"
                )


if __name__ == "__main__":
    main()
