"""Mistakes a user makes by hand get one clear line and a truthful exit status, through the
real CLI against the live stack: a batch whose quote never closes, a batch with rejected
rows, a review list for a petition or county that does not exist, a wait for a petition that
has received nothing."""

from __future__ import annotations

import re
import time
from pathlib import Path

import grpc
import pytest

from sigverify.review.v1 import review_pb2, review_pb2_grpc
from sigverify_cli import stack
from tests.integration import helpers as h
from tests.integration.test_model_cli import cli

pytestmark = pytest.mark.integration


async def test_a_quote_that_never_closes_is_rejected_naming_its_column_and_lines(
        live_stack: stack.StackState, tmp_path: Path) -> None:
    # The by-hand trial: the rejection was "(row): expected 3 fields, found 2", and line 2
    # of the batch (the file's line 3), swallowed by the quote, was never mentioned.
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    path = tmp_path / "b3.csv"
    path.write_text('line,name,street\n1,"unterminated,1 X ST\n2,A B,2 X ST\n')
    code, out, err = await cli(live_stack, "submit", str(path), "--petition", pid,
                               "--county", "Los Angeles")
    assert code == 4, err  # received, with a rejected row
    text = " ".join(out.split())  # as printed, but for where the console wrapped it
    assert re.search(r"1 rows?, 0 signatures accepted \(0 incomplete\), 1 rejected", text), out
    assert text.count(" rejected ") == 1, out
    # Intake's reason for what the CLI's plain csv reader sends, or, once the CLI reads with
    # sigverify_common.csvtext, the reader's own (naming the file's lines).
    assert any(reason in text for reason in (
        "rejected line 1 (record 1): name: expected 3 fields, found 2: 'name' runs over 2 "
        "lines of the file (a quote opened there closed lines later or never, so the lines "
        "after it went into this row)",
        "rejected record 1: (row): unreadable: lines 2-3: a quote opening column 'name' on "
        "line 2 is never closed: it runs to the end of the file and absorbed line 3 (1 "
        "line(s) not read as rows); close the quote and send the file again")), out


async def test_review_list_refuses_a_petition_or_county_that_does_not_exist(
        live_stack: stack.StackState) -> None:
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    code, out, err = await cli(live_stack, "review", "list", "--petition", pid + "-nope")
    assert (code, out) == (1, ""), (out, err)
    assert err.strip() == f"error: NOT_FOUND: no petition '{pid}-nope'"
    code, out, err = await cli(live_stack, "review", "list", "--petition", pid,
                               "--county", "Atlantis")
    assert (code, out) == (1, ""), (out, err)
    assert err.strip() == ("error: INVALID_ARGUMENT: county: unknown county 'Atlantis', not "
                           "one of the 58 configured counties")
    code, out, err = await cli(live_stack, "review", "list", "--petition", pid,
                               "--county", "Kern County")
    assert code == 1 and "(did you mean 'Kern'?)" in err, (out, err)
    # A limit the CLI would not send, from a client of its own: refused, not a database error.
    async with h.channel(live_stack, "matching") as ch:
        stub = review_pb2_grpc.ReviewServiceStub(ch)
        for limit in (-1, 10_001):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.ListPending(review_pb2.ListPendingRequest(petition_id=pid,
                                                                     limit=limit), timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
            assert "limit must be from 1 to 10,000" in (e.value.details() or "")
    # A county that is one, in any spelling, with nothing to review: an empty list.
    for county in ("kern", " LOS  ANGELES ", ""):
        code, out, err = await cli(live_stack, "review", "list", "--petition", pid,
                                   "--county", county)
        assert (code, err) == (0, ""), (county, err)
        assert out.startswith("0 signature(s) awaiting review"), out


async def test_wait_for_a_petition_that_has_received_nothing_returns_at_once(
        live_stack: stack.StackState) -> None:
    # The by-hand trial: the whole timeout was waited, then "timed out after 300s: 0 of 0
    # signatures still pending" (exit 2).
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    started = time.monotonic()
    code, out, err = await cli(live_stack, "wait", "--petition", pid, "--timeout", "8")
    assert time.monotonic() - started < 6, (code, out, err)
    assert code == 3, (code, out, err)
    assert err.strip() == (f"error: nothing to wait for: petition {pid} has received no "
                           "signature (0 rows rejected at intake); submit its batches first")


async def test_submit_exits_4_when_rows_were_rejected_and_0_when_none_were(
        live_stack: stack.StackState, tmp_path: Path) -> None:
    # The by-hand trial: a batch with rejected rows exited 0, as a clean one does, so a
    # clerk's script could not tell them apart.
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)

    async def submit(*paths: Path) -> tuple[int, str, str]:
        code, out, err = await cli(live_stack, "submit", *map(str, paths), "--petition", pid,
                                   "--county", "Kern")
        return code, " ".join(out.split()), err

    clean = tmp_path / "clean.csv"
    clean.write_text("line,name,street\n1,Ann Lee,1 Main St\n2,Bo Li,2 Main St\n")
    code, out, err = await submit(clean)
    assert (code, err) == (0, ""), (out, err)
    assert "2 rows, 2 signatures accepted (0 incomplete), 0 rejected" in out, out
    code, out, err = await submit(clean)  # a resubmission of a clean batch is still clean
    assert (code, err) == (0, "") and "resubmission" in out, (out, err)

    bad = tmp_path / "bad-line.csv"  # intake rejects the second row: its line is no number
    bad.write_text("line,name,street\n1,Cy Do,3 Main St\nx,Di Fa,4 Main St\n")
    code, out, err = await submit(bad)
    assert (code, err) == (4, ""), (out, err)
    assert "2 rows, 1 signature accepted (0 incomplete), 1 rejected" in out, out
    assert "rejected record 2: line:" in out, out
    code, out, err = await submit(bad)  # its first receipt again: the rejection stands
    assert code == 4 and "1 rejected (resubmission" in out, (out, err)

    other = tmp_path / "other.csv"  # a clean file and one with a rejection, sent together
    other.write_text("line,name,street\n1,Ed Go,5 Main St\n")
    unread = tmp_path / "unread.csv"  # the CLI cannot read its row (the quote never closes)
    unread.write_text('line,name,street\n1,"Fay,6 Main St\n')
    code, out, err = await submit(other, unread)
    assert code == 4, (out, err)
    assert "1 row, 1 signature accepted (0 incomplete), 0 rejected" in out, out
    assert "1 row, 0 signatures accepted (0 incomplete), 1 rejected" in out, out
    t = await h.tally(live_stack, pid)
    assert (t.total.received, t.rows_rejected) == (4, 2), t
