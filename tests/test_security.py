"""The holes an adversarial test found, each reproduced and now failing safe (docs/security.md)."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from db_helpers import on_postgres
from mailer import config
from mailer.errors import InvalidInput
from mailer.sending import headers
from send_helpers import addresses, make_list
from subscriber_helpers import fails, ok, query

ISSUE = "issues/2025-11/issue.yaml"


def edit(root: Path, old: str, new: str, path: str = ISSUE) -> None:
    file = root / path
    text = file.read_text(encoding="utf-8")
    assert old in text, old
    file.write_text(text.replace(old, new, 1), encoding="utf-8")


def build_error(cli: Any) -> str:
    r = cli("build", "2025-11")
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    return r.stderr


# -- headers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        '"Hi\\r\\nBcc: someone@elsewhere.example"',
        '"Hi\\nBcc: someone@elsewhere.example"',
        "|\n  Two lines\n  of subject",
        '"Bell\\a in it"',
    ],
)
def test_a_subject_that_would_add_header_lines_is_refused_with_its_line(
    cli: Any, newsletter: Path, subject: str
) -> None:
    text = (newsletter / ISSUE).read_text(encoding="utf-8")
    first = next(line for line in text.splitlines() if line.startswith("subject:"))
    edit(newsletter, first, f"subject: {subject}")
    err = build_error(cli)
    assert f"{ISSUE}:" in err and "subject:" in err
    assert "one line" in err or "control character" in err


def test_settings_that_reach_headers_are_checked_where_they_are_read(newsletter: Path) -> None:
    toml = newsletter / "mailer.toml"
    original = toml.read_text(encoding="utf-8")
    for old, new, fragment in (
        (
            'from_address = "newsletter@example.org"',
            'from_address = "newsletter@example.org>, other@example.org"',
            "sender.from_address",
        ),
        ('reply_to = "cscp@example.org"', 'reply_to = "not an address"', "sender.reply_to"),
        (
            'from_name = "Cumberland',
            'from_name = "Evil\\r\\nBcc: x@example.org Cumberland',
            "from_name",
        ),
    ):
        toml.write_text(original.replace(old, new, 1), encoding="utf-8")
        with pytest.raises(config.ConfigError, match=fragment):
            config.load(newsletter)
    toml.write_text(original, encoding="utf-8")


def test_a_list_slug_with_a_trailing_newline_is_refused(cli: Any) -> None:
    fails(cli("lists", "create", "demo\n", "--name", "Demo"), "is not a valid list slug")


def test_the_header_module_refuses_line_breaks_and_encodes_lookalike_words() -> None:
    with pytest.raises(InvalidInput):
        headers.text("Subject", "Hi\r\nBcc: x@example.org")
    with pytest.raises(InvalidInput):
        headers.address("To", "Jo", "jo@example.org>\r\nBcc: x@example.org")
    line = headers.text("Subject", "Price =?utf-8?b?SGk=?= today")
    parsed = email.message_from_bytes(line + b"\r\n", policy=email.policy.strict)
    assert parsed["Subject"] == "Price =?utf-8?b?SGk=?= today"  # shown exactly as written
    named = headers.address("To", "Zoë \x1b[31m O'Brien", "zoe@example.org")
    parsed = email.message_from_bytes(named + b"\r\n", policy=email.policy.strict)
    assert parsed["To"].addresses[0].display_name == "Zoë [31m O'Brien"


def test_every_header_of_every_message_parses_strictly(cli: Any, newsletter: Path) -> None:
    make_list(cli, newsletter, "practitioners", addresses(3))
    edit(newsletter, 'subject: "CSCP Newsletter', 'subject: "Zoë =?x?= CSCP Newsletter')
    ok(cli("build", "2025-11"))
    ok(cli("approve", "2025-11", "--by", "Sam Patel"))
    ok(cli("send", "2025-11", "--list", "practitioners", "--yes"))
    messages = sorted((newsletter / "outbox/2025-11").glob("*.eml"))
    assert len(messages) == 3
    for path in messages:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.strict)
        for name, value in msg.items():
            assert "\n" not in str(value) and "\r" not in str(value), name
        assert str(msg["Subject"]).startswith("Zoë =?x?= CSCP Newsletter")
        assert len({k.lower() for k in msg}) == len(msg.keys())  # no header twice


# -- files ----------------------------------------------------------------------------------


def _image_section(newsletter: Path, src: str) -> None:
    edit(
        newsletter,
        '    title: "Impact Chronology"',
        f'    title: "Impact Chronology"\n    image: {{src: {src}, alt: "A picture"}}',
    )


def test_a_symlinked_image_that_leads_to_the_signing_key_is_refused(
    cli: Any, newsletter: Path
) -> None:
    secret = newsletter / ".mailer" / "secret_key"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text("k" * 40)
    folder = newsletter / "issues/2025-11/images"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "banner.png").symlink_to(Path("../../../.mailer/secret_key"))
    _image_section(newsletter, "images/banner.png")
    err = build_error(cli)
    assert "images/banner.png" in err and "outside the issue folder" in err
    assert not list((newsletter / "build").rglob("banner.png"))


def test_an_image_must_really_be_a_picture_under_the_size_limit(cli: Any, newsletter: Path) -> None:
    folder = newsletter / "issues/2025-11/images"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fake.png").write_text("<?php system($_GET['x']); ?>")
    _image_section(newsletter, "images/fake.png")
    assert "is not really a PNG, JPEG, GIF or WebP picture" in build_error(cli)
    (folder / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (3 * 1024 * 1024))
    assert "over the 2,048 KB limit" in build_error(cli)


# -- placeholders ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (
            "https://learning.nspcc.org.uk/",
            "https://tracker.example.net/?u=%%MAILER_UNSUBSCRIBE_URL%%",
        ),
        (
            "https://learning.nspcc.org.uk/",
            "https://tracker.example.net/?u=%25%25MAILER_UNSUBSCRIBE_URL%25%25",
        ),
        ('Impact Chronology"', 'Impact &#37;&#37;MAILER_PREFERENCES_URL&#37;&#37;"'),
    ],
    ids=["plain", "url-encoded", "entities"],
)
def test_content_can_never_carry_a_personal_link_elsewhere(
    cli: Any, newsletter: Path, old: str, new: str
) -> None:
    edit(newsletter, old, new)
    assert "%%MAILER_...%%: it is reserved" in build_error(cli)


def test_a_template_may_use_a_placeholder_only_as_a_whole_link(cli: Any, newsletter: Path) -> None:
    from mailer.render.compile import LAYOUT

    templates = newsletter / "templates"
    templates.mkdir(exist_ok=True)
    source = (Path(config.__file__).parent / "render/templates" / LAYOUT).read_text()
    templates.joinpath(LAYOUT).write_text(
        source.replace(
            '<a href="{{ urls.unsubscribe }}">Unsubscribe</a>',
            '<a href="https://tracker.example.net/?u={{ urls.unsubscribe }}">Unsubscribe</a>',
        )
    )
    assert "outside a link the template marks" in build_error(cli)


# -- approval -------------------------------------------------------------------------------


def test_changing_the_sender_after_approval_needs_a_new_approval(
    cli: Any, newsletter: Path
) -> None:
    make_list(cli, newsletter, "practitioners", addresses(2))
    ok(cli("approve", "2025-11", "--by", "Sam Patel"))
    edit(
        newsletter,
        'from_name = "Cumberland Safeguarding Children Partnership"',
        'from_name = "IT Helpdesk"',
        "mailer.toml",
    )
    err = fails(cli("send", "2025-11", "--list", "practitioners", "--yes"), "changed since")
    assert "From changed (now 'IT Helpdesk <newsletter@example.org>')" in err
    assert not (newsletter / "outbox").exists()


def test_changing_an_image_after_approval_needs_a_new_approval(cli: Any, newsletter: Path) -> None:
    make_list(cli, newsletter, "practitioners", addresses(2))
    ok(cli("approve", "2021-12", "--by", "Sam Patel"))
    image = next((newsletter / "issues/2021-12/images").glob("*.png"))
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF
    image.write_bytes(bytes(data))
    err = fails(cli("send", "2021-12", "--list", "practitioners", "--yes"), "changed since")
    assert f"image images/{image.name} changed" in err


# -- secrets --------------------------------------------------------------------------------


def test_the_key_is_made_once_readable_only_by_its_owner(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAILER_SECRET_KEY")
    ok(cli("lists", "create", "all", "--name", "All"))
    key = newsletter / ".mailer/secret_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_text()
    ok(cli("lists", "list"))
    assert key.read_text() == first  # never regenerated
    key.unlink()
    fails(cli("lists", "list"), "the signing key is missing", "restore it from your backup")
    key.write_text(first)
    key.chmod(0o644)
    fails(cli("lists", "list"), "can be read by other users", "chmod 600")


def test_a_short_key_or_another_key_is_refused(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(cli("lists", "create", "all", "--name", "All"))
    monkeypatch.setenv("MAILER_SECRET_KEY", "x")
    fails(cli("lists", "list"), "the signing key is too short")
    monkeypatch.setenv("MAILER_SECRET_KEY", "another-key-that-is-long-enough-to-pass")
    err = fails(cli("lists", "list"), "is not the one this database was used with")
    assert "another-key" not in err  # no secret echoed


def test_rotating_the_key_keeps_erasure_and_old_links_working(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailer import tokens

    monkeypatch.delenv("MAILER_SECRET_KEY")
    make_list(cli, newsletter, "practitioners", ["gone@example.org", "stays@example.org"])
    ok(cli("subscribers", "erase", "gone@example.org", "--yes"))
    old = config.load(newsletter)
    link = tokens.make(old.require_secret_key(), "unsubscribe", 2, 0)
    before = ok(cli("key", "fingerprint")).stdout
    ok(cli("key", "rotate"))
    after = config.load(newsletter)
    assert ok(cli("key", "fingerprint")).stdout != before
    assert after.require_secret_key() != old.require_secret_key()
    assert tokens.read(tokens.keys_of(after), "unsubscribe", link) == (2, 0)
    (newsletter / "again.csv").write_text("email\ngone@example.org\n")
    r = ok(cli("subscribers", "import", "again.csv", "--list", "practitioners"))
    assert "was erased on request" in r.stdout
    assert query(
        newsletter, "SELECT count(*) FROM subscriber WHERE email = 'gone@example.org'"
    ) == [(0,)]


def test_the_password_never_goes_in_clear_except_to_loopback_when_asked(
    newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILER_TRANSPORT", "smtp")
    monkeypatch.setenv("MAILER_SMTP_USERNAME", "mailer")
    monkeypatch.setenv("MAILER_SMTP_HOST", "relay.example.org")
    with pytest.raises(config.ConfigError, match="would be sent unencrypted"):
        config.load(newsletter)
    monkeypatch.setenv("MAILER_SMTP_HOST", "127.0.0.1")
    with pytest.raises(config.ConfigError, match="would be sent unencrypted"):
        config.load(newsletter)
    monkeypatch.setenv("MAILER_SMTP_PLAIN_AUTH_ON_LOOPBACK", "true")
    assert config.load(newsletter).transport.smtp.plain_auth_on_loopback
    monkeypatch.setenv("MAILER_SMTP_HOST", "relay.example.org")
    with pytest.raises(config.ConfigError, match="would be sent unencrypted"):
        config.load(newsletter)


# -- erasure --------------------------------------------------------------------------------


def test_erasure_scrubs_every_copy_mailer_wrote(cli: Any, newsletter: Path) -> None:
    person = "jo.bloggs@example.org"
    make_list(cli, newsletter, "practitioners", [person, "other@example.org"])
    ok(cli("approve", "2025-11", "--by", "Sam Patel"))
    ok(cli("send", "2025-11", "--list", "practitioners", "--yes"))
    log = newsletter / ".mailer/mailer.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(f"2026-01-01T09:00:00Z WARNING an old line about {person}\n")
    with_person = [p for p in (newsletter / "outbox").rglob("*.eml") if person in p.read_text()]
    assert len(with_person) == 1
    # As a relay's refusal would record it.
    query(
        newsletter,
        "UPDATE delivery SET last_error = ? WHERE email = ?",
        f"550 5.1.1 <{person}>: no such user",
        person,
    )
    ok(cli("subscribers", "erase", person, "--yes"))
    assert not with_person[0].exists()
    assert len(list((newsletter / "outbox").rglob("*.eml"))) == 1
    assert person not in log.read_text() and "[erased]" in log.read_text()
    for table, column in (
        ("delivery", "email"),
        ("delivery", "last_error"),
        ("subscriber", "email"),
    ):
        rows = query(
            newsletter, f"SELECT count(*) FROM {table} WHERE {column} LIKE ?", f"%{person}%"
        )
        assert rows == [(0,)], (table, column)
    if not on_postgres(newsletter):
        # The database's own files (PostgreSQL's: tests/test_postgres.py).
        wal = newsletter / "subscribers.sqlite-wal"
        assert not wal.exists() or person.encode() not in wal.read_bytes()
        assert person.encode() not in (newsletter / "subscribers.sqlite").read_bytes()
    shown = ok(cli("subscribers", "show", person)).stdout
    assert "erased" in shown and "name" not in shown


# -- spreadsheets ---------------------------------------------------------------------------


def test_exports_neutralise_formulas_and_import_back_exactly(cli: Any, newsletter: Path) -> None:
    ok(cli("lists", "create", "all", "--name", "All"))
    people = [
        ("=cmd@example.org", '=HYPERLINK("http://x.example")', "+Org"),
        ("ann@example.org", "-Ann", "@home"),
        ("bob@example.org", "Bob O'Neil", "School"),
    ]
    rows = "email,name,organisation\n" + "".join(
        f'"{e}","{n.replace(chr(34), chr(34) * 2)}","{o}"\n' for e, n, o in people
    )
    (newsletter / "in.csv").write_text(rows, encoding="utf-8")
    ok(cli("subscribers", "import", "in.csv", "--list", "all"))
    ok(cli("subscribers", "export", "--list", "all", "-o", "out.csv"))
    exported = list(csv.reader(io.StringIO((newsletter / "out.csv").read_text("utf-8-sig"))))
    for row in exported[1:]:
        for cell in row[:3]:
            assert not cell.startswith(("=", "+", "-", "@")), row
    ok(cli("lists", "create", "again", "--name", "Again"))
    ok(cli("subscribers", "import", "out.csv", "--list", "again"))
    stored = query(newsletter, "SELECT email, name, organisation FROM subscriber ORDER BY id")
    assert stored == people


def test_control_characters_in_names_are_stripped_and_reported(cli: Any, newsletter: Path) -> None:
    ok(cli("lists", "create", "all", "--name", "All"))
    (newsletter / "in.csv").write_text("email,name\nann@example.org,Ann\x1b[2J\x07 Smith\n")
    r = ok(cli("subscribers", "import", "in.csv", "--list", "all"))
    assert "in.csv:2: ann@example.org: control characters removed" in r.stdout
    assert query(newsletter, "SELECT name FROM subscriber") == [("Ann [2J Smith",)]
    fails(
        cli("subscribers", "add", "bob@example.org", "--list", "all", "--name", "Bob\x1b]0;x\x07"),
        "control character",
    )


# -- limits ---------------------------------------------------------------------------------


def test_an_issue_file_over_the_limit_is_refused_before_it_is_read(
    cli: Any, newsletter: Path
) -> None:
    path = newsletter / ISSUE
    path.write_text(path.read_text() + "#" * (1100 * 1024) + "\n")
    assert "over the 1,024 KB limit" in build_error(cli)


def test_yaml_aliases_that_expand_enormously_are_refused_quickly(
    cli: Any, newsletter: Path
) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    bomb = "\n".join(lines) + "\nsubject: Bomb\ndate: 2026-01-06\nsections: [*a7]\n"
    (newsletter / ISSUE).write_text(bomb)
    assert "expands to more than 20,000 values" in build_error(cli)


def test_an_email_too_big_for_gmail_is_refused_and_a_large_one_warned_about(
    cli: Any, newsletter: Path
) -> None:
    filler = " ".join(["Practitioners should read the updated guidance carefully."] * 9)
    body = "\n\n      ".join([filler] * 20)
    section = f"  - type: news\n    title: Long {{}}\n    body: |\n      {body}\n"
    path = newsletter / ISSUE
    original = path.read_text()
    path.write_text(original + "".join(section.format(i) for i in range(1, 5)))
    r = cli("build", "2025-11")
    assert r.exit_code == 0 and "Warning: 2025-11: the email is" in r.stderr, r.output
    path.write_text(original + "".join(section.format(i) for i in range(1, 9)))
    assert "over the 102 KB limit" in build_error(cli)


# -- one line, never a traceback -------------------------------------------------------------


def test_mistakes_that_used_to_crash_are_one_line(
    cli: Any, newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = newsletter / "mailer.toml"
    original = toml.read_bytes()
    toml.write_bytes(original.replace(b"Cumberland House", "Cúmberland".encode("cp1252")))
    fails(cli("lists", "list"), "is not UTF-8 text", "save it as UTF-8")
    toml.write_bytes(original)

    monkeypatch.setenv("MAILER_DATABASE_URL", "nonsense")
    fails(cli("lists", "list"), "is not a database URL")
    monkeypatch.setenv("MAILER_DATABASE_URL", "postgresql+nodriver://bob:hunter2@127.0.0.1/x")
    err = fails(cli("lists", "list"))
    assert "hunter2" not in err
    monkeypatch.delenv("MAILER_DATABASE_URL")

    fails(
        cli("subscribers", "export", "-o", "/nonexistent/x.csv"), "cannot write /nonexistent/x.csv"
    )
    shutil.rmtree(newsletter / "build")  # the fixture's copy, as after mailer build
    (newsletter / "build").write_text("not a folder")
    fails(cli("build", "2025-11"), "is a file, not a folder")
    for variable, value in (
        ("MAILER_SMTP_TIMEOUT", "-5"),
        ("MAILER_SMTP_CONNECTIONS", "0"),
        ("MAILER_SMTP_RATE_PER_SECOND", "-1"),
        ("MAILER_SMTP_PORT", "eleven"),
    ):
        monkeypatch.setenv(variable, value)
        fails(cli("lists", "list"), variable)
        monkeypatch.delenv(variable)


def test_a_state_folder_that_is_a_file_is_one_line(cli: Any, newsletter: Path) -> None:
    shutil.rmtree(newsletter / ".mailer")  # the fixture's previews of its drafts
    (newsletter / ".mailer").write_text("oops")
    fails(cli("lists", "list"), ".mailer is a file")
    assert os.path.isfile(newsletter / ".mailer")
