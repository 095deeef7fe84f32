"""Honest public pages: a privacy notice linked wherever people give or receive their
address, sign-up offered only while a list is open to it, an accessibility statement that
claims only what happened, and `mailer init` checking each answer as it is given."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import Result
from mailer import config
from mailer.cli import app
from mailer.formats import long_date
from mailer.render import compile_slug
from mailer.web import create_app

PRIVACY = "https://cscp.example.org/privacy"
# Gmail clips a message whose HTML is over 102 KB (docs: /work/shared/EMAIL-STANDARDS.md).
GMAIL_CLIP = 102 * 1024


def with_footer(root: Path, extra: str) -> None:
    path = root / "mailer.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("[footer]\n", f"[footer]\n{extra}\n", 1), encoding="utf-8")


def test_footers_link_the_privacy_notice_and_offer_sign_up_only_when_it_is_open(
    cli: Any, newsletter: Path
) -> None:
    with_footer(newsletter, f'privacy_url = "{PRIVACY}"')
    assert cli("lists", "create", "staff", "--name", "Staff").exit_code == 0
    settings = config.load(newsletter)
    closed = compile_slug(settings, "2025-11")
    assert f'href="{PRIVACY}"' in closed.email_html
    assert f"Privacy notice:\n{PRIVACY}\n" in closed.email_text
    assert f'href="{PRIVACY}"' in closed.web_html
    # No public list: the sign-up form is closed, so nothing links to it.
    for part in (closed.email_html, closed.email_text, closed.web_html):
        assert "Forwarded to you?" not in part and "/subscribe" not in part
    assert cli("build", "--all").exit_code == 0
    archive = (newsletter / "build/index.html").read_text(encoding="utf-8")
    assert "/subscribe" not in archive and PRIVACY in archive

    r = cli("lists", "create", "practitioners", "--name", "Practitioners", "--public")
    assert r.exit_code == 0
    opened = compile_slug(settings, "2025-11")
    signup = f"{settings.base_url}/subscribe"
    assert re.search(rf'Forwarded to you\? <a href="{signup}"[^>]*>Sign up</a>', opened.email_html)
    assert f"Forwarded to you? Sign up to get it yourself:\n{signup}\n" in opened.email_text
    assert "Forwarded to you?" in opened.web_html
    # The longer footer still fits under Gmail's clip.
    assert len(opened.email_html.encode("utf-8")) < GMAIL_CLIP
    assert cli("build", "--all").exit_code == 0
    assert signup in (newsletter / "build/index.html").read_text(encoding="utf-8")


def test_privacy_url_must_be_an_https_address(newsletter: Path) -> None:
    with_footer(newsletter, 'privacy_url = "http://cscp.example.org/privacy"')
    with pytest.raises(config.ConfigError, match=r"footer\.privacy_url: must be a web address"):
        config.load(newsletter)


def _client(root: Path) -> TestClient:
    return TestClient(create_app(config.load(root)))


def test_the_sign_up_form_and_pages_link_the_privacy_notice(cli: Any, newsletter: Path) -> None:
    with_footer(newsletter, f'privacy_url = "{PRIVACY}"')
    assert cli("lists", "create", "staff", "--name", "Staff").exit_code == 0
    with _client(newsletter) as client:
        page = client.get("/accessibility").text
        assert PRIVACY in page
        assert 'href="/subscribe"' not in page
    cli("lists", "create", "practitioners", "--name", "Practitioners", "--public")
    with _client(newsletter) as client:
        form = client.get("/subscribe").text
        assert f'<a href="{PRIVACY}">our privacy notice</a>' in form
        assert 'href="/subscribe"' in client.get("/accessibility").text


def test_the_accessibility_statement_claims_only_what_happened(cli: Any, newsletter: Path) -> None:
    assert cli("lists", "create", "staff", "--name", "Staff").exit_code == 0
    with _client(newsletter) as client:
        page = client.get("/accessibility").text
    assert "1 December 2026" not in page and "fully compliant" not in page
    assert "tested by keyboard" not in page
    assert "axe-core" in page
    assert "have not run here yet" in page
    assert "How to contact us about accessibility" not in page  # the footer's contact line
    assert "The enforcement procedure that applies to" in page
    assert "has not been written yet" in page
    # A real run of the checks is recorded, with its day and what it covered.
    cli("check", "2025-11")
    path = newsletter / "mailer.toml"
    path.write_text(
        path.read_text(encoding="utf-8")
        + '\n[web]\naccessibility_enforcement = "The EHRC enforces the regulations."\n',
        encoding="utf-8",
    )
    with _client(newsletter) as client:
        page = client.get("/accessibility").text
    ran = config.load(newsletter).today()
    assert f"Those checks last ran on {long_date(ran)} (issue 2025-11)" in page
    assert "Link text is generic" in page
    assert "The EHRC enforces the regulations." in page
    assert "has not been written yet" not in page
    record = newsletter / ".mailer/checks-last-run.json"
    assert oct(record.stat().st_mode & 0o777) == "0o600"


# --- mailer init -----------------------------------------------------------------------------


def run(*args: str, input: str | None = None) -> Result:
    r = CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)
    return Result(r.exit_code, r.stdout, r.stderr)


@pytest.fixture
def empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILER_SECRET_KEY")
    return tmp_path


def test_init_checks_each_answer_as_it_is_given(empty: Path) -> None:
    answers = (
        "My News\nMy Org\nnews.myorg.uk\nhttps://news.myorg.uk\nNews <news@myorg.uk>\n"
        "news@myorg.uk\n1 High St, Town\n\nhttp://myorg.uk/privacy\nhttps://myorg.uk/privacy\n"
    )
    r = run("init", input=answers)
    assert r.exit_code == 0, r.output
    # Each refused answer is asked again at once, with the reason.
    assert r.output.count("must be a web address like https://news.example.org") == 1
    assert r.output.count("is not one email address") == 1
    assert r.output.count("must be a web address starting https://") == 1
    made = config.load(empty, env={})
    assert (made.base_url, made.sender.from_address) == ("https://news.myorg.uk", "news@myorg.uk")
    assert made.footer.privacy_url == "https://myorg.uk/privacy"


def test_init_checks_the_folder_before_asking_anything(empty: Path) -> None:
    (empty / "news").mkdir()
    (empty / "news/mailer.toml").write_text("name = 'x'\n", encoding="utf-8")
    r = run("init", "news", input="My News\n")
    assert r.exit_code == 1
    assert "is already a newsletter folder" in r.stderr
    assert "newsletter's name" not in r.stdout
    (empty / "afile").write_text("x")
    r = run("init", "afile", input="My News\n")
    assert r.exit_code == 1
    assert "is a file, not a folder" in r.stderr and r.stdout == ""


def test_init_without_a_privacy_notice_leaves_it_for_doctor(empty: Path) -> None:
    r = run(
        "init",
        "news",
        "--name",
        "N",
        "--organisation",
        "O",
        "--base-url",
        "https://n.org",
        "--from-address",
        "n@n.org",
        "--postal-address",
        "1 High St",
        "--privacy-url",
        "ftp://x",
    )
    assert r.exit_code == 1
    assert r.stderr == (
        "Error: --privacy-url: must be a web address starting https://, like "
        "https://example.org/privacy\n"
    )
    assert not (empty / "news").exists()
    os.environ.pop("MAILER_ROOT", None)


def test_lists_create_asks_at_a_terminal_whether_the_list_is_public(
    newsletter: Path, tmp_path: Path
) -> None:
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "lists", "create", "everyone", "--name", "Everyone"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=newsletter,
        close_fds=True,
    )
    os.close(follower)
    seen = b""
    while b"(public)?" not in seen:
        seen += os.read(leader, 1024)
    os.write(leader, b"y\n")
    assert process.wait(timeout=60) == 0
    while b"Created list" not in seen:
        seen += os.read(leader, 1024)
    os.close(leader)
    assert b"Created list everyone: Everyone (public: offered on the sign-up form)" in seen
