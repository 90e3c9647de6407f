"""Reading a voter roll file: normalised records, and every unreadable row named by line and field."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from sigverify_common.errors import InvalidArgument
from sigverify_matching.roll import ROLL_COLUMNS, read_roll

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
        (7, "birth_date", "not a valid ISO date"),
        (8, "registered_on", "not a valid ISO date"),
        (10, "birth_date", "not a valid ISO date"),
    ]


def test_a_header_without_the_roll_columns_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="lacks column"):
        list(read_roll(roll(tmp_path, "1,A", header="voter_id,first_name"), []))
