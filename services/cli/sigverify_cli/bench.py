"""``sigverify bench`` (``make bench``): throughput, memory and accuracy figures, printed.

Figures are measured in one process on the same generated data, and set against baselines
run in the same process: the roll load against a plain COPY of the same file, the
matcher against a plain single-process rapidfuzz matcher (no blocking), and the pipeline
with one matcher replica against two. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from sigverify.common.v1 import common_pb2
from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify.matching.v1 import matching_pb2, matching_pb2_grpc
from sigverify_cli import client, stack
from sigverify_cli.client import Endpoints
from sigverify_cli.main import console, err, export_results, wait_done
from sigverify_cli.synth import SynthOutput, SynthSpec, compare, format_accuracy, generate
from sigverify_dedupe.domain import Rules
from sigverify_matching.baseline import BaselineMatcher
from sigverify_matching.domain import MatchConfig
from sigverify_matching.evaluate import decide_rows, read_batches, read_roll_csv
from sigverify_matching.index import CandidateIndex
from sigverify_matching.roll import load_roll, plain_copy

BASELINE_SAMPLE = 400


@dataclass
class Figures:
    lines: list[tuple[str, str]]

    def add(self, name: str, value: str) -> None:
        self.lines.append((name, value))
        console.print(f"  {name:<52} {value}")


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a live process, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _warm(addr: str, county: str) -> None:
    """Make a matcher build its index before the clock starts (MatchSignature waits for it)."""
    async with Endpoints.discover().channel(addr) as ch:
        await matching_pb2_grpc.MatchingServiceStub(ch).MatchSignature(
            matching_pb2.MatchSignatureRequest(printed=common_pb2.PrintedSignature(
                first_name="WARM", last_name="UP", street="1 MAIN ST", county=county)),
            timeout=900)


async def _pipeline(ep: Endpoints, data: SynthOutput, petition: str, concurrency: int = 4
                    ) -> tuple[float, float, dict[str, str], int]:
    """Submit every batch and wait; returns (seconds to submit, seconds to final tally, files)."""
    async with ep.channel(ep.intake) as ch:
        await intake_pb2_grpc.IntakeServiceStub(ch).CreatePetition(
            intake_pb2.CreatePetitionRequest(
                petition_id=petition, title="bench", required_signatures=585_407,
                deadline=data.spec.deadline.isoformat(),
                accept_online=data.spec.accept_online), timeout=30)
        sem = asyncio.Semaphore(concurrency)
        files: dict[str, str] = {}
        started = time.perf_counter()

        async def one(path: Path, county: str) -> None:
            async with sem:
                r = await client.submit_batch(ch, path, petition, county)
            files[r.batch_id] = path.name

        await asyncio.gather(*(one(p, c) for p, c in data.batches))
        submitted = time.perf_counter() - started
    tally = await wait_done(ep, petition, timeout=3600)
    return submitted, time.perf_counter() - started, files, tally.total.received


async def _matcher_rate(pool: asyncpg.Pool, petition: str) -> float:
    row = await pool.fetchrow(
        "SELECT count(*) AS n, extract(epoch FROM max(decided_at) - min(decided_at)) AS s "
        "FROM matching.decisions WHERE petition_id = $1", petition)
    assert row is not None
    return float(row["n"]) / max(float(row["s"] or 0), 1e-9)


async def _run(args: argparse.Namespace, home: Path, state: stack.StackState) -> int:
    fig = Figures([])
    spec = SynthSpec(voters=args.voters, signatures=args.signatures, seed=args.seed,
                     batch_size=args.batch_size)
    t = time.perf_counter()
    data = generate(home / "data", spec)
    console.print(f"[bold]SigVerify bench[/bold]: {spec.voters:,} voters, {spec.signatures:,} "
                  f"signatures in {len(data.batches)} batches (generated in "
                  f"{time.perf_counter() - t:.0f}s); {os.cpu_count()} cores")
    ep = Endpoints.discover()
    pool = await asyncpg.create_pool(state.database_url, min_size=1, max_size=4)
    try:
        console.print("[bold]roll load[/bold]")
        t = time.perf_counter()
        rows = await plain_copy(pool, data.roll_csv)
        plain = rows / (time.perf_counter() - t)
        t = time.perf_counter()
        loaded = await load_roll(pool, data.roll_csv)
        ours = loaded.rows / (time.perf_counter() - t)
        fig.add("roll load (validate, normalise, COPY in chunks)", f"{ours:,.0f} rows/s")
        fig.add("plain COPY of the same file (baseline)", f"{plain:,.0f} rows/s")
        fig.add("roll load / plain COPY", f"{ours / plain:.2f}x")

        console.print("[bold]matcher, in this process[/bold]")
        rss0 = rss_mib()
        t = time.perf_counter()
        voters = list(read_roll_csv(data.roll_csv))
        index = await asyncio.to_thread(CandidateIndex.build, voters)
        build = time.perf_counter() - t
        fig.add("candidate index build", f"{build:.1f}s ({len(index) / build:,.0f} voters/s)")
        fig.add("memory of roll + index in this process",
                f"{rss_mib() - rss0:,.0f} MiB (~{(rss_mib() - rss0) * 1e6 / len(index):,.0f} "
                "MiB per million voters)")
        batch_rows = read_batches(data)
        complete = [r.signature for r in batch_rows if r.complete]
        t = time.perf_counter()
        decided = await asyncio.to_thread(decide_rows, index, batch_rows, MatchConfig(),
                                          Rules(accept_online=spec.accept_online))
        ours_rate = len(complete) / (time.perf_counter() - t)
        fig.add("blocked matcher (one thread)", f"{ours_rate:,.0f} signatures/s")
        baseline = await asyncio.to_thread(BaselineMatcher.build, voters)
        sample = complete[:: max(1, len(complete) // BASELINE_SAMPLE)][:BASELINE_SAMPLE]
        t = time.perf_counter()
        for sig in sample:
            baseline.match(sig)
        base_rate = len(sample) / (time.perf_counter() - t)
        fig.add("plain rapidfuzz matcher, no blocking (baseline)",
                f"{base_rate:,.1f} signatures/s (on {len(sample)})")
        fig.add("blocked matcher / baseline", f"{ours_rate / base_rate:,.1f}x")
        acc = compare(data.truth_csv, decided)
        del index, baseline, voters

        console.print("[bold]pipeline, one matcher replica[/bold]")
        county = spec.counties[0]
        await _warm(ep.matching, county)
        # This run's own petition: the bench's database is kept between runs.
        pid1 = f"bench-1-{int(time.time())}"
        sub1, e2e1, files, n1 = await _pipeline(ep, data, pid1)
        m1 = await _matcher_rate(pool, pid1)
        fig.add("end to end, first submit to final tally (1 replica)",
                f"{n1 / e2e1:,.0f} signatures/s ({n1:,} in {e2e1:.1f}s; submit {sub1:.1f}s)")
        fig.add("matching service rate in the pipeline (1 replica)", f"{m1:,.0f} signatures/s")
        fig.add("end to end / baseline matcher", f"{n1 / e2e1 / base_rate:,.1f}x")
        out = home / "results.csv"
        await export_results(ep, pid1, out)
        got: dict[tuple[str, int], tuple[str, str]] = {}
        with out.open(newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                got[(files[r["batch_id"]], int(r["line"]))] = (r["status"], r["reason"])
        pipeline_acc = compare(data.truth_csv, got)

        console.print("[bold]pipeline, two matcher replicas[/bold]")
        extra = stack.spawn_service(state, "matching", instance="matching-2")
        await asyncio.to_thread(stack.wait_healthy, state, ("matching-2",), 300)
        await _warm(f"127.0.0.1:{extra.grpc_port}", county)
        await asyncio.sleep(15)  # let the consumer group settle on two members
        sub2, e2e2, _, n2 = await _pipeline(ep, data, f"bench-2-{int(time.time())}")
        fig.add("end to end (2 replicas)",
                f"{n2 / e2e2:,.0f} signatures/s ({n2:,} in {e2e2:.1f}s; submit {sub2:.1f}s)")
        fig.add("2 replicas / 1 replica", f"{(n2 / e2e2) / (n1 / e2e1):.2f}x")

        console.print("[bold]peak memory per service (VmHWM)[/bold]")
        for name, proc in state.services.items():
            fig.add(f"{name}", f"{peak_rss_mib(proc.pid):,.0f} MiB")

        console.print("[bold]accuracy[/bold] (in-process matcher + duplicate rules)")
        console.print(format_accuracy(acc))
        console.print("[bold]accuracy[/bold] (through the pipeline, 1 replica)")
        console.print(format_accuracy(pipeline_acc))
        rates = pipeline_acc.rates()
        fig.add("false accept / false reject / review (pipeline)",
                f"{rates['false_accept_rate']:.3%} / {rates['false_reject_rate']:.3%} / "
                f"{rates['review_rate']:.3%} (bars 0.1% / 0.5% / 3%)")
    finally:
        await pool.close()
    return 0


def run_bench(args: argparse.Namespace) -> int:
    home = client.home() / "bench"
    home.mkdir(parents=True, exist_ok=True)
    stack.down(home, lambda m: None)
    os.environ["SIGVERIFY_HOME"] = str(home)
    err.print("[dim]starting a stack for the bench[/dim]")
    state = stack.up(home, os.environ, lambda m: err.print(f"[dim]{m}[/dim]"))
    try:
        return asyncio.run(_run(args, home, state))
    finally:
        stack.down(home, lambda m: err.print(f"[dim]{m}[/dim]"))
