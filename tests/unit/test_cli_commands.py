"""Findings of a hostile trial of the CLI's commands, each one line and a truthful exit status:
a --key given with several files, a service that does not answer, review resolve's options,
batch show --rejections' count, a roll load cut off by matching's end."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_cli_input import HEADER, ROW, no_stack, run_cli, write

__all__ = ["no_stack"]  # the fixture, used by name


def test_submit_refuses_one_key_for_several_files(no_stack: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The key was sent with the first file only, the second went unkeyed without a word."""
    a = write(no_stack, "a.csv", (HEADER + ROW).encode())
    b = write(no_stack, "b.csv", (HEADER + ROW).encode())
    code, text = run_cli(["submit", str(a), str(b), "--petition", "p", "--county", "Kern",
                          "--key", "KK"], capsys)
    assert code == 2, text
    assert text.startswith("error: --key names one batch") and text.count("\n") == 1, text
