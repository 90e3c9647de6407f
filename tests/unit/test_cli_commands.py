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


@pytest.mark.parametrize("argv, service", [
    (["check", "--petition", "p"], "tally"),
    (["wait", "--petition", "p", "--timeout", "5"], "tally"),
    (["tally", "--petition", "p"], "tally"),
    (["petition", "show", "--petition", "p"], "intake"),
    (["review", "list", "--petition", "p"], "matching"),
])
def test_a_service_that_does_not_answer_is_exit_5_naming_it_and_its_address(
        argv: list[str], service: str, no_stack: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """It was exit 1, as a violated invariant or a refused call is, with gRPC's raw text
    ("UNAVAILABLE: failed to connect to all addresses; ipv4:127.0.0.1:60895")."""
    from sigverify_cli.stack import free_port

    addr = f"127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv(f"{service.upper()}_ADDR", addr)
    code, text = run_cli(argv, capsys)
    assert code == 5, text
    assert text.startswith(f"error: {service} at {addr} is unreachable"), text
    assert "sigverify stack status" in text and "failed to connect" not in text, text
    assert text.count("\n") == 1, text
