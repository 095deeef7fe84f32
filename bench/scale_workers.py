"""Benchmark: one, two and four ``mailer worker`` processes sharing one send on PostgreSQL.

Run it from the repository: ``.venv/bin/python bench/scale_workers.py [--count 100000]``
(``make bench`` installs Debian's postfix and postgresql first). It prints figures and
asserts nothing: each speed comes with a ratio to Postfix's own client in the same run.

A throwaway PostgreSQL cluster (tests/pg_server.py) holds a newsletter of COUNT people,
prepared once and copied as a template database for each run. A run schedules the issue
for a minute ago and starts N real ``mailer worker`` processes with 4 connections each:
one becomes the scheduler and starts the send, and every worker sends it. Worker k sends
to smtp-sink k mod 2: two sinks, so that one sink's core is not what is measured. In the
same run, ``smtp-source`` sends COUNT messages of the same size with 4 sessions to one
sink, and with 4 sessions to each of the two sinks at once. It prints the send phase's
messages a second (from the ledger's first to its last acceptance), the ratio to
smtp-source, the scaling of two and four workers over one, the CPU per message of all the
workers together, how many workers sent, and the ledger's and the sinks' counts, which
must agree.

With ``--sqlite``, one worker on a SQLite copy of the same newsletter takes its turns too
(``sqlite-1``, to the first sink, as the first PostgreSQL worker does): the ratio of one
worker on PostgreSQL to one on SQLite, speed and CPU per message, within the same run.
``--workers 1`` leaves out the runs of two and four workers.

On a machine of few cores, the first measure is bounded by the CPU that the workers, the
database and the sinks share, not by mailer. The second measure (``--slow-count``, 600
messages) takes the CPU out: smtp-sink waits a second before accepting each message, like
a distant or busy relay, so the speed is the number of sessions open at once, and it shows
whether each worker added brings its own sessions to the relay.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

import sqlalchemy as sa  # noqa: E402
from machine import describe  # noqa: E402
from send_smtp import SINK, SOURCE, Sink  # noqa: E402

from mailer import config  # noqa: E402
from mailer.operations import approval  # noqa: E402
from mailer.render import compile_slug  # noqa: E402
from mailer.scheduling import runner  # noqa: E402
from mailer.sending.message import Content, MessageTemplate, Recipient  # noqa: E402
from mailer.site import build  # noqa: E402
from mailer.store import joining, people  # noqa: E402
from mailer.store.database import open_db  # noqa: E402
from mailer.store.models import LawfulBasis  # noqa: E402
from pg_server import PostgresServer  # noqa: E402

SLUG = "2025-11"
CONNECTIONS = 4
KEY = "bench-key-with-at-least-thirty-two-bytes-of-it"
WORKERS = (1, 2, 4)
# Seconds the slow relay of the second measure waits before accepting each message.
DELAY = 1


def environment(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(MAILER_SECRET_KEY=KEY, MAILER_DATABASE_URL=url, **extra)
    return env


def settings_for(folder: Path, url: str) -> config.Settings:
    return config.load(folder, env=environment(url, MAILER_TRANSPORT="smtp"))


def prepare(folder: Path, url: str, count: int) -> int:
    """The newsletter folder, and its database at ``url`` with ``count`` people on the list
    "bench" and the issue approved; the size of one message."""
    folder.mkdir(parents=True)
    shutil.copy(REPO / "mailer.toml", folder / "mailer.toml")
    shutil.copytree(REPO / "issues", folder / "issues")
    settings = settings_for(folder, url)
    build.build(settings, [SLUG])
    compiled = compile_slug(settings, SLUG)
    with open_db(settings) as database, database.session(write=True) as session:
        lst = people.create_list(session, "bench", "Bench")
        for start in range(0, count, 10_000):
            joining.subscribe_many(
                session,
                lst,
                [
                    joining.Candidate(f"person{i:07d}@example.org", f"Person {i}", "")
                    for i in range(start, min(start + 10_000, count))
                ],
                basis=LawfulBasis.PUBLIC_TASK,
                source="bench",
            )
        approval.approve(session, compiled, "bench")
    content = Content(SLUG, compiled.issue.subject, compiled.email_html, compiled.email_text)
    template = MessageTemplate(settings, content, list_id="bench.example.org", send_id=1)
    _, data = template.render(Recipient("person0000001@example.org", "Person 1", 1, 1))
    return len(data)


def run_source(
    workdir: Path, count: int, size: int, sinks: int, delay: int = 0
) -> dict[str, float]:
    """smtp-source: 4 sessions to each of ``sinks`` sinks at once, ``count`` in all."""
    started = [Sink(workdir, delay) for _ in range(sinks)]
    share = count // sinks  # each sink's share
    start = time.perf_counter()
    clients = [
        subprocess.Popen(
            [
                SOURCE,
                "-d",
                "-s",
                str(CONNECTIONS),
                "-m",
                str(share),
                "-l",
                str(size),
                f"127.0.0.1:{sink.port}",
            ]
        )
        for sink in started
    ]
    for client in clients:
        if client.wait() != 0:
            raise RuntimeError("smtp-source failed")
    seconds = time.perf_counter() - start
    return {"rate": share * sinks / seconds, "sink": sum(s.count() for s in started)}


def _moment(value: object) -> dt.datetime | None:
    # SQLite hands a plain query's timestamps back as text.
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value  # type: ignore[return-value]


def _ledger(url: str) -> tuple[str, int, dt.datetime | None, dt.datetime | None, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            status = conn.execute(sa.text("SELECT status FROM send")).scalar() or "none"
            sent, first, last, senders = conn.execute(
                sa.text(
                    "SELECT count(*), min(sent_at), max(sent_at), count(DISTINCT claimed_by) "
                    "FROM delivery WHERE status = 'sent'"
                )
            ).one()
        return str(status), int(sent), _moment(first), _moment(last), int(senders)
    finally:
        engine.dispose()


def server_cpu(server: PostgresServer) -> float:
    """Seconds of CPU the PostgreSQL cluster has used so far: the postmaster, the backends
    it has reaped, and those alive now."""
    tick = os.sysconf("SC_CLK_TCK")
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(x) for x in fields[11:15]) / tick  # with reaped children
        elif ppid == postmaster:
            total += sum(int(x) for x in fields[11:13]) / tick
    return total


def run_workers(
    folder: Path,
    server: PostgresServer,
    template: str,
    workdir: Path,
    n: int,
    delay: int = 0,
) -> dict[str, float]:
    """``n`` workers sending the scheduled issue to two sinks, on a copy of ``template``."""
    name = server.create_database(template)
    try:
        return run_on(folder, server.url(name), workdir, n, delay, lambda: server_cpu(server))
    finally:
        server.drop_database(name)


def run_sqlite(folder: Path, template: Path, workdir: Path) -> dict[str, float]:
    """One worker sending the scheduled issue, on a copy of the SQLite file ``template``."""
    copy = workdir / "sqlite-run.db"
    shutil.copy(template, copy)
    try:
        return run_on(folder, f"sqlite:///{copy}", workdir, 1)
    finally:
        for leftover in workdir.glob("sqlite-run.db*"):
            leftover.unlink()


def run_on(
    folder: Path,
    url: str,
    workdir: Path,
    n: int,
    delay: int = 0,
    database_cpu: Callable[[], float] = lambda: 0.0,
) -> dict[str, float]:
    """``n`` workers sending the scheduled issue to two sinks, on the database at ``url``;
    ``database_cpu`` reads the CPU a database server has used (none for SQLite)."""
    settings = settings_for(folder, url)
    # Each turn starts from a database where the issue is not sent yet: its pages are
    # built again where an unsent issue's go (the last turn's send published them).
    build.build(settings, [SLUG])
    with open_db(settings) as database:
        slot = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        at = slot.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M:%S")
        runner.schedule_once(
            settings, database, SLUG, ["bench"], at, slot - dt.timedelta(days=1), "bench"
        )
    sinks = [Sink(workdir, delay), Sink(workdir, delay)]
    usage: list[float] = []
    processes = []
    database_before = database_cpu()
    for k in range(n):
        env = environment(
            url,
            MAILER_TRANSPORT="smtp",
            MAILER_SMTP_HOST="127.0.0.1",
            MAILER_SMTP_PORT=str(sinks[k % 2].port),
            MAILER_SMTP_CONNECTIONS=str(CONNECTIONS),
        )
        log = (workdir / f"worker-{n}-{k}.log").open("wb")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "mailer", "worker", "--poll", "1"],
                cwd=folder,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        )
        log.close()
    started = time.monotonic()
    while (status := _ledger(url)[0]) != "sent":
        late = time.monotonic() - started > (120 if status == "none" else 3600)
        if late or any(p.poll() is not None for p in processes):
            raise RuntimeError(
                f"the send did not {'start' if status == 'none' else 'finish'}: "
                f"see {workdir}/worker-{n}-*.log and the schedule's last error"
            )
        time.sleep(0.5)

    def stop(process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGTERM)
        _, _, used = os.wait4(process.pid, 0)
        usage.append(used.ru_utime + used.ru_stime)

    stoppers = [threading.Thread(target=stop, args=(p,)) for p in processes]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()
    database_used = database_cpu() - database_before
    _, sent, first, last, senders = _ledger(url)
    assert first is not None and last is not None
    phase = (last - first).total_seconds()
    return {
        "rate": (sent - 1) / phase,
        "cpu_us": sum(usage) / sent * 1e6,
        "db_us": database_used / sent * 1e6,
        "senders": senders,
        "ledger": sent,
        "sink": sum(s.count() for s in sinks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="0: the slow relay only")
    parser.add_argument("--rounds", type=int, default=2, help="turns each contender takes")
    parser.add_argument(
        "--slow-count",
        type=int,
        default=600,
        help="messages of the second measure, to a relay that takes 1 s to accept each (0: skip)",
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=list(WORKERS), help="numbers of workers to run"
    )
    parser.add_argument(
        "--sqlite", action="store_true", help="one worker on SQLite takes its turns too"
    )
    args = parser.parse_args()
    for tool in (SINK, SOURCE):
        if not Path(tool).exists():
            raise SystemExit(f"{tool} is missing: run `make postfix` (Debian's postfix package)")
    print(describe())
    with tempfile.TemporaryDirectory(prefix="mailer-bench-") as tmp, PostgresServer() as server:
        workdir = Path(tmp)
        if not args.count:  # the slow relay only
            slow(server, workdir, args.slow_count)
            return
        template = server.create_database(server.migrated_template())
        folder = workdir / "newsletter"
        size = prepare(folder, server.url(template), args.count)
        print(f"{args.count:,} recipients, {size:,}-byte messages, {CONNECTIONS} connections each")
        runs: dict[str, list[dict[str, float]]] = {}
        contenders = ["source-1", "source-2", *(f"workers-{n}" for n in args.workers)]
        lite = workdir / "sqlite-template.db"
        if args.sqlite:
            prepare(workdir / "newsletter-sqlite", f"sqlite:///{lite}", args.count)
            contenders.append("sqlite-1")
        for turn in range(args.rounds):
            order = contenders if turn % 2 == 0 else contenders[::-1]
            for who in order:
                if who.startswith("source"):
                    sinks = int(who.rsplit("-", 1)[1])
                    got = run_source(workdir, args.count, size, sinks)
                elif who == "sqlite-1":
                    got = run_sqlite(workdir / "newsletter-sqlite", lite, workdir)
                else:
                    n = int(who.rsplit("-", 1)[1])
                    got = run_workers(folder, server, template, workdir, n)
                runs.setdefault(who, []).append(got)
                print(f"  {who:<10} " + "  ".join(f"{k} {v:,.1f}" for k, v in got.items()))

        def rate(who: str) -> float:
            return statistics.median(r["rate"] for r in runs[who])

        print("\nsend phase, median of the turns:")
        print(
            "| sender | msg/s | ratio to smtp-source (4 sessions, 1 sink) | scaling over one "
            "worker | CPU/msg, all workers | workers that sent | ledger sent | sink count |"
        )
        print("|---|---|---|---|---|---|---|---|")
        base = rate("source-1")
        for who in contenders:
            last = runs[who][-1]
            count = who.rsplit("-", 1)[1]
            if who == "sqlite-1":
                count = "1 (SQLite)"
            if who.startswith("source"):
                print(
                    f"| smtp-source, {CONNECTIONS} sessions x {count} sink(s) | {rate(who):,.0f} "
                    f"| {rate(who) / base:.2f}x | | | | | {last['sink']:,.0f} |"
                )
                continue
            cpu = statistics.median(r["cpu_us"] for r in runs[who])
            print(
                f"| {count} mailer worker(s) | {rate(who):,.0f} | **{rate(who) / base:.2f}x** | "
                f"{rate(who) / rate('workers-1'):.2f}x | {cpu:.0f} µs | {last['senders']:.0f} "
                f"| {last['ledger']:,.0f} | {last['sink']:,.0f} |"
            )
        if args.sqlite and "workers-1" in runs:

            def cpu_of(who: str) -> float:
                return statistics.median(r["cpu_us"] for r in runs[who])

            server = statistics.median(r["db_us"] for r in runs["workers-1"])
            print(
                f"\none worker, PostgreSQL over SQLite: speed "
                f"{rate('workers-1') / rate('sqlite-1'):.2f}x, CPU per message "
                f"{cpu_of('workers-1') / cpu_of('sqlite-1'):.2f}x (the worker's), "
                f"{(cpu_of('workers-1') + server) / cpu_of('sqlite-1'):.2f}x with the "
                f"PostgreSQL server's {server:.0f} µs"
            )
            for who in ("source-1", "workers-1", "sqlite-1"):
                print(f"  turns of {who}: " + ", ".join(f"{r['rate']:,.0f}" for r in runs[who]))
        if args.slow_count:
            slow(server, workdir, args.slow_count)


def slow(server: PostgresServer, workdir: Path, count: int) -> None:
    """The same contenders sending to a relay that takes a second to accept each message
    (a distant or busy relay): the time is the relay's, not the CPU's, so this shows
    whether more workers mean more sessions at once at the relay, and more speed."""
    template = server.create_database(server.migrated_template())
    folder = workdir / "newsletter-slow"
    size = prepare(folder, server.url(template), count)
    runs: dict[str, dict[str, float]] = {"source-1": run_source(workdir, count, size, 1, DELAY)}
    for n in WORKERS:
        runs[f"workers-{n}"] = run_workers(folder, server, template, workdir, n, DELAY)
    print(f"\n{count:,} messages to a relay that waits {DELAY} s before accepting each one:")
    print("| sender | sessions at most | msg/s | ratio to smtp-source | scaling over one worker |")
    print("|---|---|---|---|---|")
    base, one = runs["source-1"]["rate"], runs["workers-1"]["rate"]
    print(f"| smtp-source | {CONNECTIONS} | {base:,.2f} | 1.00x | |")
    for n in WORKERS:
        got = runs[f"workers-{n}"]
        print(
            f"| {n} mailer worker(s) | {n * CONNECTIONS} | {got['rate']:,.2f} "
            f"| {got['rate'] / base:.2f}x | **{got['rate'] / one:.2f}x** |"
        )
        assert got["ledger"] == got["sink"] == count, got


if __name__ == "__main__":
    main()
