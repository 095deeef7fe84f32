"""Who may receive a copy of a send: one table of cases (status × membership × suppression)
run through every path that applies the rule (mailer.store.eligibility): writing a send's
ledger, the SQLite claim (rows named, on SQLite's DB-API connection) and the Core claim
(the next rows, as on PostgreSQL), on both databases."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from conftest import ON_POSTGRES
from mailer import config
from mailer.operations import service
from mailer.sending import workers
from mailer.store import deliveries, eligibility, ledger_writer, people, sends
from mailer.store.database import open_db
from send_helpers import make_list, sql

SEND_LIST, OTHER_LIST = "practitioners", "governors"
ME = "host:1:1/1"


class Case(NamedTuple):
    status: str  # the person's own status
    membership: str  # "subscribed" to the send's list, "left" it, or "elsewhere" only
    suppressed: bool  # erased: the address hash on the suppression list, the address gone


# What each case gets: None (mailed) or the reason recorded when a claim skips the row.
# The first condition that fails names the reason: status, then address, then membership.
def expected(case: Case) -> str | None:
    if case.suppressed:
        return "erased"
    if case.status != "active":
        return case.status
    if case.membership != "subscribed":
        return eligibility.OFF_THE_LISTS
    return None


CASES = [
    Case(*c)
    for c in itertools.product(
        ("active", "unsubscribed", "bounced", "complained"),
        ("subscribed", "left", "elsewhere"),
        (False, True),
    )
]


def test_the_table_covers_every_reason() -> None:
    reasons = {expected(c) for c in CASES}
    assert reasons == {
        None,
        "unsubscribed",
        "bounced",
        "complained",
        "erased",
        eligibility.OFF_THE_LISTS,
    }


def _address(i: int) -> str:
    return f"case{i:02d}@example.org"


def _people(cli: Any, newsletter: Path) -> None:
    """Everyone on the send's list, and on the other list too (so "elsewhere" is a real
    membership of a list the send does not go to)."""
    emails = [_address(i) for i in range(len(CASES))]
    make_list(cli, newsletter, SEND_LIST, emails)
    make_list(cli, newsletter, OTHER_LIST, emails, name="Governors")


def _apply(newsletter: Path, *, erase: bool) -> None:
    """Put each person into their case. ``erase``: erase the suppressed ones the way mailer
    does (before a send); otherwise do to their row what an erasure does, keeping their
    ledger row, as if the erasure was committed after the engine read the row ahead."""
    settings = config.load(newsletter)
    for i, case in enumerate(CASES):
        email = _address(i)
        if case.membership != "subscribed":
            sql(
                newsletter,
                "UPDATE membership SET status = 'unsubscribed' WHERE subscriber_id = "
                "(SELECT id FROM subscriber WHERE email = ?) AND list_id = "
                "(SELECT id FROM mailing_list WHERE slug = ?)",
                email,
                SEND_LIST,
            )
        if case.membership == "left":
            sql(
                newsletter,
                "UPDATE membership SET status = 'unsubscribed' WHERE subscriber_id = "
                "(SELECT id FROM subscriber WHERE email = ?)",
                email,
            )
        sql(newsletter, "UPDATE subscriber SET status = ? WHERE email = ?", case.status, email)
        if case.suppressed and erase:
            with open_db(settings) as database, database.session(write=True) as session:
                people.erase(session, email)
        elif case.suppressed:
            sql(
                newsletter,
                "UPDATE subscriber SET status = 'erased', email = NULL WHERE email = ?",
                email,
            )


def _send(cli: Any, newsletter: Path) -> int:
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    settings = config.load(newsletter)
    with open_db(settings) as database:
        send_id = service.create(settings, "2025-11", [SEND_LIST], database=database)
        with database.session(write=True) as session:
            deliveries.fix_recipients(session, sends.get(session, send_id))
    return send_id


def _case_of(email: str) -> Case:
    return CASES[int(email.removeprefix("case").partition("@")[0])]


def test_writing_a_send_s_ledger_takes_exactly_the_cases_that_may_be_mailed(
    cli: Any, newsletter: Path
) -> None:
    _people(cli, newsletter)
    _apply(newsletter, erase=True)
    send_id = _send(cli, newsletter)
    in_ledger = {
        e for (e,) in sql(newsletter, "SELECT email FROM delivery WHERE send_id = ?", send_id)
    }
    assert sorted(in_ledger) == sorted(
        _address(i) for i, c in enumerate(CASES) if expected(c) is None
    )
    settings = config.load(newsletter)
    with open_db(settings) as database, database.session() as session:
        list_ids = sends.list_ids_of(session.connection(), send_id)
        assert eligibility.count(session, list_ids) == len(in_ledger)


def _claim(writer: Any, database: Any, send_id: int, ids: list[int]) -> list[int]:
    workers.join(database, send_id, ME, 2, dt.timedelta(seconds=30))
    backend = writer(database, send_id, ME)
    try:
        if backend.reads_ahead:
            return list(backend.write([], [], ids, None).claimed)
        return [row.id for row in backend.write([], [], [], None, want=len(ids) + 10).rows]
    finally:
        backend.close()


@pytest.mark.parametrize(
    "writer",
    [
        # The SQLite writer works on SQLite's DB-API connection only: SQLite in both passes.
        pytest.param(ledger_writer.SQLiteLedgerWriter, marks=pytest.mark.sqlite_file),
        ledger_writer.CoreLedgerWriter,
        # psycopg's connection only: a case of the PostgreSQL pass only.
        *([ledger_writer.PostgresLedgerWriter] if ON_POSTGRES else []),
    ],
)
def test_each_claim_sends_the_cases_that_may_be_mailed_and_skips_the_rest_saying_why(
    cli: Any, newsletter: Path, writer: Any
) -> None:
    _people(cli, newsletter)
    send_id = _send(cli, newsletter)  # everyone may be mailed when the send starts
    rows = sql(newsletter, "SELECT id, email FROM delivery WHERE send_id = ? ORDER BY id", send_id)
    assert len(rows) == len(CASES)
    case_of_row = {i: _case_of(e) for i, e in rows}
    _apply(newsletter, erase=False)
    settings = config.load(newsletter)
    with open_db(settings) as database:
        claimed = _claim(writer, database, send_id, [i for i, _ in rows])
    outcome = dict(
        sql(
            newsletter,
            "SELECT id, status || ': ' || last_error FROM delivery WHERE send_id = ?",
            send_id,
        )
    )
    want = {
        i: "in-flight: " if expected(c) is None else f"skipped: {expected(c)}"
        for i, c in case_of_row.items()
    }
    assert outcome == want
    assert sorted(claimed) == sorted(i for i, c in case_of_row.items() if expected(c) is None)
