"""California's statutory process through the real stack: raw count, random sample drawn at
county close with a recorded seed, projection, the decision, and a full count in the band.

One data set (3,600 signatures from the session's roll: Kern 531, Alameda 1,062, Orange
2,007) goes to three random-sample petitions whose requirements put the truth's valid count
far above, far below and just above the requirement. The session's intake keeps at most
100 signatures in flight during a full count (conftest), so the band petition's full count
stops at the requirement (AB 2219) with signatures left unverified.
"""

from __future__ import annotations

import asyncio
import csv
import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest

from sigverify.access.v1 import access_pb2, access_pb2_grpc
from sigverify.common.v1 import common_pb2
from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify.tally.v1 import tally_pb2, tally_pb2_grpc
from sigverify_cli import stack
from sigverify_cli.demo import resolve_reviews_from_truth
from sigverify_cli.synth import SynthOutput, generate
from sigverify_common.convert import status_from_pb
from sigverify_common.sampling import draw
from sigverify_tally.projection import project
from tests.integration import helpers as h

pytestmark = pytest.mark.integration

RS = common_pb2.VERIFICATION_METHOD_RANDOM_SAMPLE
Truth = dict[tuple[str, int], dict[str, str]]
Rows = dict[tuple[str, int], tuple[str, str, str]]


@pytest.fixture(scope="module")
def filing_data(tmp_path_factory: pytest.TempPathFactory, synth_data: SynthOutput) -> SynthOutput:
    out = generate(tmp_path_factory.mktemp("statutory"),
                   replace(synth_data.spec, signatures=3600, batch_size=600))
    # The same voters as the roll the session loaded: only the signatures differ.
    assert out.roll_csv.read_bytes() == synth_data.roll_csv.read_bytes()
    return out


def truth_of(data: SynthOutput) -> Truth:
    with data.truth_csv.open(newline="") as f:
        return {(r["batch_file"], int(r["line"])): r for r in csv.DictReader(f)}


async def create(state: stack.StackState, required: int, minimum: int = 0,
                 method: int = RS, counties: tuple[str, ...] = ()) -> str:
    pid = h.new_petition_id()
    async with h.channel(state, "intake") as ch:
        p = await intake_pb2_grpc.IntakeServiceStub(ch).CreatePetition(
            intake_pb2.CreatePetitionRequest(
                petition_id=pid, title="statutory", required_signatures=required,
                deadline="2017-07-25", method=method, counties=counties,
                sampling=common_pb2.SamplingRules(minimum_sample=minimum)), timeout=30)
    assert p.method == method
    assert p.sampling.sample_percent == "3" and p.sampling.fail_below_percent == "95"
    return pid


async def submit_all(state: stack.StackState, data: SynthOutput, pid: str) -> dict[str, str]:
    """Submit every batch; returns batch id -> file name."""
    files = {}
    for path, county in data.batches:
        receipt = await h.submit(state, path, pid, county)
        files[receipt.batch_id] = path.name
    return files


async def close(state: stack.StackState, pid: str, county: str, seed: str = "",
                token: str | None = None) -> intake_pb2.CountyFiling:
    async with h.channel(state, "intake", token) as ch:
        f: intake_pb2.CountyFiling = await intake_pb2_grpc.IntakeServiceStub(ch).CloseCounty(
            intake_pb2.CloseCountyRequest(petition_id=pid, county=county, seed=seed), timeout=60)
        return f


async def resolve_reviews(state: stack.StackState, pid: str, truth: Truth,
                          files: dict[str, str]) -> int:
    """Resolve the petition's pending reviews as the truth says a reviewer would."""
    async with h.channel(state, "matching") as ch:
        return await resolve_reviews_from_truth(ch, pid, truth, files, reviewer="ana")


async def until(state: stack.StackState, pid: str, done: Callable[[tally_pb2.Tally], bool],
                truth: Truth, files: dict[str, str], what: str,
                timeout: float = 240) -> tally_pb2.Tally:
    end = time.monotonic() + timeout
    while True:
        t = await h.tally(state, pid)
        if done(t):
            return t
        if time.monotonic() > end:
            raise AssertionError(f"{pid}: no {what} in {timeout}s: {t.statutory.explanation}")
        if t.total.review:
            await resolve_reviews(state, pid, truth, files)
        await asyncio.sleep(0.5)


def decided(t: tally_pb2.Tally) -> bool:
    return t.statutory.outcome in (tally_pb2.OUTCOME_FAILS, tally_pb2.OUTCOME_QUALIFIES)


def check_projections(t: tally_pb2.Tally, raw_by_county: dict[str, int], minimum: int) -> None:
    """Every county's figures are the regulation's arithmetic on its sample."""
    s = t.statutory
    assert {c.county: c.raw for c in s.counties} == raw_by_county
    for c in s.counties:
        assert c.closed and c.complete and c.seed
        assert c.sample_size == (c.raw if c.raw <= minimum else max(minimum, -(-c.raw * 3 // 100)))
        p = project(c.raw, c.sample_size, c.valid_in_sample, c.duplicates_in_sample)
        assert (c.rate_percent, c.v, c.a, c.c, c.projected) == (
            str(p.rate_percent), p.v, str(p.a), p.c, p.projected)
        assert c.counted == (c.sample_size == c.raw)
    assert s.projected_total == sum(c.projected for c in s.counties)
    assert s.raw_total == sum(raw_by_county.values()) and s.raw_complete and not s.provisional


async def test_random_sample_qualifies_fails_and_escalates_to_a_full_count(
    live_stack: stack.StackState, loaded_roll: int, filing_data: SynthOutput, tmp_path: Path
) -> None:
    truth = truth_of(filing_data)
    valid_truth = sum(1 for r in truth.values() if r["expected_status"] == "VALID")
    raw_by_county: dict[str, int] = {}
    for (name, _), _r in truth.items():
        county = dict((p.name, c) for p, c in filing_data.batches)[name]
        raw_by_county[county] = raw_by_county.get(county, 0) + 1
    raw = sum(raw_by_county.values())
    assert min(raw_by_county.values()) > 500  # every county projects rather than counts

    # California's parameters, far from the band either way; the band petition samples
    # 1,000 per county so that its projection's spread (about 1 %) stays inside 95-110 %,
    # and its requirement is 94 % of the truth's valid count, so that the full count
    # reaches it with a few hundred signatures still to verify.
    qualifies = await create(live_stack, int(valid_truth / 1.4))
    fails = await create(live_stack, int(valid_truth / 0.8))
    band = await create(live_stack, int(valid_truth / 1.065), minimum=1000)
    assert int(valid_truth / 0.8) <= raw  # it passes the raw count and fails on projection
    files = {}
    for pid in (qualifies, fails, band):
        files.update(await submit_all(live_stack, filing_data, pid))

    # Filing open: everything held back, nothing in flight, nothing decided.
    t = await h.tally(live_stack, qualifies)
    assert t.method == RS and t.total.received == raw and t.total.not_sampled == raw
    assert t.total.pending == 0 and t.total.verified == 0
    assert t.statutory.stage == "raw count" and t.statutory.outcome == tally_pb2.OUTCOME_PENDING

    seeds: dict[tuple[str, str], str] = {}
    for pid in (qualifies, fails, band):
        for county in raw_by_county:
            seed = f"dice-{county}" if pid == qualifies else ""
            f = await close(live_stack, pid, county, seed)
            assert f.closed and f.raw_count == raw_by_county[county] and f.seed
            seeds[(pid, county)] = f.seed
            if seed:
                assert f.seed == seed
    # Closing again changes nothing; a closed county takes no more batches.
    again = await close(live_stack, qualifies, "Kern", "another seed")
    assert again.seed == "dice-Kern" and again.closed_at
    path, county = filing_data.batches[0]
    late = tmp_path / "late.csv"
    late.write_text("".join(path.read_text().splitlines(keepends=True)[:11]))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await h.submit(live_stack, late, qualifies, county, key="late")
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "closed" in (e.value.details() or "")

    # The decisions.
    tq = await until(live_stack, qualifies, decided, truth, files, "decision")
    tf = await until(live_stack, fails, decided, truth, files, "decision")
    assert tq.statutory.outcome == tally_pb2.OUTCOME_QUALIFIES, tq.statutory.explanation
    assert tq.statutory.decided_by == "random sample"
    assert tf.statutory.outcome == tally_pb2.OUTCOME_FAILS, tf.statutory.explanation
    assert tf.statutory.decided_by == "random sample"
    for t in (tq, tf):
        check_projections(t, raw_by_county, 500)
        assert t.total.verified == 1500 and t.total.not_sampled == raw - 1500
        assert abs(t.statutory.projected_total - valid_truth) < 0.08 * valid_truth

    tb = await until(live_stack, band, lambda t: t.statutory.sample_outcome
                     != tally_pb2.OUTCOME_PENDING, truth, files, "sample decision")
    assert tb.statutory.sample_outcome == tally_pb2.OUTCOME_FULL_COUNT, tb.statutory.explanation
    band_sample = [(c.county, c.valid_in_sample, c.projected) for c in tb.statutory.counties]

    # The full count: the rest goes to matching without resubmission, a little at a time; the
    # tally switches to the counted totals and the sample's figures stay as they were decided.
    # At the requirement the count stops (AB 2219): what was in flight is still verified,
    # nothing more is sent, and the final counted total is reported.
    final = await until(live_stack, band, lambda t: decided(t) and t.total.pending == 0
                        and t.total.review == 0, truth, files, "full count", timeout=300)
    s = final.statutory
    assert s.outcome == tally_pb2.OUTCOME_QUALIFIES and s.decided_by == "full count", s.explanation
    assert s.sample_outcome == tally_pb2.OUTCOME_FULL_COUNT and s.full_count
    assert [(c.county, c.valid_in_sample, c.projected) for c in s.counties] == band_sample
    assert s.stopped_at_requirement and "AB 2219" in s.explanation
    assert s.counted_valid == final.total.valid >= final.required_signatures
    assert s.counted_valid <= valid_truth * 1.01
    assert f"{s.counted_valid:,} valid" in s.explanation
    assert 0 < final.total.not_sampled == s.counted_remaining == raw - final.total.verified
    await asyncio.sleep(1.0)  # nothing more is released after the stop
    assert (await h.tally(live_stack, band)).total.not_sampled == final.total.not_sampled
    async with h.channel(live_stack, "intake") as ch:
        petition = await intake_pb2_grpc.IntakeServiceStub(ch).GetPetition(
            intake_pb2.GetPetitionRequest(petition_id=band), timeout=10)
    assert petition.full_count_started_at

    # The qualifying petition's export: every sampled signature verified, the rest NOT_SAMPLED.
    async with h.channel(live_stack, "tally") as ch:
        exported = [r async for r in tally_pb2_grpc.TallyServiceStub(ch).ListResults(
            tally_pb2.ListResultsRequest(petition_id=qualifies), timeout=60)]
    statuses = [status_from_pb(r.status).value for r in exported]
    assert len(exported) == raw and statuses.count("NOT_SAMPLED") == raw - 1500
    valid_sampled = {c.county: c.valid_in_sample for c in tq.statutory.counties}
    for county, n in valid_sampled.items():
        assert n == sum(1 for r in exported if r.county == county
                        and r.status == common_pb2.SIGNATURE_STATUS_VALID)

    # Anyone can re-draw a county's sample from its recorded seed and the signature ids.
    for county in raw_by_county:
        async with h.channel(live_stack, "intake") as ch:
            entries = [e async for e in intake_pb2_grpc.IntakeServiceStub(ch).ListSample(
                intake_pb2.ListSampleRequest(petition_id=qualifies, county=county,
                                             include_unsampled=True), timeout=60)]
        ids = [e.signature_id for e in entries]
        sampled = {e.signature_id for e in entries if e.sampled}
        assert len(entries) == raw_by_county[county] and len(sampled) == 500
        assert set(draw(seeds[(qualifies, county)], reversed(ids), 500)) == sampled
        assert sampled == {r.signature_id for r in exported if r.county == county
                           and r.status != common_pb2.SIGNATURE_STATUS_NOT_SAMPLED}


async def test_a_raw_count_below_the_requirement_fails_once_every_expected_county_closed(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    path, county = synth_data.batches[0]
    other = next(c for _, c in synth_data.batches if c != county)
    pid = await create(live_stack, 10_000, counties=(county, "inyo "))
    receipt = await h.submit(live_stack, path, pid, county)
    # A county the petition does not expect is refused.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await h.submit(live_stack, next(p for p, c in synth_data.batches if c == other), pid, other)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "expects" in (e.value.details() or "")
    f = await close(live_stack, pid, county)
    assert f.sample_size == receipt.signatures_accepted  # 500 or fewer: every signature
    # Inyo has filed nothing and not closed: the raw count is not complete, nothing is decided.
    await h.wait_verified(live_stack, pid, receipt.signatures_accepted)
    await asyncio.sleep(3)
    t = await h.tally(live_stack, pid)
    assert t.statutory.stage == "raw count" and t.statutory.outcome == tally_pb2.OUTCOME_PENDING
    assert {c.county: c.closed for c in t.statutory.counties} == {county: True, "Inyo": False}
    inyo = await close(live_stack, pid, "Inyo")
    assert inyo.closed and inyo.raw_count == 0 and inyo.sample_size == 0
    t = await until(live_stack, pid, decided, {}, {}, "decision", timeout=60)
    assert t.statutory.outcome == tally_pb2.OUTCOME_FAILS
    assert t.statutory.decided_by == "raw count" and "raw count" in t.statutory.explanation


async def test_the_method_changes_only_by_an_admin_before_filings_close(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    pid = await create(live_stack, 100, method=common_pb2.VERIFICATION_METHOD_FULL_COUNT)
    request = intake_pb2.SetVerificationMethodRequest(
        petition_id=pid, method=RS, sampling=common_pb2.SamplingRules(sample_percent="5"),
        reason="SoS directive 2017-12")
    async with h.channel(live_stack, "intake") as ch:
        ops = await access_pb2_grpc.AccessServiceStub(ch).CreateToken(
            access_pb2.CreateTokenRequest(role=access_pb2.ROLE_OPS, label="test"), timeout=10)
    async with h.channel(live_stack, "intake", ops.token) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await intake_pb2_grpc.IntakeServiceStub(ch).SetVerificationMethod(request, timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with h.channel(live_stack, "intake") as ch:
        stub = intake_pb2_grpc.IntakeServiceStub(ch)
        p = await stub.SetVerificationMethod(request, timeout=10)
        assert p.method == RS and p.sampling.sample_percent == "5"
        path, county = synth_data.batches[0]
        await h.submit(live_stack, path, pid, county)
        await close(live_stack, pid, county)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.SetVerificationMethod(intake_pb2.SetVerificationMethodRequest(
                petition_id=pid, method=common_pb2.VERIFICATION_METHOD_FULL_COUNT,
                reason="too late"), timeout=10)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    conn = await asyncpg.connect(live_stack.database_url)
    try:
        entry = await conn.fetchrow("SELECT actor, detail FROM audit.entries "
                                    "WHERE action = 'petition.method-changed' AND subject = $1", pid)
    finally:
        await conn.close()
    assert entry is not None and entry["actor"].startswith("tk_")
    detail = json.loads(entry["detail"])
    assert detail["from"]["method"] == "full-count" and detail["to"]["sample_percent"] == "5"
    assert detail["reason"] == "SoS directive 2017-12"


async def test_the_filing_deadline_closes_every_county(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput, tmp_path: Path
) -> None:
    pid = h.new_petition_id()
    closes = datetime.now(UTC) + timedelta(seconds=10)  # time enough to submit two batches
    async with h.channel(live_stack, "intake") as ch:
        await intake_pb2_grpc.IntakeServiceStub(ch).CreatePetition(
            intake_pb2.CreatePetitionRequest(
                petition_id=pid, title="deadline", required_signatures=50, deadline="2017-07-25",
                method=RS, filing_closes_at=closes.isoformat()), timeout=30)
    (path, county), (path2, county2) = synth_data.batches[0], synth_data.batches[1]
    await h.submit(live_stack, path, pid, county)
    await h.submit(live_stack, path2, pid, county2)
    end = time.monotonic() + 60
    while True:
        async with h.channel(live_stack, "intake") as ch:
            listed = await intake_pb2_grpc.IntakeServiceStub(ch).ListCounties(
                intake_pb2.ListCountiesRequest(petition_id=pid), timeout=10)
        if listed.counties and all(c.closed for c in listed.counties):
            break
        assert time.monotonic() < end, "the filing deadline closed no county"
        await asyncio.sleep(0.5)
    assert {c.county for c in listed.counties} == {county, county2}
    assert all(c.closed_by == "system:intake (filing deadline)" and c.seed
               and c.sample_size == c.raw_count for c in listed.counties)
    late = tmp_path / "late.csv"
    late.write_text("".join(path.read_text().splitlines(keepends=True)[:5]))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await h.submit(live_stack, late, pid, synth_data.batches[2][1])
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "closed" in (e.value.details() or "")


async def test_killed_intake_and_tally_mid_process_end_as_a_plain_full_count(
    live_stack: stack.StackState, loaded_roll: int, filing_data: SynthOutput
) -> None:
    """SIGKILL tally while the samples are verified and intake while the full count is being
    released; once restarted the petition ends where an undisturbed full-count petition of
    the same filing ends, signature for signature ("earliest wins" does not depend on the
    order in which the sample and the rest arrive)."""
    truth = truth_of(filing_data)
    valid_truth = sum(1 for r in truth.values() if r["expected_status"] == "VALID")
    required = int(valid_truth / 0.975)  # projection about 97.5 %: in the band; count below
    plain = await create(live_stack, required, method=common_pb2.VERIFICATION_METHOD_FULL_COUNT)
    sampled = await create(live_stack, required, minimum=1000)
    files = await submit_all(live_stack, filing_data, plain)
    files.update(await submit_all(live_stack, filing_data, sampled))
    counties = sorted({c for _, c in filing_data.batches})

    for county in counties:
        await close(live_stack, sampled, county)
    await asyncio.sleep(0.3)
    stack.kill_pid(live_stack.services["tally"].pid)
    await asyncio.sleep(1.0)
    stack.spawn_service(live_stack, "tally", ports=live_stack.services["tally"])
    await asyncio.to_thread(stack.wait_healthy, live_stack, ("tally",))

    t = await until(live_stack, sampled, lambda t: t.statutory.full_count and
                    t.total.not_sampled > 0, truth, files, "full count under way")
    assert t.statutory.sample_outcome == tally_pb2.OUTCOME_FULL_COUNT, t.statutory.explanation
    stack.kill_pid(live_stack.services["intake"].pid)
    await asyncio.sleep(1.0)
    stack.spawn_service(live_stack, "intake", {"FULL_COUNT_IN_FLIGHT": "100"},
                        ports=live_stack.services["intake"])
    await asyncio.to_thread(stack.wait_healthy, live_stack, ("intake",))

    raw = len(truth)
    done = await until(live_stack, sampled, lambda t: decided(t) and t.total.verified == raw
                       and t.total.review == 0, truth, files, "end of the full count", timeout=300)
    assert done.statutory.outcome == tally_pb2.OUTCOME_FAILS, done.statutory.explanation
    assert done.statutory.decided_by == "full count" and not done.statutory.stopped_at_requirement
    reference = await until(live_stack, plain, lambda t: t.total.pending == 0
                            and t.total.review == 0 and t.total.verified == raw,
                            truth, files, "plain full count")
    assert h.reason_counts(done) == h.reason_counts(reference)

    def by_line(rows: Rows) -> Rows:
        return {(files[b], line): v for (b, line), v in rows.items()}

    assert by_line(await h.results_by_batch(live_stack, sampled)) == \
        by_line(await h.results_by_batch(live_stack, plain))


async def test_a_random_sample_petition_turned_full_count_sends_its_held_signatures(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    pid = await create(live_stack, 100)
    path, county = synth_data.batches[0]
    receipt = await h.submit(live_stack, path, pid, county)
    held = await h.tally(live_stack, pid)
    assert held.total.not_sampled == receipt.signatures_accepted and held.total.verified == 0
    async with h.channel(live_stack, "intake") as ch:
        p = await intake_pb2_grpc.IntakeServiceStub(ch).SetVerificationMethod(
            intake_pb2.SetVerificationMethodRequest(
                petition_id=pid, method=common_pb2.VERIFICATION_METHOD_FULL_COUNT,
                reason="the county asked for a full count"), timeout=30)
    assert p.method == common_pb2.VERIFICATION_METHOD_FULL_COUNT
    t = await h.wait_verified(live_stack, pid, receipt.signatures_accepted)
    assert t.total.not_sampled == 0 and t.total.verified == receipt.signatures_accepted
