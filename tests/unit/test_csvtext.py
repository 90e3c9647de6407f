"""Reading a batch CSV's records with the lines of the file each took (sigverify_common.csvtext):
a quote that never closes, or closes lines later, is reported with every line it absorbed."""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigverify_common.csvtext import CsvRecords, Record, lines_spanned, looks_like_rows
from sigverify_common.errors import InvalidArgument

HEADER = "line,name,street\n"


def records(text: str) -> list[Record]:
    reader = CsvRecords(io.StringIO(text, newline=""), "b.csv")
    assert reader.header() == ["line", "name", "street"]
    return list(reader)


@pytest.mark.parametrize("end", ["\n", "\r\n", ""])
def test_an_unterminated_quote_is_reported_with_every_line_it_absorbed(end: str) -> None:
    # The by-hand trial: the csv module returned "1","unterminated,...2 X ST" as one row of
    # 2 fields and line 3 was never mentioned.
    text = HEADER.replace("\n", end or "\n") + f'1,"unterminated,1 X ST{end or chr(10)}2,A B,2 X ST{end}'
    [r] = records(text)
    assert (r.number, r.first_line, r.last_line, r.values) == (1, 2, 3, [])
    assert r.problem.startswith("lines 2-3: a quote opening column 'name' on line 2 is never "
                                "closed: it runs to the end of the file and absorbed line 3")


def test_a_quote_opened_on_the_last_line_and_never_closed() -> None:
    got = records(HEADER + "1,A B,1 X ST\n2,C D,\"2 X ST\n")
    assert [(r.number, r.first_line, r.last_line, r.values) for r in got] == [
        (1, 2, 2, ["1", "A B", "1 X ST"]), (2, 3, 3, [])]
    assert got[1].problem == ("line 3: a quote opening column 'street' on line 3 is never "
                              "closed (the line is the last of the file)")


def test_the_quote_is_placed_on_its_own_line_after_an_earlier_multiline_field() -> None:
    [r] = records(HEADER + '1,"A\nB","1 X ST\n2,C D,2 X ST\n3,E F,3 X ST\n')
    assert (r.first_line, r.last_line) == (2, 5)
    assert "a quote opening column 'street' on line 3 is never closed" in r.problem
    assert "absorbed lines 4-5 (2 line(s) not read as rows)" in r.problem


def test_a_quoted_line_break_in_a_cell_is_read() -> None:
    got = records(HEADER + '1,A B,"1 X ST\nAPT 4"\n2,C D,2 X ST\n')
    assert [(r.first_line, r.last_line, r.values, r.problem) for r in got] == [
        (2, 3, ["1", "A B", "1 X ST\nAPT 4"], ""), (4, 4, ["2", "C D", "2 X ST"], "")]


@pytest.mark.parametrize("row3", ['3,E F",3 X ST', '3",E F,3 X ST'])
def test_a_quote_closed_lines_later_names_the_lines_it_took(row3: str) -> None:
    # 3 fields (the rows inside read as rows of the file) or 4 (the count is off): either
    # way the record is refused naming lines 2-4, and line 5 is read again as a row.
    got = records(HEADER + f'1,"A B,1 X ST\n2,C D,2 X ST\n{row3}\n4,G H,4 X ST\n')
    assert [(r.number, r.first_line, r.last_line, r.values) for r in got] == [
        (1, 2, 4, []), (2, 5, 5, ["4", "G H", "4 X ST"])]
    assert got[0].problem.startswith("lines 2-4: a quote opening column 'name' on line 2 "
                                     "closes only on line 4, so lines 3-4 went into that field")


def test_a_field_over_the_csv_modules_limit_is_named() -> None:
    big = "x" * 200_000
    got = records(HEADER + f'1,A B,"{big}"\n2,C D,2 X ST\n')
    assert [(r.first_line, r.last_line, r.values) for r in got] == [
        (2, 2, []), (3, 3, ["2", "C D", "2 X ST"])]
    assert got[0].problem == "line 2: column 'street': field larger than field limit (131072)"


def test_an_open_quote_that_runs_past_the_limit_names_its_column_and_lines() -> None:
    text = HEADER + '1,"A B,1 X ST\n' + ("y" * 1000 + "\n") * 200 + "2,C D,2 X ST\n"
    got = records(text)
    assert got[0].problem.startswith("lines 2-133: field larger than field limit (131072): a "
                                     "quote opening column 'name' on line 2 had not closed by "
                                     "line 133")
    # The lines after it are read again, each reported (not silently lost).
    assert [r.first_line for r in got[1:]] == list(range(134, 204))
    assert got[-1].values == ["2", "C D", "2 X ST"]


@pytest.mark.parametrize("text, problem", [
    ("", "b.csv: the file has no header row (it is empty)"),
    ("\n\n", "b.csv: the file has no header row (it is empty but for blank lines)"),
    ('line,"name,street\n1,A,B\n', "b.csv: unreadable header: a quote opened on line 1 is "
                                   "never closed (it runs to the end of the file, line 2)"),
    ('line,"na\nme",street\n1,A,B\n', "b.csv: unreadable header: a quote opened on line 1 "
                                      "closes only on line 2"),
])
def test_a_header_that_cannot_be_read(text: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(problem)):
        CsvRecords(io.StringIO(text, newline=""), "b.csv").header()


def test_blank_lines_are_skipped_and_nul_is_left_for_the_validator() -> None:
    got = records(HEADER + "\n1,A\x00B,1 X ST\n\n2,C D,2 X ST\n")
    assert [(r.number, r.first_line, r.values) for r in got] == [
        (1, 3, ["1", "A\x00B", "1 X ST"]), (2, 5, ["2", "C D", "2 X ST"])]


def test_lines_spanned_and_rows_inside_a_value() -> None:
    assert [lines_spanned(v) for v in ("a", "a\nb", "a\r\nb\n", "a\rb\rc")] == [1, 2, 2, 3]
    assert looks_like_rows("1 X ST\nAPT 4, BLDG 2", 3) == 0
    assert looks_like_rows("A B,1 X ST\n2,C D,2 X ST\n3,E F", 3) == 1
    assert looks_like_rows("a\n,,", 2) == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet='a,"\n', max_size=12), max_size=12))
def test_every_line_of_any_file_is_in_one_record_or_blank(lines: list[str]) -> None:
    text = HEADER + "\n".join(lines)
    physical = text.splitlines()
    reader = CsvRecords(io.StringIO(text, newline=""), "b.csv")
    reader.header()
    covered: set[int] = set()
    last = 1
    for r in reader:
        assert last < r.first_line <= r.last_line <= len(physical)
        assert bool(r.values) != bool(r.problem)
        covered.update(range(r.first_line, r.last_line + 1))
        last = r.last_line
    for n in range(2, len(physical) + 1):
        assert n in covered or physical[n - 1] in ("", '""'), (n, physical)
