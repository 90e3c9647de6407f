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


def test_review_resolve_refuses_reviewer_and_offers_no_empty_reason(
        no_stack: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--reviewer was taken and ignored (the token's holder resolves); the usage offered an
    empty reason: "--invalid {,ADDRESS_MISMATCH,...}"."""
    code, text = run_cli(["review", "resolve", "s-1", "--voter", "V1", "--reviewer", "bob"],
                         capsys)
    assert code == 2 and text.startswith("error: review resolve takes no --reviewer: the "
                                         "reviewer is the holder of the token"), text
    code, text = run_cli(["review", "resolve", "s-1", "--invalid", ""], capsys)
    assert code == 2 and "invalid choice: ''" in text, text
    from sigverify_cli import main as cli_main
    with pytest.raises(SystemExit):
        cli_main.parser().parse_args(["review", "resolve", "-h"])
    usage = capsys.readouterr().out
    assert "{ADDRESS_MISMATCH," in usage and "{," not in usage and "--reviewer" not in usage


def test_batch_show_rejections_lists_them_without_saying_more_follow(
        no_stack: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """It printed "... and 1 more rejected rows: sigverify batch show ... --rejections" and
    then listed that only row."""
    from collections.abc import AsyncIterator
    from typing import Any

    from sigverify.intake.v1 import intake_pb2
    from sigverify_cli import client

    row = intake_pb2.RowError(line=3, record=2, field="street", reason="missing")
    receipt = intake_pb2.BatchReceipt(batch_id="b-1", county="Kern", rows_received=2,
                                      signatures_accepted=1, rows_rejected=1, rejected=[row])

    async def get_batch(*args: Any, **kwargs: Any) -> intake_pb2.BatchReceipt:
        return receipt

    async def all_rejections(*args: Any) -> AsyncIterator[intake_pb2.RowError]:
        yield row

    monkeypatch.setattr(client, "get_batch", get_batch)
    monkeypatch.setattr(client, "all_rejections", all_rejections)
    code, text = run_cli(["batch", "show", "b-1", "--rejections"], capsys)
    assert code == 0, text
    assert text.count("rejected line 3 (record 2): street: missing") == 1, text
    assert "more rejected rows" not in text, text
    code, text = run_cli(["batch", "show", "b-1"], capsys)  # without: the first ones shown
    assert "rejected line 3" in text and "more rejected rows" not in text, text


def test_a_roll_load_cut_off_by_matching_names_the_version_and_what_to_run(
        no_stack: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """It said only "UNAVAILABLE: Stream removed (Socket closed)". A stand-in matching names
    version 7 as loading, then its stream ends in UNAVAILABLE, as when the process dies."""
    from collections.abc import Iterator
    from concurrent import futures
    from typing import Any

    import grpc

    from sigverify.matching.v1 import matching_pb2, matching_pb2_grpc
    from tests.unit.test_cli_input import ROLL

    class Dying(matching_pb2_grpc.MatchingServiceServicer):
        def ListRolls(self, request: Any, context: Any) -> matching_pb2.ListRollsResponse:
            return matching_pb2.ListRollsResponse()

        def LoadRoll(self, requests: Iterator[Any], context: grpc.ServicerContext
                     ) -> Iterator[matching_pb2.RollProgress]:
            next(requests)
            yield matching_pb2.RollProgress(version=7, state=matching_pb2.ROLL_STATE_LOADING)
            context.abort(grpc.StatusCode.UNAVAILABLE, "Stream removed")

    server = grpc.server(futures.ThreadPoolExecutor(2))
    matching_pb2_grpc.add_MatchingServiceServicer_to_server(Dying(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setenv("MATCHING_ADDR", f"127.0.0.1:{port}")
        path = write(no_stack, "roll.csv", ROLL.encode())
        code, text = run_cli(["roll", "load", str(path)], capsys)
    finally:
        server.stop(None)
    assert code == 5, text
    said = " ".join(text.split())
    assert said.startswith(f"error: matching at 127.0.0.1:{port} went away during the load of "
                           "roll version 7 (last seen loading)"), said
    assert ("'sigverify roll list'" in said and "'sigverify roll activate 7'" in said
            and "load the file again" in said and "Stream removed" not in said), said
