"""A stray quote in an import file, in a file of any size, is reported at its line with the
field and the fix; no row is lost inside a quoted cell without a word."""

from __future__ import annotations

from pathlib import Path

import pytest

from subscriber_helpers import Cli, count, fails, make_list, ok, on_list, write


def _rows(n: int) -> list[str]:
    return [f"p{i}@example.org,Person {i}" for i in range(n)]


@pytest.mark.parametrize("size", [1, 3, 19, 500])
def test_an_unclosed_quote_is_reported_in_a_file_of_any_size(
    cli: Cli, newsletter: Path, size: int
) -> None:
    make_list(cli)
    rows = ["email,name", 'ann@example.org,"Ann Smith', *_rows(size)]
    write(newsletter / "quote.csv", "\n".join(rows) + "\n")
    err = fails(cli("subscribers", "import", "quote.csv", "--list", "all"), "quote.csv:2:")
    assert "name:" in err or "is not closed" in err
    assert "close the quote" in err
    assert count(newsletter, "subscriber") == 0


def test_a_stray_quote_closed_lines_later_is_reported_at_its_line(
    cli: Cli, newsletter: Path
) -> None:
    make_list(cli)
    rows = [
        "email,name,organisation",
        "ann@example.org,Ann,Carlisle School",
        'ben@example.org,"Ben,Health visitors',
        "cat@example.org,Cat,Police",
        'dev@example.org,Dev,"NHS"',
        'eve@example.org,"Eve",Social care"',
        "fay@example.org,Fay,Early help",
    ]
    write(newsletter / "stray.csv", "\n".join(rows) + "\n")
    err = fails(cli("subscribers", "import", "stray.csv", "--list", "all"))
    assert err.strip() == (
        'Error: stray.csv:3: name: a quote (") opens in this field and runs to line 5, so the '
        "rows on lines 4-5 would be read as part of it and lost: close the quote on line 3 "
        "or remove it"
    )
    assert count(newsletter, "subscriber") == 0


def test_a_cell_over_several_lines_without_addresses_imports_as_it_stands(
    cli: Cli, newsletter: Path
) -> None:
    make_list(cli)
    text = (
        "Name,E-mail 1 - Value,Business Address\n"
        'Ann Smith,ann@example.org,"1 High Street\nCarlisle\nCA1 1AA"\n'
        "Ben Jones,ben@example.org,\n"
    )
    write(newsletter / "outlook.csv", text)
    ok(cli("subscribers", "import", "outlook.csv", "--list", "all"))
    assert on_list(newsletter, "all") == ["ann@example.org", "ben@example.org"]
