from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sigverify_common.errors import InvalidArgument
from sigverify_common.vocab import Source
from sigverify_intake.domain import check_columns, content_digest, validate

COLS = ["line", "first_name", "middle_name", "last_name", "street", "unit", "city", "zip",
        "signed_on", "circulator_id"]


def row(line: str, first: str = "Ann", last: str = "Lee", street: str = "1 Main St",
        signed: str = "2017-05-02") -> list[str]:
    return [line, first, "", last, street, "", "", "93301", signed, "C-1"]


def test_good_rows_are_signatures() -> None:
    v = validate(COLS, [(1, row("1")), (2, row("2", first="Bo"))])
    assert v.rejected == []
    assert [s.line for s in v.signatures] == [1, 2]
    assert v.signatures[0].signed_on == date(2017, 5, 2)
    assert v.signatures[0].source is Source.PAPER


def test_each_unreadable_row_is_named_and_the_rest_go_on() -> None:
    v = validate(COLS, [
        (1, row("1")), (2, row("")), (3, row("2", signed="2017-02-30")), (4, row("1")),
        (5, row("x")), (6, row("3")[:5]), (7, row("4")),
    ])
    assert [(e.record, e.field) for e in v.rejected] == [
        (2, "line"), (3, "signed_on"), (4, "line"), (5, "line"), (6, "(row)")]
    assert v.rejected[1].line == 2
    assert [s.line for s in v.signatures] == [1, 4]
    assert v.rows_received == 7


def test_missing_name_or_address_is_incomplete_not_rejected() -> None:
    v = validate(COLS, [(1, row("1", first="", last="")), (2, row("2", street="")),
                        (3, row("3", first=""))])
    assert v.rejected == []
    assert [s.incomplete for s in v.signatures] == [True, True, False]
    assert v.incomplete == 2


def test_single_name_column_is_parsed() -> None:
    cols = ["line", "name", "street", "signed_on", "source"]
    v = validate(cols, [(1, ["1", "Robert J. Smith Jr.", "1 Main St", "", "online"])])
    s = v.signatures[0]
    assert (s.first_name, s.middle_name, s.last_name) == ("Robert", "J.", "Smith Jr.")
    assert s.source is Source.ONLINE and s.signed_on is None


def test_unknown_source_is_rejected() -> None:
    cols = [*COLS, "source"]
    v = validate(cols, [(1, [*row("1"), "fax"])])
    assert [(e.field, e.line) for e in v.rejected] == [("source", 1)]


@pytest.mark.parametrize("columns, missing", [
    (["first_name", "last_name", "street"], "line"),
    (["line", "first_name", "last_name"], "street"),
    (["line", "first_name", "street"], "first_name and last_name"),
])
def test_a_header_that_cannot_carry_signatures_is_refused(columns: list[str], missing: str) -> None:
    with pytest.raises(InvalidArgument, match=missing):
        check_columns(columns)


def test_repeated_column_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="twice"):
        check_columns(["line", "street", "name", "name"])


@given(st.lists(st.lists(st.text(max_size=5), min_size=1, max_size=3), max_size=4))
def test_digest_depends_on_content_only(values: list[list[str]]) -> None:
    rows = [(i + 1, v) for i, v in enumerate(values)]
    renumbered = [(i + 10, v) for i, v in enumerate(values)]
    assert content_digest("p", "Kern", COLS, rows) == content_digest("p", "Kern", COLS, renumbered)
    assert content_digest("p", "Kern", COLS, rows) != content_digest("q", "Kern", COLS, rows)
