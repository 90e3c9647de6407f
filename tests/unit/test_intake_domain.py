from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigverify_common.errors import InvalidArgument
from sigverify_common.vocab import CALIFORNIA_COUNTIES, Counties, Source
from sigverify_intake.domain import (
    FIELD_LIMITS,
    KNOWN_COLUMNS,
    MAX_COLUMNS,
    MAX_LINE,
    BatchValidator,
    ContentDigest,
    LineSet,
    RowError,
    Signature,
    check_columns,
    check_text,
    content_digest,
    known_county,
    parse_date,
    validate,
)

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
    cols = ["line", "name", "street", "source"]
    v = validate(cols, [(1, ["1", "Robert J. Smith Jr.", "1 Main St", "online"])])
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


# -- hostile and messy input (issue 8) ----------------------------------------------------------

@pytest.mark.parametrize("column, hint", [
    ("sorce", "source"), ("signed_date", "signed_on"), ("circulatorid", "circulator_id"),
    ("favourite_colour", None),
])
def test_an_unknown_column_refuses_the_batch_naming_it(column: str, hint: str | None) -> None:
    with pytest.raises(InvalidArgument, match=f"unknown column '{column}'") as e:
        check_columns([*COLS, column])
    if hint:
        assert f"did you mean {hint!r}" in str(e.value)


def test_an_unnamed_or_excess_column_refuses_the_batch() -> None:
    with pytest.raises(InvalidArgument, match="column 11 of the header has no name"):
        check_columns([*COLS, ""])
    with pytest.raises(InvalidArgument, match="at most 32"):
        check_columns(["line"] * (MAX_COLUMNS + 1))
    assert check_columns(["\ufeffLine", " STREET ", "Name"]) == ["line", "street", "name"]


@pytest.mark.parametrize("line, reason", [
    ("\u00b2", "not a positive whole number"),            # isdigit() but not a number int() reads
    ("\u0663", "not a positive whole number"),            # Arabic-Indic three
    ("9" * 19 + "9", "above the highest line number"),     # over 2**63
    (str(MAX_LINE + 1), "above the highest line number"),
    ("0", "not a positive whole number"),
    ("+5", "not a positive whole number"),
    ("-5", "not a positive whole number"),
    ("1e3", "not a positive whole number"),
    ("9" * 21, "characters; at most 20"),
])
def test_an_unusable_line_is_a_row_rejection(line: str, reason: str) -> None:
    v = validate(COLS, [(1, row("1")), (2, row(line)), (3, row("3"))])
    assert [s.line for s in v.signatures] == [1, 3]
    (e,) = v.rejected
    assert (e.record, e.line, e.field) == (2, 0, "line")
    assert reason in e.reason


def test_line_numbers_read_as_written() -> None:
    v = validate(COLS, [(1, row(" 7 ")), (2, row("007")), (3, row(str(MAX_LINE)))])
    assert [s.line for s in v.signatures] == [7, MAX_LINE]
    assert [(e.record, e.line, e.field) for e in v.rejected] == [(2, 7, "line")]
    assert "repeated" in v.rejected[0].reason


@pytest.mark.parametrize("at", range(len(COLS)))
def test_a_nul_in_any_field_is_a_row_rejection_naming_the_field(at: int) -> None:
    values = row("2")
    values[at] = values[at][:1] + "\x00" + values[at][1:]
    v = validate(COLS, [(1, row("1")), (2, values)])
    assert [s.line for s in v.signatures] == [1]
    (e,) = v.rejected
    assert (e.record, e.field) == (2, COLS[at])
    assert "NUL" in e.reason
    assert e.line == (0 if COLS[at] == "line" else 2)


@pytest.mark.parametrize("column", [c for c in COLS if c != "line"])
def test_a_field_over_its_limit_is_a_row_rejection(column: str) -> None:
    limit = FIELD_LIMITS[column]
    at = COLS.index(column)
    ok, over = row("1"), row("2")
    ok[at], over[at] = "x" * limit if column not in ("signed_on",) else "2017-05-02", "x" * (limit + 1)
    v = validate(COLS, [(1, ok), (2, over), (3, row("3"))])
    assert (v.rejected[-1].record, v.rejected[-1].field, v.rejected[-1].line) == (2, column, 2)
    assert f"{limit + 1:,} characters; at most {limit:,}" in v.rejected[-1].reason
    assert 3 in [s.line for s in v.signatures]


def test_a_two_mebibyte_street_is_rejected_without_repeating_it() -> None:
    values = row("1", street="x" * (2 << 20))
    (e,) = validate(COLS, [(1, values)]).rejected
    assert (e.record, e.line, e.field) == (1, 1, "street")
    assert len(e.reason) < 100


def test_a_ragged_row_is_rejected_whatever_its_width() -> None:
    v = validate(COLS, [(1, ["5"]), (2, [*row("6"), *(["x"] * 100_000)]), (3, [])])
    assert [(e.record, e.line, e.field) for e in v.rejected] == [
        (1, 5, "(row)"), (2, 6, "(row)"), (3, 0, "(row)")]
    assert "found 100,010" in v.rejected[1].reason


@pytest.mark.parametrize("text", ["20170502", "2017-W20-2", "2017-5-2", "2017-02-30",
                                  "\uff12\uff10\uff11\uff17-05-02", "2017-05-02T00:00",
                                  "02/05/2017", "2017-13-01"])
def test_dates_must_be_yyyy_mm_dd_exactly(text: str) -> None:
    with pytest.raises(ValueError):
        parse_date(text)
    cols = [*COLS, "birth_date"]
    v = validate(cols, [(1, [*row("1", signed=text), ""]), (2, [*row("2"), text])])
    assert [(e.record, e.field) for e in v.rejected] == [(1, "signed_on"), (2, "birth_date")]
    assert all("YYYY-MM-DD" in e.reason for e in v.rejected)


def test_signed_on_is_required_in_every_row_when_the_column_is_there() -> None:
    v = validate(COLS, [(1, row("1", signed="")), (2, row("2", signed="  "))])
    assert [(e.record, e.line, e.field) for e in v.rejected] == [(1, 1, "signed_on"),
                                                                 (2, 2, "signed_on")]
    assert all("missing" in e.reason for e in v.rejected)
    cols = ["line", "first_name", "last_name", "street"]
    (s,) = validate(cols, [(1, ["1", "Ann", "Lee", "1 Main St"])]).signatures
    assert s.signed_on is None


def test_unreadable_rows_from_the_client_are_rejected_with_their_reason() -> None:
    v = BatchValidator(COLS)
    e = v.check(4, [], "line 5: field larger than field limit (131072)")
    assert isinstance(e, RowError) and (e.record, e.line, e.field) == (4, 0, "(row)")
    assert "field larger than field limit" in e.reason
    e = v.check(5, [], "x" * 10_000)
    assert isinstance(e, RowError) and len(e.reason) < 300
    e = v.check(6, [], "a\x00b")  # stored as text: no NUL
    assert isinstance(e, RowError) and "\x00" not in e.reason and "a\\x00b" in e.reason
    assert (v.rows, v.accepted, v.rejected) == (3, 0, 3)


def test_the_line_set_keeps_a_bit_per_line_up_to_the_maximum() -> None:
    lines = LineSet()
    assert lines.add(MAX_LINE) and not lines.add(MAX_LINE)
    assert lines.add(1) and lines.add(8) and lines.add(9) and not lines.add(8)
    assert lines.nbytes <= MAX_LINE // 8 + 1


JUNK = st.one_of(
    st.text(max_size=12), st.sampled_from(["", " ", "\x00", "\u00b2", "2017-02-30", "20170502",
                                           "2017-05-02", "1", "2", "online", "fax", "9" * 25]),
    st.integers().map(str), st.text(min_size=190, max_size=420),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(sorted(KNOWN_COLUMNS)), min_size=1, max_size=len(KNOWN_COLUMNS),
                unique=True),
       st.lists(st.tuples(st.integers(1, 2**62), st.lists(JUNK, max_size=16)), max_size=30))
def test_any_rows_are_each_accepted_or_rejected_with_a_reason(
        columns: list[str], rows: list[tuple[int, list[str]]]) -> None:
    cols = ["line", "street", "name", *(c for c in columns if c not in ("line", "street", "name"))]
    v = BatchValidator(cols)
    for record, values in rows:
        out = v.check(record, values)
        if isinstance(out, RowError):
            assert out.record == record and out.reason
            assert out.field in (*cols, "(row)")
            assert 0 <= out.line <= MAX_LINE
        else:
            assert 1 <= out.line <= MAX_LINE
            assert len(values) == len(cols) and "\x00" not in "".join(values)
    assert v.rows == len(rows) == v.accepted + v.rejected


def _old_digest(petition: str, county: str, columns: Sequence[str],
                rows: Sequence[Sequence[str]]) -> str:
    h = hashlib.sha256()
    for part in (petition, county.strip().upper(), *columns):
        h.update(part.encode())
        h.update(b"\x1f")
    for values in rows:
        h.update(b"\x1e")
        for value in values:
            h.update(value.encode())
            h.update(b"\x1f")
    return h.hexdigest()


@given(st.lists(st.lists(st.text(max_size=5), max_size=3), max_size=4))
def test_the_streamed_digest_is_the_digest_of_earlier_batches(values: list[list[str]]) -> None:
    d = ContentDigest("p", "Kern", COLS)
    for v in values:
        d.add(v)
    assert d.hexdigest() == _old_digest("p", "Kern", COLS, values)
    assert d.hexdigest() != content_digest("p", "Alameda", COLS, enumerate(values))


def test_counties_are_californias_58_by_default_in_one_spelling() -> None:
    counties = Counties()
    assert len(counties) == 58 == len(CALIFORNIA_COUNTIES)
    assert known_county(counties, "  los   ANGELES ") == "Los Angeles"
    assert known_county(counties, "san luis obispo") == "San Luis Obispo"
    for name, hint in (("Narnia", None), ("Kern County", "Kern"), ("Alamdea", "Alameda")):
        with pytest.raises(InvalidArgument, match=f"unknown county '{name}'") as e:
            known_county(counties, name, "header.county")
        assert ("did you mean" in str(e.value)) == (hint is not None)
        assert "header.county" in str(e.value)
    with pytest.raises(InvalidArgument, match="required"):
        known_county(counties, "  ")
    assert known_county(Counties(["Fulton", "DeKalb"]), "dekalb") == "Dekalb"


def test_request_texts_are_bounded_and_nul_free() -> None:
    assert check_text("  key ", "k", 10) == "key"
    with pytest.raises(InvalidArgument, match="at most 10"):
        check_text("x" * 11, "k", 10)
    with pytest.raises(InvalidArgument, match="NUL"):
        check_text("a\x00b", "k", 10)


def test_a_row_that_swallowed_lines_in_an_open_quote_names_the_column_and_the_lines() -> None:
    # What a client reading with the plain csv module sends for the by-hand trial's file
    # (line,name,street / 1,"unterminated,1 X ST / 2,A B,2 X ST): before, the rejection was
    # "(row): expected 3 fields, found 2", not a word of the line the quote took.
    v = BatchValidator(["line", "name", "street"])
    e = v.check(1, ["1", "unterminated,1 X ST\n2,A B,2 X ST\n"])
    assert isinstance(e, RowError) and (e.line, e.field) == (1, "name")
    assert e.reason.startswith("expected 3 fields, found 2: 'name' runs over 2 lines of the "
                               "file (a quote opened there closed lines later or never")
    # The quote closed two lines later: 3 fields, but the rows inside are not a name.
    e = v.check(2, ["2", "A B,1 X ST\n3,C D,3 X ST\n4,E F", "4 X ST"])
    assert isinstance(e, RowError) and (e.line, e.field) == (2, "name")
    assert e.reason.startswith("runs over 3 lines, 1 of which read as rows of the file")
    # Too long to be a name: the limit is named, and why it was reached.
    e = v.check(3, ["5", "x\n" * 300, "5 X ST"])
    assert isinstance(e, RowError) and e.field == "name"
    assert e.reason.startswith("600 characters; at most 400: 'name' runs over 300 lines")
    # A line break in a cell (an address's second line) is a signature.
    s = v.check(4, ["6", "A B", "6 X ST\nAPT 4, BLDG 2"])
    assert isinstance(s, Signature) and s.street == "6 X ST\nAPT 4, BLDG 2"
    assert (v.rows, v.rejected, v.accepted) == (4, 3, 1)
