"""A roll's source name and the activation line, both pure.

Found by a hostile trial: a LoadRoll whose header source was "/" stored an empty source name
(blank in 'sigverify roll list'), and activating with no earlier version printed
"version - kept for 'sigverify roll rollback'"."""

from __future__ import annotations

import pytest

from sigverify_cli.main import activated_line
from sigverify_common.errors import InvalidArgument
from sigverify_matching.service import roll_source_name


@pytest.mark.parametrize("text, name", [
    ("", "roll.csv"), ("roll.csv", "roll.csv"), ("/data/in/roll 2024.csv", "roll 2024.csv"),
    ("a/ b.csv", "b.csv")])
def test_a_source_is_reduced_to_its_last_component(text: str, name: str) -> None:
    assert roll_source_name(text) == name


@pytest.mark.parametrize("text", ["/", "dir/", "/data/in/", "/ /", ".", "..", "x/..", "x/."])
def test_a_source_naming_no_file_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        roll_source_name(text)
    assert "header.source" in str(e.value) and repr(text) in str(e.value)


def test_the_activation_line_names_the_kept_version_or_says_there_is_none() -> None:
    assert activated_line(7, 12_000, 6) == (
        "roll version 7 active (12,000 voters); version 6 kept for 'sigverify roll rollback'")
    line = activated_line(1, 500, 0)
    assert line == "roll version 1 active (500 voters); no earlier version to roll back to"
    assert "kept for" not in line and " - " not in line
