"""The matching service's own surface: explanations, direct matches, roll reloads."""

from __future__ import annotations

import asyncio
import csv
import json

import asyncpg
import grpc
import pytest

from sigverify.common.v1 import common_pb2
from sigverify.matching.v1 import matching_pb2, matching_pb2_grpc
from sigverify.tally.v1 import tally_pb2, tally_pb2_grpc
from sigverify_cli import stack
from sigverify_cli.synth import SynthOutput
from sigverify_common.convert import decision_from_pb, reason_from_pb, status_from_pb
from sigverify_matching.roll import load_roll
from tests.integration import helpers as h

pytestmark = pytest.mark.integration


async def _first_signature(state: stack.StackState, petition_id: str) -> tally_pb2.SignatureResult:
    async with h.channel(state, "tally") as ch:
        async for r in tally_pb2_grpc.TallyServiceStub(ch).ListResults(
                tally_pb2.ListResultsRequest(petition_id=petition_id), timeout=30):
            if status_from_pb(r.status).value == "VALID":
                return r
    raise AssertionError("no valid signature")


async def test_explain_shows_the_decision_and_its_candidates(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    path, county = synth_data.batches[0]
    receipt = await h.submit(live_stack, path, pid, county)
    await h.wait_verified(live_stack, pid, receipt.signatures_accepted)
    result = await _first_signature(live_stack, pid)
    async with h.channel(live_stack, "matching") as ch:
        stub = matching_pb2_grpc.MatchingServiceStub(ch)
        x = await stub.ExplainSignature(
            matching_pb2.ExplainSignatureRequest(signature_id=result.signature_id), timeout=10)
        assert decision_from_pb(x.decision).value == "MATCH"
        assert reason_from_pb(x.reason).value == "MATCHED"
        assert x.voter_id == result.voter_id and x.petition_id == pid
        assert x.candidates and x.candidates[0].voter_id == x.voter_id
        assert x.score >= x.accept_threshold > x.review_threshold
        # The waterfall: each comparison's level and bits, then the prior; the comparisons
        # add up to the candidate's match weight, and the best candidate's evidence for it.
        best = x.candidates[0]
        parts = {e.field: e for e in best.evidence}
        assert set(parts) == {"first", "middle", "last", "suffix", "residence", "birth", "prior"}
        assert parts["last"].level in ("exact", "typo") and parts["last"].weight > 0
        assert parts["prior"].weight < 0 and parts["prior"].weight == x.prior_weight
        assert abs(sum(e.weight for e in best.evidence if e.field != "prior")
                   - best.match_weight) < 0.05
        assert best.match_weight + x.prior_weight > 0  # odds in its favour
        assert x.model_id > 0
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.ExplainSignature(matching_pb2.ExplainSignatureRequest(
                signature_id="00000000-0000-0000-0000-000000000000"), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    async with h.channel(live_stack, "tally") as ch:
        got = await tally_pb2_grpc.TallyServiceStub(ch).GetResult(
            tally_pb2.GetResultRequest(signature_id=result.signature_id), timeout=10)
        assert got.line == result.line and got.petition_id == pid


async def test_match_signature_rpc_finds_a_voter_and_explains_a_stranger(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    with synth_data.roll_csv.open(newline="", encoding="utf-8") as fh:
        v = next(r for r in csv.DictReader(fh) if r["status"] == "ACTIVE")
    printed = common_pb2.PrintedSignature(
        first_name=v["first_name"].lower(), last_name=v["last_name"], street=v["street"],
        zip=v["zip"], county=v["county"].upper(), signed_on="2017-05-01")
    async with h.channel(live_stack, "matching") as ch:
        stub = matching_pb2_grpc.MatchingServiceStub(ch)
        r = await stub.MatchSignature(matching_pb2.MatchSignatureRequest(printed=printed),
                                      timeout=10)
        assert (r.voter_id, reason_from_pb(r.reason).value) == (v["voter_id"], "MATCHED")
        stranger = common_pb2.PrintedSignature(first_name="Zebulon", last_name="Quixotry",
                                               street="1 Nowhere Rd", zip="00000",
                                               county=v["county"])
        r = await stub.MatchSignature(matching_pb2.MatchSignatureRequest(printed=stranger),
                                      timeout=10)
        assert reason_from_pb(r.reason).value == "NOT_REGISTERED" and not r.voter_id
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.MatchSignature(matching_pb2.MatchSignatureRequest(
                printed=common_pb2.PrintedSignature(first_name="A")), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_new_roll_version_is_picked_up_without_stopping_matching(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    pool = await asyncpg.create_pool(live_stack.database_url, min_size=1, max_size=2)
    try:
        before = await pool.fetchval(
            "SELECT max(version) FROM matching.roll_versions WHERE state = 'active'")
        pid = h.new_petition_id()
        await h.create_petition(live_stack, pid)
        path, county = synth_data.batches[1]
        reload = asyncio.create_task(load_roll(pool, synth_data.roll_csv))
        receipt = await h.submit(live_stack, path, pid, county)
        loaded = await reload
        await h.wait_verified(live_stack, pid, receipt.signatures_accepted)
        assert loaded.version > before and loaded.rows == loaded_roll
        assert await pool.fetchval(
            "SELECT count(*) FROM matching.roll_versions WHERE state = 'active'") == 1
        # The previous version's rows are kept (for a rollback) until the next activation.
        assert {r["version"] for r in await pool.fetch(
            "SELECT DISTINCT version FROM matching.voters")} == {before, loaded.version}
        # Roll changes and decisions are in the audit log (identifiers and counts only).
        loaded_entry = await pool.fetchrow(
            "SELECT actor, detail FROM audit.entries WHERE action = 'roll.loaded' AND subject = $1",
            f"roll-version-{loaded.version}")
        assert loaded_entry is not None and '"voters"' in str(loaded_entry["detail"])
        decided = await pool.fetch(
            "SELECT detail FROM audit.entries WHERE action = 'decisions.recorded'")
        ids = {i for d in decided for i in json.loads(d["detail"])["signature_ids"]}
        mine = await pool.fetch(
            "SELECT signature_id::text FROM matching.decisions WHERE petition_id = $1", pid)
        assert {r["signature_id"] for r in mine} <= ids
        # Later signatures are matched against the new version once its index is built.
        pid2 = h.new_petition_id()
        await h.create_petition(live_stack, pid2)
        for _ in range(100):
            r2 = await h.submit(live_stack, synth_data.batches[2][0], pid2, synth_data.batches[2][1])
            await h.wait_verified(live_stack, pid2, r2.signatures_accepted)
            versions = await pool.fetch(
                "SELECT DISTINCT roll_version FROM matching.decisions WHERE petition_id = $1", pid2)
            if [r["roll_version"] for r in versions] == [loaded.version]:
                break
            pid2 = h.new_petition_id()
            await h.create_petition(live_stack, pid2)
            await asyncio.sleep(0.5)
        else:
            raise AssertionError("matching never used the new roll version")
    finally:
        await pool.close()
