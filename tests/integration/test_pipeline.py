"""The pipeline end to end through real PostgreSQL, the real broker and all four services."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import grpc
import pytest

from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify_cli import stack
from sigverify_cli.synth import SynthOutput, compare
from tests.integration import helpers as h

pytestmark = pytest.mark.integration


def batch_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as fh:
        return sum(1 for _ in csv.DictReader(fh))


async def test_batches_flow_through_all_four_services(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid, required=400)
    expected = 0
    files: dict[str, str] = {}
    for path, county in synth_data.batches:
        receipt = await h.submit(live_stack, path, pid, county)
        assert not receipt.resubmission
        assert receipt.signatures_accepted == batch_rows(path)
        expected += receipt.signatures_accepted
        files[receipt.batch_id] = path.name
    t = await h.wait_verified(live_stack, pid, expected)
    assert t.total.received == expected == synth_data.spec.signatures
    assert t.total.valid + t.total.invalid + t.total.review == expected
    assert {g.key for g in t.by_county} == set(synth_data.spec.counties)
    assert sum(g.counts.valid for g in t.by_batch) == t.total.valid
    assert sum(g.counts.received for g in t.by_circulator) == expected

    # Every decision against the generator's truth: the matcher must be right nearly always.
    got: dict[tuple[str, int], tuple[str, str]] = {}
    async with h.channel(live_stack, "tally") as ch:
        from sigverify.tally.v1 import tally_pb2, tally_pb2_grpc
        from sigverify_common.convert import reason_from_pb, status_from_pb
        async for r in tally_pb2_grpc.TallyServiceStub(ch).ListResults(
                tally_pb2.ListResultsRequest(petition_id=pid), timeout=60):
            got[(files[r.batch_id], r.line)] = (status_from_pb(r.status).value,
                                                reason_from_pb(r.reason).value)
    acc = compare(synth_data.truth_csv, got)
    rates = acc.rates()
    assert acc.signatures == expected
    assert rates["agreement"] >= 0.93, acc.confusion
    assert rates["false_accept_rate"] <= 0.01, acc.confusion
    assert t.total.duplicates > 0


async def test_resubmitting_a_batch_counts_nothing_twice(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    path, county = synth_data.batches[0]
    first = await h.submit(live_stack, path, pid, county, key="kern-001")
    before = await h.wait_verified(live_stack, pid, first.signatures_accepted)
    again_same_key = await h.submit(live_stack, path, pid, county, key="kern-001")
    again_no_key = await h.submit(live_stack, path, pid, county)
    for again in (again_same_key, again_no_key):
        assert again.resubmission
        assert again.batch_id == first.batch_id
        assert again.signatures_accepted == first.signatures_accepted
    await asyncio.sleep(3)  # anything wrongly re-published would land in this time
    after = await h.tally(live_stack, pid)
    assert h.reason_counts(after) == h.reason_counts(before)
    assert after.total.received == before.total.received == first.signatures_accepted


BAD_BATCH = """line,first_name,middle_name,last_name,street,unit,city,zip,signed_on,circulator_id
1,{f1},,{l1},{s1},,,{z1},2017-05-02,C-1
,Ann,,Lee,1 Main St,,,93301,2017-05-02,C-1
2,Bob,,Ray,2 Main St,,,93301,2017-02-30,C-1
1,Cy,,Dee,3 Main St,,,93301,2017-05-02,C-1
3,Dan,,Eve,4 Main St,,,93301
4,,,,5 Main St,,,93301,2017-05-02,C-1
x7,Fay,,Gus,6 Main St,,,93301,2017-05-02,C-1
5,Hal,,Ivy,7 Main St,,,93301,2017-05-02,C-1,extra
6,Ida,,Jay,8 Main St,,,93301,2017-05-02,C-1
"""


async def test_bad_rows_are_named_and_the_rest_is_counted(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput, tmp_path: Path
) -> None:
    with synth_data.roll_csv.open(newline="", encoding="utf-8") as fh:
        voter = next(v for v in csv.DictReader(fh) if v["status"] == "ACTIVE")
    path = tmp_path / "bad.csv"
    path.write_text(BAD_BATCH.format(f1=voter["first_name"], l1=voter["last_name"],
                                     s1=voter["street"], z1=voter["zip"]), encoding="utf-8")
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    r = await h.submit(live_stack, path, pid, voter["county"])
    errors = {(e.record, e.field) for e in r.rejected}
    assert errors == {
        (2, "line"),         # missing line
        (3, "signed_on"),    # 30 February
        (4, "line"),         # line 1 repeated
        (5, "(row)"),        # too few fields
        (7, "line"),         # not a number
        (8, "(row)"),        # too many fields
    }
    by_record = {e.record: e for e in r.rejected}
    assert by_record[3].line == 2 and "date" in by_record[3].reason
    assert "repeated" in by_record[4].reason
    assert r.rows_received == 9
    assert r.signatures_accepted == 3 and r.incomplete == 1
    await h.wait_verified(live_stack, pid, 3)
    res = await h.results(live_stack, pid)
    assert res[1][:2] == ("VALID", "MATCHED")
    assert res[4][:2] == ("INVALID", "INCOMPLETE")
    assert res[6][1] == "NOT_REGISTERED"
    t = await h.tally(live_stack, pid)
    assert t.rows_rejected == 6


async def test_intake_errors_map_to_grpc_status(live_stack: stack.StackState,
                                                 tmp_path: Path) -> None:
    async with h.channel(live_stack, "intake") as ch:
        stub = intake_pb2_grpc.IntakeServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.GetBatch(intake_pb2.GetBatchRequest(batch_id="nope"), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.GetPetition(intake_pb2.GetPetitionRequest(petition_id="nope"), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    path = tmp_path / "b.csv"
    path.write_text("line,first_name,last_name,street\n1,A,B,1 Main St\n", encoding="utf-8")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await h.submit(live_stack, path, "no-such-petition", "Kern")
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    path.write_text("line,first_name,last_name\n1,A,B\n", encoding="utf-8")
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await h.submit(live_stack, path, pid, "Kern")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "street" in (e.value.details() or "")


async def test_every_service_reports_serving_health(live_stack: stack.StackState) -> None:
    for name in stack.SERVICES:
        assert stack.healthy(live_stack.addr(name)), name
