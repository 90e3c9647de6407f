"""The match model and the evidence behind a decision, as the CLI shows them, through the
real stack: ``sigverify model show|train``, ``explain`` and ``review list|show``."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import grpc
import pytest

from sigverify.access.v1 import access_pb2, access_pb2_grpc
from sigverify.common.v1 import common_pb2
from sigverify.matching.v1 import matching_pb2, matching_pb2_grpc
from sigverify.review.v1 import review_pb2, review_pb2_grpc
from sigverify.tally.v1 import tally_pb2, tally_pb2_grpc
from sigverify_cli import evidence, stack
from sigverify_cli.synth import SynthOutput
from sigverify_common.convert import reason_from_pb, status_from_pb
from sigverify_common.vocab import Reason
from tests.integration import helpers as h

pytestmark = pytest.mark.integration

#: A waterfall step: "  + last name    same    +9.87   +2.65  +++++" (bits, running total).
STEP = re.compile(r"^  [ +] (.{12}) (.+?)\s+([+-]\d+\.\d\d)\s+([+-]\d+\.\d\d)(\s+[+-]*)?$")
TOTAL = re.compile(r"^  = total\s+.+?\s+([+-]\d+\.\d\d)$")
HEADING = re.compile(r"^candidate (\d+): voter (\S+) .*probability ([\d.]+) %; match weight "
                     r"([+-]\d+\.\d\d) bits$")


async def cli(state: stack.StackState, *args: str, token: str | None = None
              ) -> tuple[int, str, str]:
    """Run ``sigverify`` as a user does: (exit code, stdout, stderr) as printed."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("INTAKE_ADDR", "MATCHING_ADDR", "TALLY_ADDR", "SIGVERIFY_TOKEN",
                        "DATABASE_URL", "SIGVERIFY_DEBUG")}
    env["SIGVERIFY_HOME"] = state.home
    if token is not None:
        env["SIGVERIFY_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from sigverify_cli.main import main; main()", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    return proc.returncode or 0, out.decode(), err.decode()


async def current_model(state: stack.StackState) -> matching_pb2.ModelInfo:
    """The model in force (a roll version loaded by another test may still be learning its
    own: wait for it)."""
    async with h.channel(state, "matching") as ch:
        stub = matching_pb2_grpc.MatchingServiceStub(ch)
        for _ in range(120):
            try:
                m: matching_pb2.ModelInfo = await stub.GetModel(matching_pb2.GetModelRequest(),
                                                                timeout=30)
                return m
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            await asyncio.sleep(1)
    raise AssertionError("no model in force after 120 s")


def waterfalls(text: str) -> dict[int, tuple[re.Match[str], list[re.Match[str]], float]]:
    """rank -> (heading, steps, total) of every candidate's waterfall in printed output."""
    out: dict[int, tuple[re.Match[str], list[re.Match[str]], float]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        head = HEADING.match(line)
        if head is None:
            continue
        steps: list[re.Match[str]] = []
        for follow in lines[i + 1:]:
            total = TOTAL.match(follow)
            if total is not None:
                out[int(head.group(1))] = (head, steps, float(total.group(1)))
                break
            step = STEP.match(follow)
            assert step is not None, f"not a waterfall line: {follow!r}"
            steps.append(step)
    return out


async def test_model_show_prints_every_level_and_its_weight(
    live_stack: stack.StackState, loaded_roll: int
) -> None:
    code, out, err = await cli(live_stack, "model", "show", "--json")
    assert code == 0, err
    shown = json.loads(out)
    async with h.channel(live_stack, "matching") as ch:
        rpc = await matching_pb2_grpc.MatchingServiceStub(ch).GetModel(
            matching_pb2.GetModelRequest(model_id=shown["model_id"]), timeout=30)
    assert shown["model_id"] > 0 and shown["signatures"] > 0
    assert shown["roll_version"] == rpc.roll_version and shown["voters"] == loaded_roll
    assert [c["comparison"] for c in shown["comparisons"]] == [c.comparison for c in rpc.comparisons]
    for c, r in zip(shown["comparisons"], rpc.comparisons, strict=True):
        assert [(lv["level"], lv["weight"]) for lv in c["levels"]] == [
            (lv.level, lv.weight) for lv in r.levels]
    # The learned model says something: an exact surname is evidence for, a different one
    # against, and a missing field none.
    last = {lv.level: lv for c in rpc.comparisons if c.comparison == "last" for lv in c.levels}
    assert last["exact"].weight > 0 > last["different"].weight and last["missing"].weight == 0

    code, out, err = await cli(live_stack, "model", "show", "--model", str(rpc.model_id))
    assert code == 0, err
    assert f"match model {rpc.model_id} of roll version {rpc.roll_version}" in out
    assert f"from {rpc.signatures:,} signatures" in out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    cells = [[x.strip() for x in line.strip("│").split("│")] for line in rows]
    cells = [c for c in cells if c[1:] != ["level", "m", "u", "weight (bits)"]]
    assert len(cells) == sum(len(c.levels) for c in rpc.comparisons)
    flat = [(c.comparison, lv) for c in rpc.comparisons for lv in c.levels]
    for (comparison, lv), row in zip(flat, cells, strict=True):
        assert row[1] == evidence.level_text(comparison, lv.level)
        assert row[4] == ("0 (no evidence)" if lv.level == "missing" else f"{lv.weight:+.2f}")
    # Without --model: the model in force.
    code, out, err = await cli(live_stack, "model", "show")
    assert code == 0 and ": in force" in out.splitlines()[0], err
    # How long it took to learn, and how much of that was the learning thread's own CPU.
    conn = await asyncpg.connect(live_stack.database_url)
    try:
        trained = json.loads(await conn.fetchval(
            "SELECT model->'trained' FROM matching.models WHERE model_id = $1", rpc.model_id))
    finally:
        await conn.close()
    assert 0 < trained["cpu_seconds"] <= trained["seconds"] + 0.5, trained


async def test_model_train_is_refused_to_a_non_admin_in_one_line(
    live_stack: stack.StackState, loaded_roll: int
) -> None:
    async with h.channel(live_stack, "intake") as ch:
        made = await access_pb2_grpc.AccessServiceStub(ch).CreateToken(
            access_pb2.CreateTokenRequest(role=access_pb2.ROLE_REVIEWER, label="test"),
            timeout=10)
    pool = await asyncpg.create_pool(live_stack.database_url, min_size=1, max_size=1)
    try:
        before = await pool.fetchval("SELECT count(*) FROM matching.models")
        code, out, err = await cli(live_stack, "model", "train", token=made.token)
        assert code != 0 and out == ""
        assert err.startswith("error: PERMISSION_DENIED") and err.count("\n") == 1, err
        assert "Traceback" not in err
        assert await pool.fetchval("SELECT count(*) FROM matching.models") == before
    finally:
        await pool.close()
    # A reviewer may read the model.
    code, out, err = await cli(live_stack, "model", "show", token=made.token)
    assert code == 0 and "match model" in out, err


async def test_model_train_refuses_too_few_or_too_many_signatures_in_one_line(
    live_stack: stack.StackState, loaded_roll: int
) -> None:
    """Below MATCH_TRAIN_MIN (500 in the test stack) a model would be provisional; above
    1,000,000 it was cut to 1,000,000 without a word."""
    assert live_stack.services["matching"].extra_env.get("MATCH_TRAIN_MIN") == "500"
    pool = await asyncpg.create_pool(live_stack.database_url, min_size=1, max_size=1)
    try:
        before = await pool.fetchval("SELECT count(*) FROM matching.models")
        for n, says in (("2", "at least 500 (MATCH_TRAIN_MIN)"),
                        ("2000000", "at most 1,000,000")):
            code, out, err = await cli(live_stack, "model", "train", "--max-signatures", n)
            assert code != 0 and out == "", (out, err)
            assert err.startswith("error: INVALID_ARGUMENT") and says in err, err
            assert err.count("\n") == 1 and "Traceback" not in err
        assert await pool.fetchval("SELECT count(*) FROM matching.models") == before
    finally:
        await pool.close()


async def _valid_signature(state: stack.StackState, pid: str) -> str:
    async with h.channel(state, "tally") as ch:
        async for r in tally_pb2_grpc.TallyServiceStub(ch).ListResults(
                tally_pb2.ListResultsRequest(petition_id=pid), timeout=30):
            if status_from_pb(r.status).value == "VALID":
                return str(r.signature_id)
    raise AssertionError("no valid signature")


def check_waterfalls(text: str, candidates: list[common_pb2.Candidate]) -> None:
    """Every candidate's printed waterfall: the prior first, then each field; the printed bits
    add up (within rounding) to the printed total, which is the candidate's prior plus its
    match weight."""
    shown = waterfalls(text)
    assert sorted(shown) == list(range(1, len(candidates) + 1))
    for rank, c in enumerate(candidates, 1):
        head, steps, total = shown[rank]
        assert head.group(2) == c.voter_id
        assert abs(float(head.group(3)) - c.score) < 0.006
        assert abs(float(head.group(4)) - c.match_weight) < 0.006
        labels = [s.group(1).strip() for s in steps]
        assert labels == ["start", "first name", "middle name", "last name", "suffix", "address",
                          "birth date"]
        bits = [float(s.group(3)) for s in steps]
        assert abs(sum(bits) - total) < 0.05
        assert abs(sum(bits[1:]) - c.match_weight) < 0.05
        assert abs(total - evidence.total_of(c)) < 0.006
        assert abs(float(steps[-1].group(4)) - sum(bits)) < 0.02  # the running total


async def test_explain_prints_each_candidates_waterfall(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    path, county = synth_data.batches[0]
    receipt = await h.submit(live_stack, path, pid, county)
    await h.wait_verified(live_stack, pid, receipt.signatures_accepted)
    sid = await _valid_signature(live_stack, pid)
    async with h.channel(live_stack, "matching") as ch:
        x = await matching_pb2_grpc.MatchingServiceStub(ch).ExplainSignature(
            matching_pb2.ExplainSignatureRequest(signature_id=sid), timeout=10)
    code, out, err = await cli(live_stack, "explain", sid)
    assert code == 0, err
    assert f"model {x.model_id}" in out and evidence.LEGEND in out
    check_waterfalls(out, list(x.candidates))
    best = waterfalls(out)[1]
    assert best[0].group(2) == x.voter_id and best[2] > 0  # odds in the voter's favour
    # A VALID signature: the voter identified at the address, in the section's county.
    why = [line for line in out.splitlines() if line.startswith("why: ")]
    assert why == [f"why: {evidence.why(x)}"], out
    assert why[0].startswith("why: the voter is identified (p ") and "address agrees" in why[0]
    code, out, err = await cli(live_stack, "explain", sid, "--json")
    assert code == 0, err
    j = json.loads(out)
    assert j["why"] == evidence.why(x)
    assert (j["model_id"], j["prior_weight"]) == (x.model_id, round(x.prior_weight, 2))
    for c, pb in zip(j["candidates"], x.candidates, strict=True):
        assert c["voter_id"] == pb.voter_id and c["probability"] == round(pb.score, 2)
        assert [e["field"] for e in c["evidence"]] == [e.field for e in pb.evidence]
        assert abs(sum(e["weight"] for e in c["evidence"]) - c["total_weight"]) < 0.05
        assert c["total_weight"] == round(evidence.total_of(pb), 2)
    code, _, err = await cli(live_stack, "explain", "00000000-0000-0000-0000-000000000000")
    assert code != 0 and err.startswith("error: NOT_FOUND") and err.count("\n") == 1, err


async def _review_signature(state: stack.StackState, data: SynthOutput) -> tuple[str, str]:
    """A voter's row printed so that the live matcher sends it to review: (county, CSV row)."""
    with data.roll_csv.open(newline="", encoding="utf-8") as fh:
        roll = [v for v in csv.DictReader(fh) if v["status"] == "ACTIVE" and not v["suffix"]]
    changes: list[Callable[[dict[str, str]], dict[str, str]]] = [
        lambda v: {"first_name": v["first_name"][0] + v["first_name"][2:]},
        lambda v: {"first_name": v["first_name"][:-1], "zip": "00000"},
        lambda v: {"last_name": v["last_name"][:-1] + "x", "zip": "00000"},
    ]
    async with h.channel(state, "matching") as ch:
        stub = matching_pb2_grpc.MatchingServiceStub(ch)
        for v in roll[400:800]:
            for change in changes:
                f = {**v, **change(v)}
                r = await stub.MatchSignature(matching_pb2.MatchSignatureRequest(
                    printed=common_pb2.PrintedSignature(
                        first_name=f["first_name"], middle_name=f["middle_name"],
                        last_name=f["last_name"], street=f["street"], unit=f["unit"],
                        city=f["city"], zip=f["zip"], county=v["county"],
                        signed_on="2017-05-05")), timeout=10)
                if reason_from_pb(r.reason) is Reason.PENDING_REVIEW:
                    return v["county"], (
                        f"1,{f['first_name']},{f['middle_name']},{f['last_name']},{f['street']},"
                        f"{f['unit']},{f['city']},{f['zip']},2017-05-05\n")
    raise AssertionError("found no signature the matcher sends to review")


async def test_review_list_and_show_print_the_waterfall(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput, tmp_path: Path
) -> None:
    county, row = await _review_signature(live_stack, synth_data)
    path = tmp_path / "review.csv"
    path.write_text("line,first_name,middle_name,last_name,street,unit,city,zip,signed_on\n"
                    + row, encoding="utf-8")
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    await h.submit(live_stack, path, pid, county)
    t = await h.wait_verified(live_stack, pid, 1)
    assert t.total.review == 1
    code, out, err = await cli(live_stack, "review", "list", "--petition", pid, "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert listed["total_pending"] == 1
    item = listed["items"][0]
    best = item["candidates"][0]
    assert abs(sum(e["weight"] for e in best["evidence"]) - best["total_weight"]) < 0.05
    code, out, err = await cli(live_stack, "review", "list", "--petition", pid)
    assert code == 0 and f"best candidate: voter {best['voter_id']}" in out, err
    code, out, err = await cli(live_stack, "review", "show", item["signature_id"])
    assert code == 0, err
    assert evidence.LEGEND in out
    async with h.channel(live_stack, "matching") as ch:
        got = await review_pb2_grpc.ReviewServiceStub(ch).GetReview(
            review_pb2.GetReviewRequest(signature_id=item["signature_id"]), timeout=10)
    check_waterfalls(out, list(got.candidates))
    async with h.channel(live_stack, "matching") as ch:
        x = await matching_pb2_grpc.MatchingServiceStub(ch).ExplainSignature(
            matching_pb2.ExplainSignatureRequest(signature_id=item["signature_id"]), timeout=10)
    # Why a person has to look: the rule that sent it to review, in words.
    why = [line.strip() for line in out.splitlines() if line.strip().startswith("why: ")]
    assert why == [f"why: {evidence.why(x)}"], out
    assert ("a person says which" in why[0] or "neither confirmed nor refuted" in why[0]), why
    code, out, err = await cli(live_stack, "review", "show", item["signature_id"], "--json")
    assert code == 0, err
    assert json.loads(out)["why"] == evidence.why(x)
    code, out, err = await cli(live_stack, "explain", item["signature_id"])
    assert code == 0 and f"why: {evidence.why(x)}" in out.splitlines(), out
