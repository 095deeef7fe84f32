"""The production recipe of docs/deploy/, run for real: Debian's nginx on loopback (its own
configuration, prefix and pid file, checked with ``nginx -t``) with TLS in front of a real
``mailer serve``; the check every send makes of base_url; ``mailer serve`` saying what it
does; a key rotated under a running server."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import REPO, draft_dir
from mailer import config
from mailer.site import reach
from nginx_server import SITE, Nginx, start_nginx, stop_nginx
from send_helpers import Lines, smtp_env
from smtp_server import SMTPServer
from subscriber_helpers import ok
from web_helpers import (
    PEOPLE,
    free_port,
    newsletter_with_a_send,
    start_server,
    stop_server,
    unsubscribe_link,
)

SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}
UNIT = REPO / "docs/deploy/mailer.service"


@dataclass
class Deployed:
    root: Path
    nginx: Nginx
    smtp: SMTPServer
    env: dict[str, str]
    serve_port: int

    def client(self) -> httpx.Client:
        trusted = ssl.create_default_context(cafile=str(self.nginx.prefix / "cert.pem"))
        # A browser on the site's own pages says so (Sec-Fetch-Site), which no page can fake.
        return httpx.Client(verify=trusted, timeout=60, headers=SAME_ORIGIN)


def use_base_url(root: Path, url: str, extra: str = "") -> None:
    path = root / "mailer.toml"
    text = path.read_text(encoding="utf-8")
    text = re.sub(r'^base_url = ".*"$', f'base_url = "{url}"', text, flags=re.MULTILINE)
    path.write_text(text + extra, encoding="utf-8")


@contextmanager
def static_host(folder: Path, port: int) -> Iterator[None]:
    """A plain static web server on 127.0.0.1:port serving ``folder``, once it says it
    serves (it has bound and listens by then), as a static host would."""
    static = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    lines = Lines(static.stdout)
    try:
        lines.wait_for(f"Serving HTTP on 127.0.0.1 port {port}", timeout=60)
        yield
    finally:
        static.terminate()
        static.wait(timeout=60)
        lines.close()


@pytest.fixture
def deployed(
    newsletter: Path, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployed]:
    """The folder served as docs/deploy/ says: mailer serve on loopback, nginx with TLS in
    front at base_url, mail through a real SMTP server; ISSUE sent to PEOPLE."""
    serve_port = free_port()
    nginx = start_nginx(tmp_path / "nginx", serve_port)
    try:
        use_base_url(newsletter, nginx.url)
        newsletter_with_a_send(cli, newsletter)
        with SMTPServer() as smtp:
            smtp_env(monkeypatch, smtp.port)
            # The test trusts its own certificate, as a real host trusts Let's Encrypt.
            monkeypatch.setenv("SSL_CERT_FILE", str(nginx.prefix / "cert.pem"))
            env = dict(os.environ)
            server = start_server(newsletter, serve_port, env)
            try:
                yield Deployed(newsletter, nginx, smtp, env, serve_port)
            finally:
                stop_server(server)
    finally:
        stop_nginx(nginx)


def test_the_unit_is_hardened_and_runs_mailer_serve_on_loopback() -> None:
    unit = UNIT.read_text(encoding="utf-8")
    for setting in (
        "User=mailer",
        "ProtectSystem=strict",
        "ReadWritePaths=/srv/newsletter",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "LimitNOFILE=",
        "EnvironmentFile=/etc/mailer/environment",
    ):
        assert setting in unit
    assert "mailer serve --host 127.0.0.1 --port 8000" in unit
    assert "proxy_pass http://127.0.0.1:8000;" in SITE.read_text(encoding="utf-8")


def test_the_static_variant_proxies_every_route_of_mailer_serve() -> None:
    """Every first path segment mailer serve answers beyond the archive is in the list of
    routes the static variant passes on."""
    from mailer import urls

    site = SITE.read_text(encoding="utf-8")
    (pattern,) = re.findall(r"location ~ \^/\((.*?)\)", site)
    proxied = set(pattern.replace("\\.", ".").split("|"))
    personal = {
        getattr(urls, name).strip("/").split("/")[0]
        for name in dir(urls)
        if name.endswith("_PATH")
        and name not in ("ARCHIVE_PATH", "ISSUE_PATH", "ISSUE_FILE_PATH", "ISSUES_ALIAS_PATH")
        and name not in ("FEED_PATH", "ASSET_PATH", "STYLESHEET_PATH")
        and name not in ("TRAINING_PATH", "TRAINING_FEED_PATH")
        and not getattr(urls, name).startswith("/{")  # an issue's own paths: the archive
    }
    personal = {p if p != ".well-known" else ".well-known/mailer-challenge" for p in personal}
    assert personal <= proxied, personal - proxied


def test_unsubscribe_one_click_preferences_and_sign_up_through_nginx(deployed: Deployed) -> None:
    amira, ben = PEOPLE[0], PEOPLE[1]
    with deployed.client() as client:
        # The unsubscribe page, then its button.
        link = unsubscribe_link(deployed.root, amira)
        assert link.startswith(deployed.nginx.url + "/unsubscribe/")
        page = client.get(link)
        assert page.status_code == 200 and "Unsubscribe" in page.text
        assert page.headers["cache-control"] == "no-store"
        done = client.post(link, data={})
        assert done.status_code == 200 and "You are unsubscribed" in done.text
        # The mail program's one-click POST (RFC 8058): 200, no redirect.
        link = unsubscribe_link(deployed.root, ben)
        done = client.post(link, data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200 and not done.history
        # Sign-up: the form, the confirmation email, its button.
        form = client.get(f"{deployed.nginx.url}/subscribe")
        assert form.status_code == 200 and "Rehearsal" not in form.text
        r = client.post(
            f"{deployed.nginx.url}/subscribe",
            data={"email": "new@example.org", "lists": "all", "consent": "yes"},
        )
        assert r.status_code == 200 and "Check your email" in r.text
        assert "Rehearsal" not in r.text
        deployed.smtp.handler.wait_until(lambda h: "new@example.org" in h.recipients())
        (mail,) = [m.message for m in deployed.smtp.received if "new@example.org" in m.rcpt_tos]
        part = mail.get_body(("plain",))
        assert part is not None
        (confirm,) = re.findall(r"https://\S+/confirm/\S+", part.get_content())
        assert confirm.startswith(deployed.nginx.url)
        assert client.get(confirm).status_code == 200
        done = client.post(confirm)
        assert done.status_code == 200 and "You are subscribed" in done.text
        # The archive comes through mailer serve too.
        assert client.get(f"{deployed.nginx.url}/").status_code == 200


def test_preferences_through_nginx(deployed: Deployed) -> None:
    from mailer import tokens
    from mailer.store.database import open_db
    from mailer.store.people import find_subscriber

    settings = config.load(deployed.root, env=deployed.env)
    with open_db(settings) as db, db.session() as session:
        person = find_subscriber(session, PEOPLE[2])
        assert person is not None and person.id is not None
        token = tokens.make(settings.require_secret_key(), tokens.PREFERENCES, person.id)
    with deployed.client() as client:
        url = f"{deployed.nginx.url}/preferences/{token}"
        assert client.get(url).status_code == 200
        saved = client.post(url, data={"name": "Chloe", "lists": ["all", "schools"]})
        assert saved.status_code == 200 and "Your choices are saved." in saved.text


def test_forwarded_addresses_count_only_from_the_trusted_proxy(deployed: Deployed) -> None:
    """nginx replaces any X-Forwarded-For a client sends, so a client cannot pose as many
    to escape the per-network limit of the sign-up form (10 emails an hour)."""
    from db_helpers import query

    with deployed.client() as client:
        for i in range(12):
            r = client.post(
                f"{deployed.nginx.url}/subscribe",
                data={"email": f"s{i}@example.org", "lists": "all", "consent": "yes"},
                headers={"X-Forwarded-For": f"203.0.113.{i}"},
            )
            # The page never says whether a limit stopped the email.
            assert r.status_code == 200 and "Check your email" in r.text
    deployed.smtp.handler.wait_until(
        lambda h: len([a for a in h.recipients() if a.startswith("s")]) == 10
    )
    rows = query(
        deployed.root,
        "SELECT status, COUNT(*) FROM web_mail WHERE kind = 'confirm' GROUP BY status",
    )
    assert dict(rows).get("skipped") == 2, rows


# -- the check of base_url before a send --------------------------------------------------


def test_doctor_web_passes_for_this_folders_mailer_behind_nginx(
    deployed: Deployed, cli: Any
) -> None:
    r = cli("doctor", "--web")
    assert f"ok    web         {deployed.nginx.url}/ is this folder's mailer serve" in r.stdout
    assert "honours one-click POSTs" in r.stdout
    assert "FAIL" not in r.stdout, r.stdout


def test_a_static_copy_of_build_is_refused(
    newsletter: Path, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README of old: rsync build/ to a static host. The check says so, and a send to
    lists refuses to start."""
    port = free_port()
    use_base_url(newsletter, f"http://127.0.0.1:{port}")
    with static_host(newsletter / "build", port):
        r = cli("doctor", "--web")
        assert r.exit_code == 1
        assert (
            f"FAIL  web         http://127.0.0.1:{port}/.well-known/mailer-challenge answered 404"
            in r.stdout
        )
        with SMTPServer() as smtp:
            smtp_env(monkeypatch, smtp.port)
            _refused_send(cli, newsletter, "answered 404", smtp)


def test_a_scheduled_send_is_refused_while_a_static_host_answers(
    newsletter: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime as dt

    from check_helpers import enforce, news, write_issue
    from mailer.scheduling import runner
    from mailer.store.database import open_db

    port = free_port()
    use_base_url(newsletter, f"http://127.0.0.1:{port}")
    enforce(newsletter)
    today = config.load(newsletter).today()
    body = "The partnership has appointed a new chair, who starts this month."
    slug = write_issue(newsletter, news(body), date=today.isoformat(), slug="fresh")
    ok(cli("lists", "create", "all", "--name", "All practitioners"))
    ok(cli("subscribers", "add", "amira@example.org", "--list", "all"))
    ok(cli("build", slug))
    ok(cli("approve", slug, "--by", "Sam Patel"))
    with static_host(newsletter / "build", port), SMTPServer() as smtp:
        smtp_env(monkeypatch, smtp.port)
        settings = config.load(newsletter)
        now = dt.datetime.now(dt.UTC)
        slot = now + dt.timedelta(hours=1)
        with open_db(settings) as database:
            text = slot.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M")
            runner.schedule_once(settings, database, slug, ["all"], text, now)
            (outcome,) = runner.run_due(settings, database, slot + dt.timedelta(minutes=2))
        assert not outcome.sent
        assert "refusing to send:" in outcome.outcome and "answered 404" in outcome.outcome
        assert smtp.received == [] or all(
            "amira@example.org" not in r.rcpt_tos for r in smtp.received
        )


def _refused_send(cli: Any, root: Path, why: str, smtp: SMTPServer) -> None:
    from check_helpers import enforce, news, write_issue

    enforce(root)
    today = config.load(root).today()
    body = "The partnership has appointed a new chair, who starts this month."
    slug = write_issue(root, news(body), date=today.isoformat(), slug="fresh")
    ok(cli("lists", "create", "all", "--name", "All practitioners"))
    ok(cli("subscribers", "add", "amira@example.org", "--list", "all"))
    ok(cli("build", slug))
    ok(cli("approve", slug, "--by", "Sam Patel"))
    r = cli("send", slug, "--list", "all", "--yes")
    assert r.exit_code == 1
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("Error: refusing to send:") or "refusing to send:" in line
    assert why in line and "docs/deploy/" in line and "--skip-checks" in line
    assert smtp.received == []
    # With a reason, the send goes ahead and keeps the reason.
    r = cli("send", slug, "--list", "all", "--yes", "--skip-checks", "site moved today")
    assert r.exit_code == 0, r.output


def test_a_mailer_with_another_key_is_refused(
    deployed: Deployed, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILER_SECRET_KEY", "another-folder-key-with-at-least-32-bytes")
    settings = config.load(deployed.root)
    (answer,) = reach.ask(settings)
    assert not answer.ok
    assert "another newsletter folder or another signing key" in answer.problem


def test_the_outbox_transport_skips_the_check(newsletter: Path) -> None:
    settings = config.load(newsletter)
    assert settings.transport.name == "outbox"
    use_base_url(newsletter, f"http://127.0.0.1:{free_port()}")
    reach.require_answering(config.load(newsletter))  # nothing listens, nothing asked


# -- mailer serve says what it does ---------------------------------------------------------


def test_serve_refuses_the_outbox_unless_rehearsal(newsletter: Path, cli: Any) -> None:
    ok(cli("lists", "create", "all", "--name", "All practitioners", "--public"))
    port = free_port()
    refused = subprocess.run(
        [sys.executable, "-m", "mailer", "serve", "--port", str(port)],
        cwd=newsletter,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert "the transport is outbox" in line and "--rehearsal" in line
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "serve", "--port", str(port), "--rehearsal"],
        cwd=newsletter,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines = Lines(process.stdout)
    try:
        started = lines.wait_for(f"on http://127.0.0.1:{port}/")
        assert "rehearsal: no mail leaves" in started
        ok_page = httpx.post(
            f"http://127.0.0.1:{port}/subscribe",
            data={"email": "new@example.org", "lists": "all", "consent": "yes"},
            headers=SAME_ORIGIN,
            timeout=60,
        )
        assert ok_page.status_code == 200 and "Check your email" in ok_page.text
        assert "Rehearsal:" in ok_page.text and "no mail leaves" in ok_page.text
    finally:
        process.terminate()
        process.wait(timeout=60)
        lines.close()


def test_a_rotated_key_is_picked_up_while_serving(
    newsletter: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mailer key rotate` under a running server: new links work at once, and links of
    the email already sent keep working (the previous key's grace period)."""
    from mailer import tokens
    from mailer.store.database import open_db
    from mailer.store.people import find_subscriber

    monkeypatch.delenv("MAILER_SECRET_KEY")
    port = free_port()
    use_base_url(newsletter, f"http://127.0.0.1:{port}")
    newsletter_with_a_send(cli, newsletter)
    old_link = unsubscribe_link(newsletter, PEOPLE[0])
    assert (newsletter / ".mailer/secret_key").is_file()
    env = dict(os.environ)
    server = start_server(newsletter, port, env)
    try:
        r = cli("key", "rotate")
        assert r.exit_code == 0, r.output
        settings = config.load(newsletter, env=env)
        assert reach.ask(settings)[0].ok  # answers with the new key, without a restart
        with open_db(settings) as db, db.session() as session:
            person = find_subscriber(session, PEOPLE[1])
            assert person is not None and person.id is not None
        new = tokens.make(settings.require_secret_key(), tokens.PREFERENCES, person.id)
        assert (
            httpx.get(f"http://127.0.0.1:{port}/preferences/{new}", timeout=60).status_code == 200
        )
        # The link in the email already sent, signed with the previous key, still works.
        done = httpx.post(old_link, data={"List-Unsubscribe": "One-Click"}, timeout=60)
        assert done.status_code == 200
    finally:
        stop_server(server)


# -- drafts -------------------------------------------------------------------------------


def test_build_all_reports_and_skips_a_broken_draft_and_builds_the_rest(
    newsletter: Path, cli: Any
) -> None:
    broken = newsletter / "issues/2026-01"
    broken.mkdir()
    (broken / "issue.yaml").write_text('subject: "Half written"\nsections: nope\n')
    shutil.rmtree(newsletter / "build")
    shutil.rmtree(draft_dir(newsletter, "2025-11"))
    r = cli("build", "--all")
    assert r.exit_code == 1
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("Skipped a draft that does not load: ")
    assert "issues/2026-01/issue.yaml" in line and "Traceback" not in r.output
    assert (draft_dir(newsletter, "2025-11") / "index.html").is_file()
    assert (newsletter / "build/index.html").is_file()
    assert not (newsletter / "build/2026-01").exists()
    assert not draft_dir(newsletter, "2026-01").exists()


def test_a_copy_of_build_carries_the_published_issue_and_nothing_of_a_draft(
    newsletter: Path, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """build/ copied as a static host gets it: 2021-12, sent, is there; 2025-11, a draft,
    is built for its preview outside build/, and no file of the copy has it."""
    ok(cli("lists", "create", "all", "--name", "All practitioners"))
    ok(cli("subscribers", "add", PEOPLE[0], "--list", "all"))
    # A draft's pages left in build/ by a version that built drafts there.
    shutil.copytree(draft_dir(newsletter, "2025-11"), newsletter / "build/2025-11")
    ok(cli("approve", "2021-12", "--by", "Sam Patel"))
    with SMTPServer() as smtp:
        smtp_env(monkeypatch, smtp.port)
        ok(cli("send", "2021-12", "--list", "all", "--yes"))
    # Sending published it: the pages it was approved with are in build/ at once.
    assert (newsletter / "build/2021-12/email.html").is_file()
    assert not draft_dir(newsletter, "2021-12").exists()
    ok(cli("build", "--all"))
    static = tmp_path / "static"
    shutil.copytree(newsletter / "build", static)

    files = [p for p in static.rglob("*") if p.is_file()]
    assert (static / "2021-12/email.html") in files and (static / "2021-12/index.html") in files
    assert "CSCP Newsletter – December 2021" in (static / "index.html").read_text(encoding="utf-8")
    assert [p for p in files if "2025-11" in p.relative_to(static).as_posix()] == []
    carrying = [
        p
        for p in files
        if "November 2025" in p.read_bytes().decode("utf-8", "replace")
        or "/2025-11/" in p.read_bytes().decode("utf-8", "replace")
    ]
    assert carrying == []
    # The draft's preview is where mailer build said it wrote it.
    assert (draft_dir(newsletter, "2025-11") / "email.html").is_file()


def test_a_rehearsal_send_never_publishes_and_a_real_one_does(
    newsletter: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from db_helpers import query

    ok(cli("lists", "create", "all", "--name", "All practitioners"))
    ok(cli("subscribers", "add", PEOPLE[0], "--list", "all"))
    ok(cli("approve", "2025-11", "--by", "Sam Patel"))
    ok(cli("send", "2025-11", "--list", "all", "--yes"))
    assert query(newsletter, "SELECT slug FROM publication") == []
    ok(cli("build", "--all"))
    assert "No issues have been published yet." in (newsletter / "build/index.html").read_text(
        encoding="utf-8"
    )
    ok(cli("approve", "2021-12", "--by", "Sam Patel"))
    with SMTPServer() as smtp:
        smtp_env(monkeypatch, smtp.port)
        ok(cli("send", "2021-12", "--list", "all", "--yes"))
    assert query(newsletter, "SELECT slug, published_by FROM publication") == [("2021-12", "send")]


def test_the_static_variant_serves_the_archive_from_files_and_proxies_the_rest(
    newsletter: Path, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive from a copy of build/, as rsync leaves it; unsubscribe, one-click and the
    challenge still reach mailer serve, so a send is not refused."""
    serve_port = free_port()
    static = tmp_path / "static"
    nginx = start_nginx(tmp_path / "nginx", serve_port, static=static)
    try:
        use_base_url(newsletter, nginx.url)
        newsletter_with_a_send(cli, newsletter)
        ok(cli("build", "--all"))
        shutil.copytree(newsletter / "build", static)
        (static / "index.html").write_text("the static copy", encoding="utf-8")
        monkeypatch.setenv("SSL_CERT_FILE", str(nginx.prefix / "cert.pem"))
        with SMTPServer() as smtp:
            smtp_env(monkeypatch, smtp.port)
            server = start_server(newsletter, serve_port, dict(os.environ))
            try:
                trusted = ssl.create_default_context(cafile=str(nginx.prefix / "cert.pem"))
                with httpx.Client(verify=trusted, timeout=60) as client:
                    assert client.get(f"{nginx.url}/").text == "the static copy"
                    link = unsubscribe_link(newsletter, PEOPLE[0])
                    done = client.post(link, data={"List-Unsubscribe": "One-Click"})
                    assert done.status_code == 200 and "You are unsubscribed" in done.text
                    assert client.get(f"{nginx.url}/subscribe").status_code == 200
                assert all(answer.ok for answer in reach.ask(config.load(newsletter)))
            finally:
                stop_server(server)
    finally:
        stop_nginx(nginx)
