"""``sigverify demo`` (``make run``): the main job end to end on synthetic data with known truth.

Generates a voter roll and county batches, starts the stack unless one is running, loads
the roll, creates the petition, submits the batches through intake as clerks would, waits
for every signature to be verified, prints the tally and how it compares with the truth.

Then the same filing goes through California's statutory process (``--no-sample`` skips
it): a random-sample petition, every county closed (its sample drawn with a recorded
seed), the projection and its decision, and the full count when the projection lands in
the band. The few sampled signatures the matcher sends to human review are resolved as the
truth file says, standing in for a reviewer. Finally it stops what it started.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import time
from pathlib import Path

import grpc

from sigverify.common.v1 import common_pb2
from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify.review.v1 import review_pb2, review_pb2_grpc
from sigverify.tally.v1 import tally_pb2
from sigverify_cli import client, stack
from sigverify_cli.client import Endpoints
from sigverify_cli.main import console, err, export_results, print_tally, roll_load, wait_done
from sigverify_cli.synth import SynthOutput, SynthSpec, compare, format_accuracy, generate
from sigverify_common.convert import reason_to_pb
from sigverify_common.vocab import Reason

SUBMIT_CONCURRENCY = 4


async def _submit_all(ep: Endpoints, batches: tuple[tuple[Path, str], ...], petition: str
                      ) -> dict[str, str]:
    """Submit every batch (a few at a time, as several clerks would); batch id -> file name."""
    sem = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    files: dict[str, str] = {}
    rejected = 0
    async with ep.channel(ep.intake) as ch:
        async def one(path: Path, county: str) -> None:
            nonlocal rejected
            async with sem:
                r = await client.submit_batch(ch, path, petition, county)
            files[r.batch_id] = path.name
            rejected += len(r.rejected)
        await asyncio.gather(*(one(p, c) for p, c in batches))
    console.print(f"submitted {len(batches)} batches ({rejected} unreadable rows rejected)")
    return files


async def _run(args: argparse.Namespace, ep: Endpoints, workdir: Path) -> int:
    spec = SynthSpec(voters=args.voters, signatures=args.signatures, seed=args.seed)
    # A petition of its own per run, so a re-run on a kept database starts from zero.
    petition_id = f"{spec.petition_id}-{time.strftime('%Y%m%d%H%M%S')}"
    t0 = time.perf_counter()
    data = generate(workdir / "data", spec)
    console.print(f"generated {spec.voters:,} voters and {spec.signatures:,} signatures in "
                  f"{len(data.batches)} batches ({time.perf_counter() - t0:.1f}s)")
    await roll_load(ep, data.roll_csv)
    async with ep.channel(ep.intake) as ch:
        await intake_pb2_grpc.IntakeServiceStub(ch).CreatePetition(
            intake_pb2.CreatePetitionRequest(
                petition_id=petition_id, title="California independence (demo)",
                required_signatures=585_407 * spec.signatures // 900_000 or 1,
                deadline=spec.deadline.isoformat(), accept_online=spec.accept_online),
            timeout=30)
    started = time.perf_counter()
    files = await _submit_all(ep, data.batches, petition_id)
    submitted = time.perf_counter() - started
    tally = await wait_done(ep, petition_id, timeout=1200)
    elapsed = time.perf_counter() - started
    print_tally(tally)
    out = workdir / "results.csv"
    await export_results(ep, petition_id, out)
    results: dict[tuple[str, int], tuple[str, str]] = {}
    with out.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            results[(files[row["batch_id"]], int(row["line"]))] = (row["status"], row["reason"])
    acc = compare(data.truth_csv, results)
    console.print(format_accuracy(acc))
    n = tally.total.received
    console.print(f"[bold]{n:,} signatures verified in {elapsed:.1f}s "
                  f"({n / elapsed:,.0f} signatures/s end to end; submission took "
                  f"{submitted:.1f}s)[/bold]; results in {out}")
    if getattr(args, "sample", True):
        await _statutory(ep, data, f"{petition_id}-sample", tally.required_signatures)
    return 0


async def resolve_reviews_from_truth(channel: grpc.aio.Channel, petition: str,
                                     truth: dict[tuple[str, int], dict[str, str]],
                                     files: dict[str, str], reviewer: str = "demo") -> int:
    """Resolve the petition's pending reviews as the truth file says (a stand-in for a
    reviewer, in the demo and the tests); ``files`` maps batch ids to file names."""
    stub = review_pb2_grpc.ReviewServiceStub(channel)
    listed = await stub.ListPending(review_pb2.ListPendingRequest(petition_id=petition), timeout=30)
    for item in listed.items:
        t = truth[(files[item.batch_id], item.line)]
        request = review_pb2.ResolveReviewRequest(signature_id=item.signature_id,
                                                  reviewer=reviewer, note="as the truth file says")
        if t["voter_id"] and t["expected_reason"] not in ("NOT_REGISTERED", "INCOMPLETE"):
            request.voter_id = t["voter_id"]
        else:
            request.invalid_reason = reason_to_pb(Reason.NOT_REGISTERED)
        await stub.ResolveReview(request, timeout=30)
    return len(listed.items)


async def _statutory(ep: Endpoints, data: SynthOutput, petition_id: str, required: int) -> None:
    console.rule("[bold]The same filing by California's random sample (EC 9030)")
    async with ep.channel(ep.intake) as ch:
        stub = intake_pb2_grpc.IntakeServiceStub(ch)
        await stub.CreatePetition(intake_pb2.CreatePetitionRequest(
            petition_id=petition_id, title="California independence (random sample demo)",
            required_signatures=required, deadline=data.spec.deadline.isoformat(),
            accept_online=data.spec.accept_online,
            method=common_pb2.VERIFICATION_METHOD_RANDOM_SAMPLE,
            counties=list(data.spec.counties)), timeout=30)
        started = time.perf_counter()
        files = await _submit_all(ep, data.batches, petition_id)
        counties = sorted({c for _, c in data.batches})
        for county in counties:
            f = await stub.CloseCounty(intake_pb2.CloseCountyRequest(
                petition_id=petition_id, county=county), timeout=120)
            console.print(f"closed {county}: raw {f.raw_count:,}, sample {f.sample_size:,} "
                          f"(seed {f.seed})")
    with data.truth_csv.open(newline="", encoding="utf-8") as fh:
        truth = {(r["batch_file"], int(r["line"])): r for r in csv.DictReader(fh)}
    reviewed = 0
    end = time.monotonic() + 1200
    async with ep.channel(ep.tally) as ch:
        while True:
            t = await client.get_tally(ch, petition_id)
            s = t.statutory
            if s.outcome in (tally_pb2.OUTCOME_FAILS, tally_pb2.OUTCOME_QUALIFIES) \
                    and t.total.pending == 0 and t.total.review == 0:
                break
            if time.monotonic() > end:
                raise TimeoutError(f"no decision on {petition_id}: {s.explanation}")
            if t.total.review:
                async with ep.channel(ep.matching) as matching:
                    reviewed += await resolve_reviews_from_truth(matching, petition_id, truth, files)
            await asyncio.sleep(0.5)
    print_tally(t)
    console.print(f"decided in {time.perf_counter() - started:.1f}s after submission; "
                  f"{t.total.verified:,} of {t.total.received:,} signatures verified, "
                  f"{reviewed} review(s) resolved from the truth file")


def run_demo(args: argparse.Namespace) -> int:
    home = client.home()
    workdir = home / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    state = stack.StackState.load(home)
    started_here = False
    if state is None or not all(stack.pid_alive(p.pid) for p in state.services.values()):
        if state is not None:
            stack.down(home, lambda m: None)
        err.print("[dim]starting the stack (embedded defaults)[/dim]")
        stack.up(home, os.environ, lambda m: err.print(f"[dim]{m}[/dim]"))
        started_here = True
    try:
        return asyncio.run(_run(args, Endpoints.discover(), workdir))
    finally:
        if started_here and not args.keep_up:
            stack.down(home, lambda m: err.print(f"[dim]{m}[/dim]"))
