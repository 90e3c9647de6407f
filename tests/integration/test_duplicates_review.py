"""Duplicates across counties and batches, per-petition policies, and the review queue,
through the real stack."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import grpc
import pytest

from sigverify.common.v1 import common_pb2
from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify.matching.v1 import matching_pb2, matching_pb2_grpc
from sigverify.review.v1 import review_pb2, review_pb2_grpc
from sigverify_cli import stack
from sigverify_cli.synth import SynthOutput
from sigverify_common.convert import reason_from_pb, reason_to_pb
from sigverify_common.vocab import Reason
from tests.integration import helpers as h

pytestmark = pytest.mark.integration

HEADER = "line,first_name,middle_name,last_name,street,unit,city,zip,signed_on,circulator_id,source\n"


def voters(data: SynthOutput) -> list[dict[str, str]]:
    with data.roll_csv.open(newline="", encoding="utf-8") as fh:
        return [v for v in csv.DictReader(fh) if v["status"] == "ACTIVE" and not v["suffix"]
                and v["registered_on"] < "2016-01-01"]


def row(line: int, v: dict[str, str], signed: str, source: str = "paper", **change: str) -> str:
    f = {**v, **change}
    return (f"{line},{f['first_name']},{f['middle_name']},{f['last_name']},{f['street']},"
            f"{f['unit']},{f['city']},{f['zip']},{signed},C-1,{source}\n")


def write(tmp: Path, name: str, rows: list[str]) -> Path:
    path = tmp / name
    path.write_text(HEADER + "".join(rows), encoding="utf-8")
    return path


async def petition(state: stack.StackState, policy: int = 0, online: bool = False) -> str:
    pid = h.new_petition_id()
    async with h.channel(state, "intake") as ch:
        await intake_pb2_grpc.IntakeServiceStub(ch).CreatePetition(
            intake_pb2.CreatePetitionRequest(petition_id=pid, title="t", required_signatures=10,
                                             deadline="2017-07-25", duplicate_policy=policy,
                                             accept_online=online), timeout=10)
    return pid


async def test_a_voter_signing_twice_in_one_county_and_again_in_another(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput, tmp_path: Path
) -> None:
    roll = voters(synth_data)
    v = roll[0]
    w = next(x for x in roll if x["county"] == v["county"] and x["voter_id"] != v["voter_id"])
    other_county = next(c for c in synth_data.spec.counties if c != v["county"])
    pid = await petition(live_stack)
    b1 = await h.submit(live_stack, write(tmp_path, "b1.csv", [row(1, v, "2017-05-10"),
                                                               row(2, w, "2017-05-10")]),
                        pid, v["county"])
    await h.wait_verified(live_stack, pid, 2)
    first = await h.results_by_batch(live_stack, pid)
    assert first[(b1.batch_id, 1)][:2] == ("VALID", "MATCHED")
    # The same voter signed earlier on another sheet that arrives later, and again in a
    # section of another county.
    b2 = await h.submit(live_stack, write(tmp_path, "b2.csv", [row(1, v, "2017-05-02")]),
                        pid, v["county"])
    b3 = await h.submit(live_stack, write(tmp_path, "b3.csv", [row(1, v, "2017-05-20")]),
                        pid, other_county)
    t = await h.wait_verified(live_stack, pid, 4)
    res = await h.results_by_batch(live_stack, pid)
    assert res[(b2.batch_id, 1)] == ("VALID", "MATCHED", v["voter_id"])
    assert res[(b1.batch_id, 1)] == ("INVALID", "DUPLICATE", v["voter_id"])
    assert res[(b1.batch_id, 2)][:2] == ("VALID", "MATCHED")
    assert res[(b3.batch_id, 1)][1] == "WRONG_COUNTY"
    assert (t.total.valid, t.total.duplicates) == (2, 1)
    assert h.reason_counts(t) == {"VALID": 2, "REVIEW": 0, "DUPLICATE": 1, "WRONG_COUNTY": 1}


async def test_invalidate_all_and_online_signatures_follow_the_petition(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput, tmp_path: Path
) -> None:
    roll = voters(synth_data)
    v, w, x = roll[1], roll[2], roll[3]
    rows = [row(1, v, "2017-05-01"), row(2, v, "2017-05-09"), row(3, w, "2017-05-03", "online"),
            row(4, x, "2017-05-03")]
    expected = {
        (common_pb2.DUPLICATE_POLICY_INVALIDATE_ALL, False):
            {1: "DUPLICATE", 2: "DUPLICATE", 3: "ONLINE_NOT_ACCEPTED", 4: "MATCHED"},
        (common_pb2.DUPLICATE_POLICY_KEEP_FIRST, True):
            {1: "MATCHED", 2: "DUPLICATE", 3: "MATCHED", 4: "MATCHED"},
    }
    for (policy, online), want in expected.items():
        pid = await petition(live_stack, policy, online)
        for i, person in enumerate((v, w, x)):
            await h.submit(live_stack, write(tmp_path, f"{pid}-{i}.csv",
                                             [r for r in rows if f",{person['street']}," in r]),
                           pid, person["county"])
        await h.wait_verified(live_stack, pid, 4)
        res = await h.results_by_batch(live_stack, pid)
        by_line = {line: reason for (_, line), (_, reason, _) in res.items()
                   if (line in (1, 2) and reason in ("DUPLICATE", "MATCHED")) or line in (3, 4)}
        got = {line: by_line[line] for line in (3, 4)}
        got |= {line: reason for (_, line), (_, reason, vid) in res.items() if vid == v["voter_id"]}
        assert got == want, (policy, online)


async def _review_variants(state: stack.StackState, roll: list[dict[str, str]], n: int
                           ) -> list[tuple[dict[str, str], dict[str, str]]]:
    """Find (voter, printed change) pairs the live matcher sends to REVIEW."""
    changes = [
        lambda v: {"first_name": v["first_name"][0] + v["first_name"][2:]},
        lambda v: {"middle_name": "Quentin"},
        lambda v: {"first_name": v["first_name"][:-1], "zip": "00000"},
        lambda v: {"last_name": v["last_name"][:-1] + "x", "zip": "00000"},
        lambda v: {"street": v["street"].split(" ", 1)[0] + "7 Elsewhere Rd"},
    ]
    found: list[tuple[dict[str, str], dict[str, str]]] = []
    async with h.channel(state, "matching") as ch:
        stub = matching_pb2_grpc.MatchingServiceStub(ch)
        for v in roll[10:400]:
            for change in changes:
                f = {**v, **change(v)}
                r = await stub.MatchSignature(matching_pb2.MatchSignatureRequest(
                    printed=common_pb2.PrintedSignature(
                        first_name=f["first_name"], middle_name=f["middle_name"],
                        last_name=f["last_name"], street=f["street"], unit=f["unit"],
                        city=f["city"], zip=f["zip"], county=v["county"],
                        signed_on="2017-05-05")), timeout=10)
                if reason_from_pb(r.reason) is Reason.PENDING_REVIEW and r.voter_id == v["voter_id"]:
                    found.append((v, change(v)))
                    break
            if len(found) == n:
                return found
    raise AssertionError(f"found only {len(found)} signatures the matcher sends to review")


async def test_a_review_resolved_both_ways_changes_the_tally(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput, tmp_path: Path
) -> None:
    roll = voters(synth_data)
    picks = await _review_variants(live_stack, roll, 2)
    by_county: dict[str, list[str]] = {}
    for i, (v, change) in enumerate(picks):
        by_county.setdefault(v["county"], []).append(row(i + 1, v, "2017-05-05", **change))
    pid = await petition(live_stack)
    for county, rows in by_county.items():
        await h.submit(live_stack, write(tmp_path, f"{county}.csv", rows), pid, county)
    before = await h.wait_verified(live_stack, pid, 2)
    assert before.total.review == 2
    async with h.channel(live_stack, "matching") as ch:
        stub = review_pb2_grpc.ReviewServiceStub(ch)
        listed = await stub.ListPending(review_pb2.ListPendingRequest(petition_id=pid), timeout=10)
        assert listed.total_pending == 2 and len(listed.items) == 2
        items = {i.printed.street: i for i in listed.items}
        accept = items[{**picks[0][0], **picks[0][1]}["street"]]
        reject = items[{**picks[1][0], **picks[1][1]}["street"]]
        assert accept.candidates and accept.candidates[0].field_scores
        claimed = await stub.ClaimReview(review_pb2.ClaimReviewRequest(
            signature_id=accept.signature_id, reviewer="ana"), timeout=10)
        assert claimed.state == review_pb2.REVIEW_STATE_CLAIMED
        resolved = await stub.ResolveReview(review_pb2.ResolveReviewRequest(
            signature_id=accept.signature_id, reviewer="ana", voter_id=picks[0][0]["voter_id"],
            note="signature compared with the registration card"), timeout=10)
        assert resolved.state == review_pb2.REVIEW_STATE_RESOLVED
        await stub.ResolveReview(review_pb2.ResolveReviewRequest(
            signature_id=reject.signature_id, reviewer="ben",
            invalid_reason=reason_to_pb(Reason.SIGNATURE_MISMATCH)), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.ResolveReview(review_pb2.ResolveReviewRequest(
                signature_id=reject.signature_id, reviewer="ben",
                invalid_reason=reason_to_pb(Reason.NOT_REGISTERED)), timeout=10)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.ResolveReview(review_pb2.ResolveReviewRequest(
                signature_id=reject.signature_id, invalid_reason=reason_to_pb(Reason.MATCHED)),
                timeout=10)
        assert e.value.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                  grpc.StatusCode.FAILED_PRECONDITION)
        left = await stub.ListPending(review_pb2.ListPendingRequest(petition_id=pid), timeout=10)
        assert left.total_pending == 0
    for _ in range(100):
        after = await h.tally(live_stack, pid)
        if after.total.review == 0:
            break
        await asyncio.sleep(0.2)
    assert (after.total.valid, after.total.review) == (before.total.valid + 1, 0)
    assert h.reason_counts(after).get("SIGNATURE_MISMATCH") == 1
    res = await h.results(live_stack, pid)
    assert sorted(r for r, _, _ in res.values()) == ["INVALID", "VALID"]
