"""Times and monthly rules as a UK comms officer types them, and rules that say what they
mean: every month, at a time that exists."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailer.errors import ScheduleError
from mailer.scheduling import rules
from send_helpers import addresses, make_list, sql

LONDON = ZoneInfo("Europe/London")


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2026-12-31 09:00", utc(2026, 12, 31, 9)),
        ("31/12/2026 09:00", utc(2026, 12, 31, 9)),
        ("31/12/2026 9.30am", utc(2026, 12, 31, 9, 30)),
        ("31/12/2026 9am", utc(2026, 12, 31, 9)),
        ("2026-12-31 2pm", utc(2026, 12, 31, 14)),
        ("1/7/2026 9:30 am", utc(2026, 7, 1, 8, 30)),  # BST
        ("2026-07-01 12 noon", utc(2026, 7, 1, 11)),
        ("“2026-12-31 09:00”", utc(2026, 12, 31, 9)),  # pasted with curly quotes
        ("2026-12-31T09:00", utc(2026, 12, 31, 9)),
    ],
)
def test_at_takes_the_ways_uk_users_write_a_time(written: str, expected: dt.datetime) -> None:
    assert rules.parse_at(written, LONDON) == expected


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("12/31/2026 09:00", "31 is not a month: write the day first, like 31/12/2026"),
        ("31/02/2026 09:00", "2026-02-31 is not a date that exists"),
        ("2026-12-31 9", "'9' is not a time of day (write 09:00, 9.30am or 2pm)"),
        ("2026-12-31 13pm", "is not a time of day"),
        ("tomorrow at nine", 'write the date and time like "2026-12-31 09:00"'),
        ("2026-03-29 01:30", "does not exist on 29 March 2026 in Europe/London"),
    ],
)
def test_at_refuses_what_it_cannot_read_and_says_how_to_write_it(
    written: str, message: str
) -> None:
    with pytest.raises(ScheduleError) as caught:
        rules.parse_at(written, LONDON)
    assert message in str(caught.value)


def test_a_time_the_clocks_repeat_means_the_first_of_the_two_for_at_and_monthly() -> None:
    assert rules.parse_at("2026-10-25 01:30", LONDON) == utc(2026, 10, 25, 0, 30)  # BST
    rule = rules.parse_rule("last sun 01:30")
    assert rule.next_after(utc(2026, 10, 1), LONDON) == utc(2026, 10, 25, 0, 30)


@pytest.mark.parametrize(
    ("written", "stored", "words"),
    [
        ("1st tue 09:00", "1st tue 09:00", "the first Tuesday of every month at 9am"),
        ("first Tuesday 9am", "1st tue 09:00", "the first Tuesday of every month at 9am"),
        ("1st tuesday 9 am", "1st tue 09:00", "the first Tuesday of every month at 9am"),
        ("last Friday 2.30pm", "last fri 14:30", "the last Friday of every month at 2:30pm"),
        ("every 15th at 9.15am", "15 09:15", "the 15th of every month at 9:15am"),
        ("last day 08:00", "last day 08:00", "the last day of every month at 8am"),
        ("last 08:00", "last day 08:00", "the last day of every month at 8am"),  # stored before
    ],
)
def test_monthly_rules_take_full_day_names_and_12_hour_times(
    written: str, stored: str, words: str
) -> None:
    rule = rules.parse_rule(written)
    assert str(rule) == stored
    assert rule.describe() == words
    assert rules.parse_rule(str(rule)) == rule


@pytest.mark.parametrize(
    ("written", "message"),
    [
        (
            "31 09:00",
            "it would skip February, April, June, September and November: use "
            '"last day 09:00" for the last day of every month',
        ),
        ("30 09:00", 'would skip February: use "last day 09:00"'),
        ("29 09:00", "February except in leap years"),
        (
            "5th mon 09:00",
            "most months have no fifth Monday (in the next twelve months it would skip "
            "January, February, April, May, July, September, October and December): use "
            '"last mon 09:00" for the last Monday of every month',
        ),
        (
            "last sun 01:30",
            "01:30 does not exist on Sunday 29 March 2026 in Europe/London because the clocks "
            "go forward",
        ),
    ],
)
def test_a_monthly_rule_that_would_skip_months_or_name_a_missing_time_is_refused(
    written: str, message: str
) -> None:
    rule = rules.parse_rule(written)
    with pytest.raises(ScheduleError) as caught:
        rules.check_rule(rule, LONDON, dt.date(2026, 1, 1))
    assert message in str(caught.value)


def test_rules_that_fire_every_month_fire_every_month() -> None:
    for written in ("28 09:00", "last day 09:00", "4th thu 09:00", "last fri 14:30"):
        rule = rules.parse_rule(written)
        rules.check_rule(rule, LONDON, dt.date(2026, 1, 1))
        fires = rule.occurrences(dt.date(2026, 1, 1), LONDON, 24)
        assert len(fires) == 24
        assert len({(f.year, f.month) for f in fires}) == 24


def test_the_last_day_rule_follows_the_month_length() -> None:
    rule = rules.parse_rule("last day 09:00")
    days = [f.day for f in rule.occurrences(dt.date(2028, 1, 1), LONDON, 4)]
    assert days == [31, 29, 31, 30]  # 2028 is a leap year


@pytest.fixture
def listed(cli: Any, newsletter: Path) -> Path:
    make_list(cli, newsletter, "practitioners", addresses(2))
    assert cli("approve", "2025-11", "--by", "Sam Patel").exit_code == 0
    return newsletter


def test_schedule_echoes_the_time_in_words_and_takes_a_uk_date(cli: Any, listed: Path) -> None:
    r = cli("schedule", "2025-11", "--list", "practitioners", "--at", "31/12/2099 9.30am")
    assert r.exit_code == 0, r.output
    assert "next run Thursday 31 December 2099 at 9:30am GMT (2099-12-31 09:30 UTC)" in r.stdout
    r = cli("schedule", "--monthly", "first Tuesday 9am", "--list", "practitioners")
    assert r.exit_code == 0, r.output
    assert "That is the first Tuesday of every month at 9am (Europe/London time)." in r.stdout
    assert sql(listed, "SELECT rule FROM schedule WHERE kind = 'monthly'") == [("1st tue 09:00",)]


def test_schedule_refuses_a_rule_that_skips_months_in_one_line(cli: Any, listed: Path) -> None:
    r = cli("schedule", "--monthly", "31 09:00", "--list", "practitioners")
    assert r.exit_code == 1
    (line,) = r.stderr.splitlines()
    assert line.startswith("Error: --monthly '31 09:00': not every month has a day 31")
    assert 'use "last day 09:00"' in line
    assert sql(listed, "SELECT COUNT(*) FROM schedule") == [(0,)]
