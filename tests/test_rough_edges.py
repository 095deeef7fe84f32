"""Rough edges a new comms officer met: HEAD requests, a preview tab closed mid-answer, and
mailer.toml mistakes, each answered with one clear line."""

from __future__ import annotations

import datetime as dt
import logging
import re
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from conftest import draft_dir
from mailer import config
from mailer.scheduling import rules
from mailer.site.preview import serve
from mailer.typed import TypedValueError, read_date
from mailer.web import create_app
from send_helpers import addresses, make_list

GET_ROUTES = [
    "/",
    "/feed.xml",
    "/2025-11/",
    "/training/",
    "/training.ics",
    "/accessibility",
    "/site.css",
    "/healthz",
    "/subscribe",
    "/manage",
    "/unsubscribe",
    "/no-such-page",
]


def test_head_is_answered_on_every_get_route_without_a_body(cli: Any, newsletter: Path) -> None:
    assert cli("lists", "create", "staff", "--name", "Staff", "--public").exit_code == 0
    with TestClient(create_app(config.load(newsletter))) as client:
        for path in GET_ROUTES:
            got, head = client.get(path), client.head(path)
            assert head.status_code == got.status_code, path
            assert head.status_code != 405, path
            assert head.content == b"", path
            assert head.headers.get("content-type") == got.headers.get("content-type"), path
            assert head.headers.get("content-length") == got.headers.get("content-length")
        # A HEAD changes nothing and other methods are still refused.
        assert client.post("/").status_code == 405


@pytest.fixture
def preview_server(newsletter: Path) -> Iterator[tuple[str, int]]:
    server, watched = serve(newsletter, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", int(server.server_address[1])
    finally:
        watched.stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=60)


def test_a_preview_tab_closed_mid_answer_prints_no_traceback(
    preview_server: tuple[str, int], capfd: pytest.CaptureFixture[str], caplog: Any
) -> None:
    host, port = preview_server
    caplog.set_level(logging.DEBUG, logger="mailer.preview")
    gone = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "the browser went away" in record.getMessage():
                gone.set()

    watcher = Seen()
    logging.getLogger("mailer.preview").addHandler(watcher)
    try:
        # A browser that asks for the issue and closes the tab at once (a reset, as a
        # closed tab's connection often ends).
        for _ in range(5):
            client = socket.create_connection((host, port))
            client.sendall(
                f"GET /_preview/2025-11/email.html HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
            )
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        assert gone.wait(timeout=120)
    finally:
        logging.getLogger("mailer.preview").removeHandler(watcher)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert "ConnectionResetError" not in err


def _settings_error(root: Path, text: str) -> str:
    (root / "mailer.toml").write_text(text, encoding="utf-8")
    with pytest.raises(config.ConfigError) as caught:
        config.load(root)
    return str(caught.value)


def test_mailer_toml_mistakes_name_the_line_and_the_fix(newsletter: Path) -> None:
    good = (newsletter / "mailer.toml").read_text(encoding="utf-8")
    lines = good.splitlines()
    at = lines.index("[transport]") + 1
    misspelt = "\n".join([*lines[:at], "prot = 587", *lines[at:]]) + "\n"
    message = _settings_error(newsletter, misspelt)
    assert message == (
        f"{newsletter / 'mailer.toml'}:{at + 1}: transport.prot: unknown setting "
        "(did you mean 'port'?)"
    )
    # TOML's own mistakes: the line, and what to write instead.
    unquoted = good.replace('name = "CSCP Newsletter"', "name = CSCP Newsletter", 1)
    line = good.splitlines().index('name = "CSCP Newsletter"') + 1
    assert _settings_error(newsletter, unquoted) == (
        f"{newsletter / 'mailer.toml'}:{line}: Invalid value: put text in double quotes, "
        'like name = "CSCP Newsletter"'
    )
    assert "\n" not in _settings_error(newsletter, good + "\n[sender]\n")


# --- the two forms Outlook gives -------------------------------------------------------------


def test_the_two_outlook_forms_import_with_accented_names(cli: Any, newsletter: Path) -> None:
    assert cli("lists", "create", "staff", "--name", "Staff").exit_code == 0
    # Outlook's contacts exported as CSV (People > Manage contacts > Export contacts).
    export = newsletter / "contacts.csv"
    export.write_text(
        "First Name,Middle Name,Last Name,Company,E-mail Address,E-mail 2 Address\n"
        "Siân,,Jones,Carlisle School,sian@example.org,\n",
        encoding="utf-8-sig",
    )
    r = cli("subscribers", "import", str(export), "--list", "staff")
    assert r.exit_code == 0, r.output
    assert "email from 'E-mail Address'" in r.stdout and "added:                         1" in (
        r.stdout
    )
    # Names and addresses copied from Outlook's To: line, "; " between them and one after.
    pasted = newsletter / "pasted.txt"
    pasted.write_text(
        'Zoë Brown <Zoe.Brown@example.org>; "Patel, Sam" <sam@example.org>; '
        "Ciarán O'Neill <ciaran@example.org>;\nJo Bloggs <jo@example.org>;\n",
        encoding="utf-8",
    )
    r = cli("subscribers", "import", str(pasted), "--list", "staff")
    assert r.exit_code == 0, r.output
    assert "added:                         4" in r.stdout
    assert "invalid:                       0" in r.stdout
    r = cli("subscribers", "list")
    for address, name in (
        ("zoe.brown@example.org", "Zoë Brown"),
        ("sam@example.org", "Patel, Sam"),
        ("ciaran@example.org", "Ciarán O'Neill"),
        ("jo@example.org", "Jo Bloggs"),
        ("sian@example.org", "Siân Jones"),
    ):
        assert re.search(rf"{re.escape(address)}\s+active\s+{re.escape(name)}[\s,]", r.stdout), (
            address
        )
    # One address added by hand in the same form.
    r = cli("subscribers", "add", "Zoë Brown <zoe2@example.org>;", "--list", "staff")
    assert r.exit_code == 0, r.output
    assert re.search(r"zoe2@example\.org\s+active\s+Zoë Brown\s", cli("subscribers", "list").stdout)


# --- UK dates, wherever a date is typed ------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "2026-12-07",
        "7/12/2026",
        "7/12/26",
        "07.12.2026",
        "7 Dec 2026",
        "7th December 2026",
        "Monday 7 December 2026",
        "“7 December 2026”",
    ],
)
def test_a_date_is_read_in_the_ways_uk_users_type_it(typed: str) -> None:
    assert read_date(typed) == dt.date(2026, 12, 7)


def test_a_date_without_a_year_is_the_next_such_day() -> None:
    assert read_date("7th December", after=dt.date(2026, 11, 1)) == dt.date(2026, 12, 7)
    assert read_date("7th December", after=dt.date(2026, 12, 8)) == dt.date(2027, 12, 7)
    with pytest.raises(TypedValueError, match="add the year, like 7 December 2026"):
        read_date("7 December", need_year=True)
    with pytest.raises(TypedValueError, match="13 is not a month: write the day first"):
        read_date("12/13/2026")


def test_new_check_schedule_and_issue_yaml_take_uk_dates(cli: Any, newsletter: Path) -> None:
    assert cli("new", "2027-01", "--date", "5/1/2027").exit_code == 0
    assert "date: 2027-01-05" in (newsletter / "issues/2027-01/issue.yaml").read_text("utf-8")
    assert cli("new", "2027-02", "--date", "2nd February 2027").exit_code == 0
    r = cli("check", "2025-11", "--send-date", "1st December 2025")
    assert r.stdout.startswith("2025-11 checked for a send on Monday 1 December 2025")
    assert rules.parse_at("7 Dec 2026 at 2pm", ZoneInfo("Europe/London")) == dt.datetime(
        2026, 12, 7, 14, tzinfo=dt.UTC
    )
    # In issue.yaml: a session's date and times as people write them.
    path = newsletter / "issues/2021-12/issue.yaml"
    text = path.read_text(encoding="utf-8")
    first = re.search(r"date: (\d{4}-\d{2}-\d{2})", text)
    assert first
    day = dt.date.fromisoformat(first[1])
    text = text.replace(first.group(), f"date: {day.day}/{day.month}/{day.year}", 1)
    path.write_text(text, encoding="utf-8")
    assert cli("build", "2021-12").exit_code == 0
    path.write_text(text.replace(f"date: {day.day}/{day.month}/{day.year}", "date: 7 Dec", 1))
    r = cli("build", "2021-12")
    assert r.exit_code == 1
    assert "'7 Dec' is not a valid date (add the year, like 7 December 2026)" in r.stderr


def test_session_times_take_the_forms_people_type(cli: Any, newsletter: Path) -> None:
    path = newsletter / "issues/2025-11/issue.yaml"
    text = path.read_text(encoding="utf-8")
    old = '{date: 2025-12-03, start: "09:30", end: "12:30", venue: Wigton}'
    assert old in text
    new = '{date: 3/12/2025, start: "9.30am", end: "12.30pm", venue: Wigton}'
    path.write_text(text.replace(old, new), encoding="utf-8")
    assert cli("build", "2025-11").exit_code == 0
    page = (draft_dir(newsletter, "2025-11") / "email.txt").read_text(encoding="utf-8")
    assert "3 December 2025" in page


# --- one schedule per slot ------------------------------------------------------------------


def test_a_duplicate_schedule_is_refused_in_one_line(cli: Any, newsletter: Path) -> None:
    make_list(cli, newsletter, "practitioners", addresses(3))
    make_list(cli, newsletter, "schools", addresses(2, prefix="school"))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    monthly = ["schedule", "--monthly", "1st tue 09:00", "--list", "practitioners"]
    assert cli(*monthly).exit_code == 0
    # The same rule written another way is the same slot.
    again = cli("schedule", "--monthly", "first Tuesday 9am", "--list", "practitioners")
    assert again.exit_code == 1
    assert again.stderr == (
        "Error: schedule 1 already sends monthly (1st tue 09:00) to practitioners: keep it, "
        "or cancel it first with: mailer unschedule 1\n"
    )
    # Another list at the same time, or another time, is not a duplicate.
    assert cli("schedule", "--monthly", "1st tue 09:00", "--list", "schools").exit_code == 0
    assert cli("schedule", "--monthly", "3rd tue 09:00", "--list", "practitioners").exit_code == 0
    at = ["--at", "2099-07-07 09:00"]
    assert cli("schedule", "2025-11", "--list", "practitioners", *at).exit_code == 0
    twice = cli("schedule", "2025-11", "--list", "practitioners", "--list", "schools", *at)
    assert twice.exit_code == 1
    assert "already sends 2025-11 to practitioners" in twice.stderr
    assert cli("unschedule", "4").exit_code == 0
    assert cli("schedule", "2025-11", "--list", "practitioners", *at).exit_code == 0
