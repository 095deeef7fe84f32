"""`mailer init` makes a newsletter folder that works at once; `mailer doctor` says, one line
per check, whether it is ready to send, and with --smtp logs in without sending."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import Result, draft_dir
from mailer import config
from mailer.cli import app
from send_helpers import smtp_env
from smtp_server import SMTPServer, free_port

ANSWERS = [
    "--name",
    "CSCP Newsletter",
    "--organisation",
    "Cumberland Safeguarding Children Partnership",
    "--base-url",
    "https://news.cumberland-lscp.org.uk",
    "--from-address",
    "newsletter@cumberland-lscp.org.uk",
    "--postal-address",
    'Cumberland House, "Botchergate", Carlisle CA1 1RZ',
]


def run(*args: str, input: str | None = None) -> Result:
    r = CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)
    return Result(r.exit_code, r.stdout, r.stderr)


@pytest.fixture
def empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    # The key must be made in the folder, as on a real machine.
    monkeypatch.delenv("MAILER_SECRET_KEY")
    return tmp_path


def test_init_makes_a_folder_that_builds_with_the_shipped_templates(empty: Path) -> None:
    r = run("init", "news", *ANSWERS)
    assert r.exit_code == 0, r.output
    root = empty / "news"
    assert r.stdout.startswith(f"Created the newsletter folder {root}:\n")
    assert "  cd news\n  mailer doctor" in r.stdout
    assert sorted(p.name for p in root.iterdir()) == [
        ".gitignore",
        ".mailer",
        "issues",
        "mailer.toml",
    ]
    key = root / ".mailer/secret_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_text().strip()) >= 32
    assert "subscribers.sqlite" in (root / ".gitignore").read_text()
    assert ".mailer/" in (root / ".gitignore").read_text()
    data = tomllib.loads((root / "mailer.toml").read_text(encoding="utf-8"))
    assert data["footer"]["postal_address"] == 'Cumberland House, "Botchergate", Carlisle CA1 1RZ'
    assert data["sender"]["from_name"] == "Cumberland Safeguarding Children Partnership"
    assert data["transport"]["name"] == "outbox"

    # The folder works with mailer's own templates: no templates/ folder is needed.
    os.chdir(root)
    assert run("new", "2026-01", "--date", "2026-01-06").exit_code == 0
    r = run("build", "2026-01")
    assert r.exit_code == 0, r.output
    html = (draft_dir(root, "2026-01") / "email.html").read_text(encoding="utf-8")
    assert "CSCP Newsletter – January 2026" in html  # mailer new uses the newsletter's name
    assert "Cumberland House" in html


def test_init_asks_for_what_it_needs_and_refuses_a_second_run(empty: Path) -> None:
    answers = (
        "My News\nMy Org\nhttps://news.myorg.uk\nnews@myorg.uk\n1 High St, Town\nmicrosoft365\n"
    )
    r = run("init", input=answers)
    assert r.exit_code == 0, r.output
    made = config.load(empty, env={})
    assert made.name == "My News"
    assert made.transport.name == "outbox"  # a rehearsal until the operator says smtp
    assert (made.transport.smtp.profile, made.transport.smtp.host) == (
        "microsoft365",
        "smtp.office365.com",
    )
    before = (empty / "mailer.toml").read_bytes()
    again = run("init", *ANSWERS)
    assert again.exit_code == 1
    assert again.stderr == (
        f"Error: {empty} is already a newsletter folder (it has a mailer.toml): check it "
        "with mailer doctor\n"
    )
    assert (empty / "mailer.toml").read_bytes() == before


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--base-url", "news.example.org", "base_url: must be a web address"),
        ("--from-address", "Newsletter <news@x.org>", "is not one email address"),
        ("--name", "Two\nlines", "--name: must be one line of text"),
    ],
)
def test_init_refuses_a_bad_value_and_writes_nothing(
    empty: Path, option: str, value: str, message: str
) -> None:
    args = list(ANSWERS)
    args[args.index(option) + 1] = value
    r = run("init", "news", *args)
    assert r.exit_code == 1
    assert message in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (empty / "news").exists()


def test_init_can_copy_the_templates_to_change_the_design(empty: Path) -> None:
    r = run("init", "news", *ANSWERS, "--templates")
    assert r.exit_code == 0, r.output
    assert (empty / "news/templates/newsletter.mjml.j2").is_file()
    assert (empty / "news/templates/sections/training.mjml.j2").is_file()
    os.chdir(empty / "news")
    doctor = run("doctor")
    assert "ok    templates   9 of your own in templates/ (the layout too" in doctor.stdout


def test_doctor_checks_each_part_one_line_each(empty: Path) -> None:
    assert run("init", "news", *ANSWERS).exit_code == 0
    os.chdir(empty / "news")
    r = run("doctor")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert [line.split()[1] for line in lines] == [
        "folder",
        "settings",
        "alerts",
        "privacy",
        "statement",
        "key",
        "database",
        "web",
        "webhooks",
        "templates",
        "transport",
    ]
    assert lines[2].startswith("note  alerts      nobody is emailed when a scheduled send fails")
    assert lines[3].startswith("note  privacy     no privacy notice: the sign-up form and every")
    assert "set accessibility_contact and accessibility_enforcement under [web]" in lines[4]
    assert "no lists yet" in lines[6]
    assert lines[8] == "ok    webhooks    none"
    assert "outbox: nobody is emailed" in lines[10]
    (empty / "news/.mailer/secret_key").chmod(0o644)
    r = run("doctor")
    assert r.exit_code == 1
    # Every command refuses a key others can read, and says how to fix it.
    assert r.stdout.splitlines()[1].startswith("FAIL  settings    ")
    assert "can be read by other users of this machine: run chmod 600" in r.stdout


def test_doctor_names_the_relays_whose_webhooks_mailer_serve_takes_never_a_key(
    empty: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("init", "news", *ANSWERS).exit_code == 0
    os.chdir(empty / "news")
    topic = "arn:aws:sns:eu-west-2:123456789012:newsletter-bounces"
    monkeypatch.setenv("MAILER_WEBHOOK_SES_KEY", topic)
    monkeypatch.setenv("MAILER_WEBHOOK_MAILGUN_KEY", "key-3ax6xnjp29jd6fds4gc373sgvjxteol0")
    r = run("doctor")
    assert r.exit_code == 0, r.output
    assert "ok    webhooks    ses, mailgun configured\n" in r.stdout
    assert topic not in r.output and "3ax6xnjp" not in r.output
    # A key that cannot be right is named by its variable, with the fix, never echoed.
    monkeypatch.setenv("MAILER_WEBHOOK_POSTMARK_KEY", "hunter2")
    r = run("doctor")
    assert r.exit_code == 1
    (line,) = [line for line in r.stdout.splitlines() if "webhooks" in line]
    assert line.startswith("FAIL  webhooks    MAILER_WEBHOOK_POSTMARK_KEY: shorter than 16")
    assert "hunter2" not in r.output


def test_doctor_outside_a_newsletter_folder_says_how_to_make_one(empty: Path) -> None:
    r = run("doctor")
    assert r.exit_code == 1
    assert r.stdout.startswith("FAIL  folder      no mailer.toml in")
    assert "mailer init FOLDER" in r.stdout


def test_doctor_smtp_logs_in_over_starttls_without_sending(
    empty: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert run("init", "news", *ANSWERS).exit_code == 0
    os.chdir(empty / "news")
    tls = tmp_path / "tls"
    tls.mkdir()
    with SMTPServer(tls_dir=tls, user="newsletter", password="right") as server:
        smtp_env(
            monkeypatch,
            server.port,
            MAILER_SMTP_SECURITY="starttls",
            MAILER_SMTP_USERNAME="newsletter",
            MAILER_SMTP_PASSWORD="right",
            MAILER_SMTP_CA_FILE=str(server.ca_file),
        )
        r = run("doctor", "--smtp")
        assert r.exit_code == 0, r.output
        assert (
            f"ok    smtp        connected to 127.0.0.1:{server.port} (starttls) as newsletter; "
            "nothing was sent" in r.stdout
        )
        monkeypatch.setenv("MAILER_SMTP_PASSWORD", "wrong")
        r = run("doctor", "--smtp")
        assert r.exit_code == 1
        (line,) = [x for x in r.stdout.splitlines() if x.startswith("FAIL")]
        assert line.startswith(
            f"FAIL  smtp        127.0.0.1:{server.port} (starttls) as newsletter"
        )
        assert "wrong" not in line and "right" not in r.output  # no secret is echoed
        assert server.received == []


def test_doctor_smtp_names_a_server_that_is_not_there(
    empty: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("init", "news", *ANSWERS).exit_code == 0
    os.chdir(empty / "news")
    smtp_env(monkeypatch, free_port())
    r = run("doctor", "--smtp")
    assert r.exit_code == 1
    assert "FAIL  smtp        127.0.0.1:" in r.stdout
