"""Reading a voter roll file: normalised records, and every unreadable row named by line and field."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from sigverify_common.config import counties_var
from sigverify_common.errors import ConfigError, InvalidArgument
from sigverify_common.vocab import CALIFORNIA_COUNTIES, Counties
from sigverify_intake.config import Config as IntakeConfig
from sigverify_matching.config import Config as MatchingConfig
from sigverify_matching.roll import (
    CALIFORNIA,
    DEFAULT_MAX_REJECTED,
    ROLL_COLUMNS,
    ChunkStream,
    MaxRejected,
    Rejections,
    RollLoad,
    read_roll,
    read_roll_text,
    refusal,
    text_of,
    why_stopped,
)

HEADER = ",".join(ROLL_COLUMNS)


def roll(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    p = tmp_path / "roll.csv"
    p.write_text("\n".join((header, *rows)) + "\n", encoding="utf-8")
    return p


def row(voter_id: str = "V1", status: str = "active", birth: str = "1980-02-03",
        registered: str = "2010-01-01", county: str = "los  angeles") -> str:
    return f"{voter_id},Ana,M,Lopez,,{birth},1 Main St,,Fresno,93701,{county},{status},{registered}"


def test_good_rows_are_normalised(tmp_path: Path) -> None:
    errors: list[tuple[int, str, str]] = []
    recs = list(read_roll(roll(tmp_path, row("V1"), row("V2", "Inactive", "", "2010-01-01")), errors))
    assert errors == []
    assert recs[0] == ("V1", "Ana", "M", "Lopez", "", date(1980, 2, 3), "1 Main St", "", "Fresno",
                       "93701", "Los Angeles", "ACTIVE", date(2010, 1, 1))
    # The second row reuses cached dates and county, and its empty birth date is None.
    assert recs[1][5] is None and recs[1][12] == date(2010, 1, 1) and recs[1][10] == "Los Angeles"
    assert recs[1][11] == "INACTIVE"


def test_each_unreadable_row_is_named_and_skipped(tmp_path: Path) -> None:
    errors: list[tuple[int, str, str]] = []
    path = roll(tmp_path,
                row("V1"),                                   # line 2: good
                "V2,too,few",                                # 3
                row(""),                                     # 4: no voter id
                row("V1"),                                   # 5: repeated
                row("V5", "moved"),                          # 6: status
                row("V6", birth="1980-02-30"),               # 7: impossible date
                row("V7", registered="yesterday"),           # 8
                row("V8", birth="1980-02-03"),               # 9: good (cached date)
                row("V9", birth="1980-02-30"))               # 10: the bad date again
    recs = list(read_roll(path, errors))
    assert [r[0] for r in recs] == ["V1", "V8"]
    assert errors == [
        (3, "(row)", f"expected {len(ROLL_COLUMNS)} fields, found 3"),
        (4, "voter_id", "missing"),
        (5, "voter_id", "repeated"),
        (6, "status", "must be ACTIVE, INACTIVE or CANCELLED"),
        (7, "birth_date", "not a valid ISO date (YYYY-MM-DD)"),
        (8, "registered_on", "not a valid ISO date (YYYY-MM-DD)"),
        (10, "birth_date", "not a valid ISO date (YYYY-MM-DD)"),
    ]


def test_a_header_without_the_roll_columns_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="lacks column"):
        list(read_roll(roll(tmp_path, "1,A", header="voter_id,first_name"), []))


def _streamed(data: bytes, size: int) -> list[bytes | None]:
    return [*(data[i:i + size] for i in range(0, len(data), size)), None]


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 20])
def test_an_uploaded_file_reads_as_the_file_does_however_it_is_split(
        tmp_path: Path, size: int) -> None:
    """The RPC hands the loader the file's bytes in chunks cut anywhere (inside a UTF-8
    character, a quoted field with a line break, a CRLF): lines and values are the same."""
    rows = [row("V1"), row("V2", birth="02/03/1980"),
            'V3,"Zoë",,"Ng\nLi",,1980-02-03,1 Main St,,Fresno,93701,Fresno,ACTIVE,2010-01-01',
            "", row("V4")]
    path = tmp_path / "roll.csv"
    path.write_bytes(("\ufeff" + "\r\n".join((HEADER, *rows)) + "\r\n").encode())
    from_file: list[tuple[int, str, str]] = []
    expected = list(read_roll(path, from_file))
    chunks = _streamed(path.read_bytes(), size)
    streamed: list[tuple[int, str, str]] = []
    with text_of(ChunkStream(lambda: chunks.pop(0))) as fh:
        got = list(read_roll_text(fh, "roll.csv", streamed))
    assert got == expected and streamed == from_file
    assert [r[0] for r in got] == ["V1", "V3", "V4"] and got[1][1:4] == ("Zoë", "", "Ng\nLi")
    # Line numbers count the quoted line break; the blank line is no row at all.
    assert streamed == [(3, "birth_date", "not a valid ISO date (YYYY-MM-DD)")]


def test_a_row_that_is_not_utf8_is_rejected_by_its_line_and_field(tmp_path: Path) -> None:
    """On the wire (the LoadRoll stream is UTF-8) such a row is rejected by line and field;
    a whole file in cp1252 (one such byte and no UTF-8) is read as cp1252 from disk, and the
    CLI re-encodes it before sending it (see test_cli_input)."""
    data = (HEADER + "\n" + row("V1") + "\n").encode() + row("V2").replace(
        "Lopez", "L\x00pez").encode().replace(b"\x00", b"\xe9") + ("\n" + row("V3")).encode()
    (tmp_path / "roll.csv").write_bytes(data)
    from_file: list[tuple[int, str, str]] = []
    got = list(read_roll(tmp_path / "roll.csv", from_file))
    assert [r[0] for r in got] == ["V1", "V2", "V3"] and got[1][3] == "Lépez" and not from_file
    chunks = _streamed(data, 5)
    streamed: list[tuple[int, str, str]] = []
    with text_of(ChunkStream(lambda: chunks.pop(0))) as fh:
        assert [r[0] for r in read_roll_text(fh, "roll.csv", streamed)] == ["V1", "V3"]
    assert streamed == [(3, "last_name", "not UTF-8 text")]


def test_an_empty_file_is_refused() -> None:
    chunks: list[bytes | None] = [None]
    with pytest.raises(InvalidArgument, match="empty"), \
            text_of(ChunkStream(lambda: chunks.pop(0))) as fh:
        list(read_roll_text(fh, "roll.csv", []))


def test_rejections_are_all_counted_and_the_first_kept() -> None:
    r = Rejections(keep=2)
    for i in range(5):
        r.append((i, "f", "bad"))
    assert r.count == 5 and r.first == [(0, "f", "bad"), (1, "f", "bad")]


@pytest.mark.parametrize(("text", "rejected", "total", "allowed"), [
    ("100", 100, 10_000, True), ("100", 101, 10_000, False), ("0", 1, 10, False),
    ("0", 0, 10, True), ("1%", 100, 10_000, True), ("1%", 101, 10_000, False),
    ("0.5 %", 5, 1000, True), ("0.5%", 6, 1000, False), ("100%", 10, 10, True),
    ("", 1, 100, True), ("", 2, 100, False),
])
def test_max_rejected_is_a_count_or_a_percentage(text: str, rejected: int, total: int,
                                                  allowed: bool) -> None:
    assert MaxRejected.parse(text).allows(rejected, total) is allowed


@pytest.mark.parametrize("text", ["-1", "1.5", "abc", "101%", "x%", "nan%"])
def test_a_wrong_max_rejected_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="max_rejected"):
        MaxRejected.parse(text)


def test_a_refusal_names_the_count_the_limit_and_the_first_rejections() -> None:
    errors = [(i + 2, "birth_date", "not a valid ISO date (YYYY-MM-DD)") for i in range(30)]
    why = refusal(RollLoad(rows=0, rejected=30, errors=errors, source="r.csv"),
                  DEFAULT_MAX_REJECTED)
    assert why is not None
    assert "30 of 30 rows rejected, more than the 1% allowed" in why
    assert "line 2: birth_date: not a valid ISO date" in why and "line 11:" in why
    assert "line 12:" not in why and "the first 10 of 30" in why
    assert "no voters" in str(refusal(RollLoad(source="r.csv"), DEFAULT_MAX_REJECTED))
    assert refusal(RollLoad(rows=99, rejected=1, errors=errors[:1]), DEFAULT_MAX_REJECTED) is None
    assert "more than the 0 rows allowed" in str(
        refusal(RollLoad(rows=99, rejected=1, errors=errors[:1]), MaxRejected.parse("0")))


# -- the header: each roll column once, nothing else -----------------------------------------------

@pytest.mark.parametrize("header, problem", [
    (HEADER + ",last_name", "roll.csv: column 'last_name' appears twice in the roll header"),
    (HEADER + ",extra", "roll.csv: unknown column 'extra' in the roll header; a roll has "
                        "exactly these columns: voter_id, first_name"),
    (HEADER + ",countyy", "unknown column 'countyy' in the roll header (did you mean 'county'?)"),
    (HEADER + ",", "roll.csv: column 14 of the roll header has no name"),
])
def test_a_repeated_unknown_or_unnamed_column_is_refused_by_name(
        tmp_path: Path, header: str, problem: str) -> None:
    values = row("V1") + ("," if not header.endswith("name") else ",Lopez")
    with pytest.raises(InvalidArgument) as e:
        list(read_roll(roll(tmp_path, values, header=header), []))
    assert problem in str(e.value)


@pytest.mark.parametrize("text, problem", [
    ("", "the file has no header row (it is empty)"),
    ("\n\n\r\n\n", "the file has no header row (it is empty but for blank lines)"),
    (row("V1") + "\n" + row("V2") + "\n", "the file has no header row: line 1 names none of "
                                          "the roll's columns (voter_id,"),
])
def test_a_file_without_a_header_says_so(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "roll.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidArgument) as e:
        list(read_roll(path, []))
    assert problem in str(e.value) and "lacks column" not in str(e.value)


def test_blank_lines_before_the_header_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "roll.csv"
    path.write_text("\n\n" + HEADER + "\n" + row("V1") + "\n" + row("V2", "moved") + "\n",
                    encoding="utf-8")
    errors: list[tuple[int, str, str]] = []
    assert [r[0] for r in read_roll(path, errors)] == ["V1"]
    assert errors == [(5, "status", "must be ACTIVE, INACTIVE or CANCELLED")]


# -- rows a roll cannot hold --------------------------------------------------------------------

def test_an_unknown_county_a_future_birth_and_a_row_without_a_name_are_rejected(
        tmp_path: Path) -> None:
    path = roll(tmp_path,
                row("V1"),                                        # 2: good
                row("V2", county="Atlantis"),                     # 3
                row("V3", county="Kern County"),                  # 4: a hint
                row("V4", county=""),                             # 5
                row("V5", birth="2017-07-26"),                    # 6: after the load's date
                row("V6", birth="2017-07-25"),                    # 7: good (born that day)
                "V12,,,,,,,,,,Fresno,ACTIVE,2000-01-01",          # 8: no name, no address
                "V13,,,,,,9 Elm St,,Fresno,93701,Fresno,ACTIVE,2000-01-01",  # 9: no name
                "V14,,,Cher,,,,,,,Fresno,ACTIVE,2000-01-01",      # 10: a name only: good
                row("V2"))                                        # 11: V2's id is free
    errors = Rejections()
    with path.open(newline="", encoding="utf-8") as fh:
        got = list(read_roll_text(fh, "roll.csv", errors, today=date(2017, 7, 25)))
    assert [r[0] for r in got] == ["V1", "V6", "V14", "V2"]
    no_name = "missing: the row has no name (first_name, middle_name and last_name are all empty)"
    assert errors.first == [
        (3, "county", "unknown county 'Atlantis', not one of the 58 counties"),
        (4, "county", "unknown county 'Kern County', not one of the 58 counties (did you mean "
                      "'Kern'?)"),
        (5, "county", "missing"),
        (6, "birth_date", "in the future (after the load's date, 2017-07-25)"),
        (8, "last_name", no_name),
        (9, "last_name", no_name),
    ]
    # They count against max_rejected like any other rejected row.
    load = RollLoad(rows=len(got), rejected=errors.count, errors=errors.first, source="roll.csv")
    why = refusal(load, MaxRejected.parse("5"))
    assert why is not None and "6 of 10 rows rejected, more than the 5 rows allowed" in why
    assert "line 3: county: unknown county 'Atlantis'" in why
    assert refusal(load, MaxRejected.parse("6")) is None


SERVICE_ENV = {"DATABASE_URL": "postgresql://x/y", "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
               "GRPC_PORT": "50051", "METRICS_PORT": "9100"}


def test_matching_and_intake_read_one_county_list() -> None:
    """One reader of COUNTIES (sigverify_common.config.counties_var) for both services."""
    assert counties_var({}) is CALIFORNIA_COUNTIES
    assert counties_var({"COUNTIES": " "}) is CALIFORNIA_COUNTIES
    assert counties_var({"COUNTIES": "clark,  Washoe ,CLARK"}) == ("Clark", "Washoe")
    for env in ({}, {"COUNTIES": "clark, Washoe"}):
        assert MatchingConfig.from_env({**SERVICE_ENV, **env}).counties == \
            IntakeConfig.from_env({**SERVICE_ENV, **env}).counties == counties_var(env)
    for config in (MatchingConfig, IntakeConfig):
        with pytest.raises(ConfigError, match="COUNTIES has an empty name"):
            config.from_env({**SERVICE_ENV, "COUNTIES": "Kern,,Inyo"})


def test_the_counties_a_roll_may_name_are_intakes(tmp_path: Path) -> None:
    assert len(CALIFORNIA) == 58
    counties = Counties(counties_var({"COUNTIES": "Clark, washoe"}))
    errors: list[tuple[int, str, str]] = []
    path = roll(tmp_path, row("V1", county="WASHOE"), row("V2", county="Fresno"))
    with path.open(newline="", encoding="utf-8") as fh:
        got = list(read_roll_text(fh, "roll.csv", errors, counties=counties))
    assert [(r[0], r[10]) for r in got] == [("V1", "Washoe")]
    assert errors == [(3, "county", "unknown county 'Fresno', not one of the 2 counties")]


def test_why_a_load_stopped_is_said_in_words() -> None:
    """roll list shows it: never an exception's class or text."""
    import asyncio

    import asyncpg

    assert "the client stopped the upload" in why_stopped(asyncio.CancelledError())
    for exc in (RuntimeError("secret detail"), asyncpg.PostgresError("relation x"),
                OSError("socket")):
        note = why_stopped(exc)
        assert note.startswith("the load stopped: ")
        assert type(exc).__name__ not in note and "secret" not in note and "relation" not in note
    assert why_stopped(InvalidArgument("roll.csv: column 'x' appears twice")) == (
        "roll.csv: column 'x' appears twice")


def test_a_quote_closed_lines_later_rejects_every_row_it_took(tmp_path: Path) -> None:
    """A quote opened in a row's street and closed three lines later: the csv module reads
    lines 3-6 as one record and, before, the three voters in it were lost under one
    rejection ("expected 13 fields, found ..."): the rejections said 1 where 4 rows went."""
    errors: list[tuple[int, str, str]] = []
    broken = row("V2").replace("1 Main St", '"1 Main St')
    closing = row("V5").replace("1 Main St", '1 Main St"')
    path = roll(tmp_path, row("V1"), broken, row("V3"), row("V4"), closing, row("V6"))
    recs = list(read_roll(path, errors))
    assert [r[0] for r in recs] == ["V1", "V6"]
    assert [e[0] for e in errors] == [3, 4, 5, 6]
    _line, column, why = errors[0]
    assert column == "(row)" and why.startswith("unreadable: lines 3-6: a quote opening column "
                                                "'street' on line 3 closes only on line 6")
    assert all(e[2] == "not read: taken into the record of line 3, which is unreadable"
               for e in errors[1:])


def test_a_quote_never_closed_rejects_every_line_to_the_end(tmp_path: Path) -> None:
    broken = row("V2").replace("Fresno", '"Fresno')
    path = roll(tmp_path, row("V1"), broken, row("V3"), row("V4"))
    rejections = Rejections()
    recs = list(read_roll(path, rejections))
    assert [r[0] for r in recs] == ["V1"]
    assert rejections.count == 3 and [e[0] for e in rejections.first] == [3, 4, 5]
    assert "a quote opening column 'city' on line 3 is never closed" in rejections.first[0][2]
    # So the file is refused by the default threshold, not loaded without three voters.
    assert refusal(RollLoad(source="roll.csv", rows=1, rejected=3, errors=rejections.first),
                   DEFAULT_MAX_REJECTED) is not None


def test_a_quoted_line_break_in_a_field_is_one_row(tmp_path: Path) -> None:
    errors: list[tuple[int, str, str]] = []
    two_lines = row("V2").replace("1 Main St", '"1 Main St\nBuilding B"')
    recs = list(read_roll(roll(tmp_path, row("V1"), two_lines, row("V3")), errors))
    assert errors == [] and [r[0] for r in recs] == ["V1", "V2", "V3"]
    assert recs[1][6] == "1 Main St\nBuilding B"
