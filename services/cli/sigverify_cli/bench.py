"""``sigverify bench`` (``make bench``): throughput, memory and accuracy figures, printed.

Nothing here asserts a time or a rate: the figures are printed, with the accuracy targets
beside the error rates. Four parts, on one generated data set (``eval-data make synth``;
a roll above ``SHARD_ABOVE`` voters is generated in shards of whole counties, all 58 of
California's, by the bounded-memory generator, and kept between runs):

1. **The matcher in this process** (``sigverify_matching.engine``, as every replica runs
   it): the columnar index built by streaming the roll CSV into ``IndexBuilder`` in chunks
   (no Python object per voter is kept: only the builder's own columns), its saved size
   (``VoterIndex.dumps``), the load time of the saved arrays and the resident memory they
   take, measured in a fresh process; the model's training time (``engine.train`` on the
   last ``TRAIN_MAX`` signatures, as a replica learns it); the match rate of
   ``match_batch`` + ``results()`` in batches of ``--batch-size``, on one thread and on
   every core (one process with rapidfuzz's threads, threads over batches, processes over
   batches: each measured), beside the plain blocked rapidfuzz matcher of
   ``sigverify_matching.baseline`` run in this process on (a sample of) the same
   signatures, and the ratio.
2. **Accuracy in process** (``sigverify_matching.evaluate``'s rules: INCOMPLETE rows,
   duplicates resolved as the dedupe service does): on this run's data; unless
   ``--skip-accuracy``, on the hostile profile and on FEBRL 1-3 too, each written to a
   temporary folder by ``evaldata.write_dataset``. False accepts (% of all), false rejects
   (% of valid), review (% of all), precision/recall/F1 of the signature -> voter links.
3. **The pipeline** (unless ``--skip-pipeline``): a local stack; the roll loaded through
   the ``LoadRoll`` RPC (what ``sigverify roll load`` does; rows/s up to the last row
   COPYed, then the time until the replica has built and saved the index and the version
   is active) beside a plain COPY of the same file; a petition, every batch submitted, the
   time from the first submit to the final tally with one matcher replica (the first
   petition of a roll version waits for its match model to be learned; a second petition
   is timed with the model in place), then a third with two replicas; each service's peak
   memory (VmHWM); the accuracy of each petition's exported results.

Timings on a shared machine vary from run to run; small runs (``--voters 20000``) are
dominated by fixed costs (first-use caches, process start), so their per-million figures
are extrapolations.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import fcntl
import functools
import gc
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg

from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify.matching.v1 import matching_pb2, matching_pb2_grpc
from sigverify_cli import client, evaldata, stack
from sigverify_cli.client import Endpoints
from sigverify_cli.evaldata import EvalData
from sigverify_cli.scoring import Accuracy, compare, read_results_csv
from sigverify_cli.synth import ROLL_COLUMNS, SynthOutput, SynthSpec
from sigverify_common import heap
from sigverify_common.vocab import Decision, canonical_county
from sigverify_dedupe.domain import Rules
from sigverify_matching import engine, fs
from sigverify_matching.baseline import BaselineMatcher, BaselineRow, block_key
from sigverify_matching.columnar import RollRow, VoterIndex, build_parallel
from sigverify_matching.domain import MatchConfig, MatchResult, SignatureInput
from sigverify_matching.evaluate import BatchRow, EngineMatcher, decide_rows, read_batches
from sigverify_matching.roll import open_roll, plain_copy

#: Rolls larger than this are generated in shards (all 58 counties), ``SHARD_VOTERS`` each.
SHARD_ABOVE = 2_000_000
SHARD_VOTERS = 2_000_000
#: Roll rows per ``IndexBuilder.add`` (what the service reads per round trip, too).
BUILD_CHUNK = 50_000
#: Signatures the model learns from (the service's MATCH_TRAIN_MAX default).
TRAIN_MAX = 20_000
#: Signatures the baseline matches (its rate depends on its blocks' sizes, not the roll's).
BASELINE_SAMPLE = 20_000
#: The hostile set is generated at the run's size up to this many voters.
HOSTILE_MAX_VOTERS = 1_000_000
FEBRL_SETS = ("febrl1", "febrl2", "febrl3")
#: How long the roll load may wait for the replica to build the index (a state's roll).
ACTIVATION_SECONDS = 4 * 3600.0
#: The accuracy targets (issue 3): false accept of all, false reject of valid, review of all.
TARGET_FA, TARGET_FR, TARGET_REVIEW, TARGET_F1 = 0.001, 0.005, 0.03, 0.999


def _console() -> Any:
    from sigverify_cli.main import console
    return console


def say(text: str) -> None:
    _console().print(text, highlight=False, soft_wrap=True)


def figure(name: str, value: str) -> None:
    _console().print(f"  {name:<62} {value}", highlight=False, markup=False, soft_wrap=True)


def _proc_kib(key: str, pid: int | str = "self") -> int:
    """A memory line of /proc/<pid>/status (VmRSS, VmHWM) in KiB; -1 when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def _proc_kib_meminfo(key: str) -> int:
    """A line of /proc/meminfo (MemAvailable) in KiB; a large number when unreadable."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 1 << 50


def _cpu_seconds(pid: int | str, children: bool = False) -> float:
    """User + system CPU seconds of a process (and of its reaped children); 0 when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def cpu_by_process(state: stack.StackState) -> dict[str, float]:
    """CPU seconds used so far by each service, the broker, the embedded PostgreSQL (the
    server, its live backends and those that have exited) and this process (the client that
    submits and waits)."""
    out = {name: _cpu_seconds(proc.pid) for name, proc in state.services.items()}
    out["bench client"] = _cpu_seconds("self")
    if state.broker_pid:
        out["broker"] = _cpu_seconds(state.broker_pid)
    if state.pg_data:
        try:
            postmaster = int((Path(state.pg_data) / "postmaster.pid").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return out
        out["postgresql"] = _cpu_seconds(postmaster, children=True) + sum(
            _cpu_seconds(c) for c in _children(postmaster))
    return out


def gc_by_process(state: stack.StackState) -> dict[str, float]:
    """Seconds each service has spent in Python's garbage collector so far (its
    ``sigverify_gc_seconds_total``, read from its metrics port; absent when unreadable)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for name, proc in state.services.items():
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as reply:
                text = reply.read().decode()
        except OSError:
            continue
        out[name] = sum(sample.value for family in text_string_to_metric_families(text)
                        if family.name == "sigverify_gc_seconds"
                        for sample in family.samples if sample.name.endswith("_total"))
    return out


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB" if kib >= 0 else "n/a"


def _per_million(value: float, voters: int) -> float:
    return value * 1_000_000 / max(voters, 1)


# ------------------------------------------------------------------------------ the data

def _as_synth(data: EvalData) -> SynthOutput:
    """An evaluation data set as ``evaluate.read_batches`` reads one."""
    return SynthOutput(data.roll_csv, data.batches, data.truth_csv,
                       SynthSpec(deadline=data.deadline, accept_online=data.accept_online))


def _generator_digest() -> str:
    from sigverify_cli import hostile, synth
    h = hashlib.sha256()
    for module in (synth, hostile):
        h.update(Path(module.__file__ or "").read_bytes())
    return h.hexdigest()[:16]


def bench_data(out: Path, voters: int, signatures: int, seed: int, batch_size: int
               ) -> tuple[EvalData, bool]:
    """The run's synthetic data set (default profile) under ``out``; reused when a previous
    run made it with the same parameters and generator; (data, reused)."""
    sharded = voters > SHARD_ABOVE
    want = {"voters": voters, "signatures": signatures, "seed": seed, "batch_size": batch_size,
            "sharded": sharded, "generator": _generator_digest()}
    marker = out / "bench-data.json"
    if marker.exists() and json.loads(marker.read_text()) == want:
        spec = SynthSpec()
        with (out / "batches.csv").open(newline="", encoding="utf-8") as fh:
            batches = tuple((out / "batches" / r["batch_file"], r["county"])
                            for r in csv.DictReader(fh))
        return EvalData("synth", out / "roll.csv", batches, out / "truth.csv",
                        out / "batches.csv", spec.deadline, spec.accept_online, voters,
                        signatures), True
    shutil.rmtree(out, ignore_errors=True)
    data = evaldata.write_dataset("synth", out, voters=voters, signatures=signatures, seed=seed,
                                  batch_size=batch_size, california=sharded,
                                  shard_voters=SHARD_VOTERS if sharded else 0,
                                  workers=min(2, os.cpu_count() or 1))
    marker.write_text(json.dumps(want))
    return data, False


_NO_DATE = date.min


def roll_chunks(path: Path, chunk: int = BUILD_CHUNK) -> Iterator[list[RollRow]]:
    """The roll CSV as ``IndexBuilder`` rows, ``chunk`` at a time: fields stripped, dates
    parsed, county canonical, status upper case (as ``roll.read_roll`` gives them to the
    database the service builds from). Rows of the wrong width or with a bad date are
    skipped; the repeated-id check is not made (it would hold every voter id)."""
    dates: dict[str, date | None] = {"": None}
    counties: dict[str, str] = {}
    with open_roll(path) as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader)]
        at = [header.index(c) for c in ROLL_COLUMNS]
        width = len(header)
        rows: list[RollRow] = []
        for values in reader:
            if len(values) != width:
                continue
            (vid, first, middle, last, suffix, birth, street, unit, city, zip_, county, status,
             registered) = (values[i].strip() for i in at)
            try:
                days: list[date | None] = []
                for text in (birth, registered):
                    d = dates.get(text, _NO_DATE)
                    if d is _NO_DATE:
                        d = date.fromisoformat(text)
                        if len(dates) < 100_000:
                            dates[text] = d
                    days.append(d)
            except ValueError:
                continue
            canonical = counties.get(county)
            if canonical is None:
                canonical = counties[county] = canonical_county(county)
            rows.append((vid, first, middle, last, suffix, days[0], street, unit, city, zip_,
                         canonical, status.upper(), days[1]))
            if len(rows) >= chunk:
                yield rows
                rows = []
        if rows:
            yield rows


def build_index(path: Path, version: int = 1, workers: int = 1) -> VoterIndex:
    """The index of the roll CSV, its rows coded by ``workers`` processes (as the service's
    build does with MATCH_BUILD_WORKERS)."""
    return build_parallel(roll_chunks(path), version, workers)


def baseline_rows(path: Path) -> Iterator[BaselineRow]:
    with open_roll(path) as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader)]
        i_id, i_first, i_last, i_street, i_zip = (
            header.index(c) for c in ("voter_id", "first_name", "last_name", "street", "zip"))
        for v in reader:
            if len(v) == len(header):
                yield (v[i_id].strip(), v[i_first].strip(), v[i_last].strip(),
                       v[i_street].strip(), v[i_zip].strip())


# -------------------------------------------------------------------------- the matcher

#: One decision, compactly: (decision, reason, voter_id).
Compact = tuple[str, str, str]


def _compact(results: Sequence[MatchResult]) -> list[Compact]:
    return [(r.decision.value, r.reason.value, r.voter_id) for r in results]


def _chunks(sigs: Sequence[SignatureInput], size: int) -> list[list[SignatureInput]]:
    return [list(sigs[i: i + size]) for i in range(0, len(sigs), max(1, size))]


def match_all(index: VoterIndex, model: fs.Model, batches: Sequence[Sequence[SignatureInput]],
              config: MatchConfig) -> list[MatchResult]:
    """Every batch's results, as a replica makes them (candidates and their evidence
    included), kept without the candidates (a million signatures' would take gigabytes)."""
    out: list[MatchResult] = []
    for batch in batches:
        out += [MatchResult(r.decision, r.reason, r.voter_id, r.score, ())
                for r in engine.match_batch(index, model, batch, config).results()]
    return out


@dataclass
class Rate:
    how: str
    per_second: float
    same: bool = True  # decisions identical to the single-thread run's


_WORKER: dict[str, Any] = {}


def _worker_init(index_path: str, model_json: str, config: MatchConfig) -> None:
    engine.WORKERS = 1
    heap.tune()
    _WORKER["index"] = VoterIndex.loads(Path(index_path).read_bytes())
    _WORKER["model"] = fs.Model.from_json(model_json)
    _WORKER["config"] = config
    heap.settle()


def _worker_ready(warm: list[SignatureInput]) -> int:
    """Match ``warm`` (the index's derived tables and the name caches are made on first
    use; the parent's are warm from training), then hold the worker a moment so that every
    worker gets one."""
    _worker_match(warm)
    time.sleep(0.5)
    return os.getpid()


def _worker_match(batch: list[SignatureInput]) -> list[Compact]:
    return _compact(engine.match_batch(_WORKER["index"], _WORKER["model"], batch,
                                       _WORKER["config"]).results())


def _load_probe(index_path: str) -> tuple[float, int, int, int]:
    """In a fresh process: (seconds to load the saved index, resident KiB it added, peak KiB
    above the start while loading (the saved bytes included), voters)."""
    gc.collect()
    before = _proc_kib("VmRSS")
    started = time.perf_counter()
    data = Path(index_path).read_bytes()  # the file read counted: loads itself copies nothing
    index = VoterIndex.loads(data)
    seconds = time.perf_counter() - started
    del data
    gc.collect()
    after = _proc_kib("VmRSS")
    return seconds, after - before, _proc_kib("VmHWM") - before, len(index)


def _spawn_pool(workers: int, initializer: Callable[..., None] | None = None,
                initargs: tuple[Any, ...] = ()) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=initializer, initargs=initargs)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    got = fn()
    return got, time.perf_counter() - started


def two_core_rates(index: VoterIndex, index_path: Path, model: fs.Model,
                   batches: list[list[SignatureInput]], config: MatchConfig, cores: int,
                   reference: list[Compact]) -> list[Rate]:
    n = sum(len(b) for b in batches)
    rates: list[Rate] = []
    saved = engine.WORKERS
    try:
        engine.WORKERS = cores
        got, secs = _timed(lambda: _compact(match_all(index, model, batches, config)))
        rates.append(Rate(f"one process, rapidfuzz on {cores} threads", n / secs,
                          got == reference))
        engine.WORKERS = 1
        with ThreadPoolExecutor(cores) as threads:
            def threaded() -> list[Compact]:
                parts = threads.map(
                    lambda b: _compact(engine.match_batch(index, model, b, config).results()),
                    batches)
                return [x for part in parts for x in part]
            got, secs = _timed(threaded)
        rates.append(Rate(f"{cores} threads over batches", n / secs, got == reference))
    finally:
        engine.WORKERS = saved
    need = index.nbytes() * cores  # each worker: the saved bytes, which its arrays view
    if need > _proc_kib_meminfo("MemAvailable") * 1024:
        rates.append(Rate(f"{cores} processes over batches (not run: each would load the "
                          f"index, {need / 2**30:,.1f} GiB in all, more than is free)", 0.0))
        return rates
    with _spawn_pool(cores, _worker_init, (str(index_path), model.to_json(), config)) as procs:
        # Every worker started and its index loaded before the clock starts.
        for _ in range(10):
            pids = set(procs.map(_worker_ready, [batches[0][:500]] * cores))
            if len(pids) >= cores:
                break

        def pooled() -> list[Compact]:
            return [x for part in procs.map(_worker_match, batches) for x in part]
        got, secs = _timed(pooled)
    rates.append(Rate(f"{cores} processes over batches", n / secs, got == reference))
    return rates


# --------------------------------------------------------------------------------- accuracy

class _Answered:
    """A matcher whose answers are already known (``decide_rows`` asks once, in order)."""

    def __init__(self, results: list[MatchResult]) -> None:
        self.results = results

    def match_many(self, sigs: Sequence[SignatureInput], config: MatchConfig
                   ) -> list[MatchResult]:
        if len(sigs) != len(self.results):
            raise ValueError("the signatures are not those matched")
        return self.results


def score_results(data: EvalData, rows: list[BatchRow], results: list[MatchResult]
                  ) -> Accuracy:
    """Score the engine's results on ``rows`` (duplicates resolved), links included."""
    decided = decide_rows(_Answered(results), rows, MatchConfig(),
                          Rules(accept_online=data.accept_online))
    complete = [r for r in rows if r.complete]
    voters = {(r.batch_file, r.line): res.voter_id
              for r, res in zip(complete, results, strict=True)}
    return compare(data.truth_csv, {k: (status, reason, voters.get(k, ""))
                                    for k, (status, reason) in decided.items()})


def dataset_accuracy(data: EvalData, batch_size: int) -> Accuracy:
    """The engine in this process on a data set: index, model learned from its signatures,
    every signature matched, scored against its truth."""
    index = build_index(data.roll_csv)
    rows = read_batches(_as_synth(data))
    sigs = [r.signature for r in rows if r.complete]
    model = EngineMatcher.learn(index, sigs, TRAIN_MAX).model
    results = match_all(index, model, _chunks(sigs, batch_size), MatchConfig())
    return score_results(data, rows, results)


def _pct(x: float, target: float | None, digits: int = 3) -> str:
    mark = "!" if target is not None and x > target else " "
    return f"{x * 100:.{digits}f} %{mark}"


def accuracy_table(rows: list[tuple[str, EvalData | None, Accuracy]]) -> list[str]:
    head = (f"  {'data set':<22}{'voters':>11}{'signatures':>12}{'false accept':>15}"
            f"{'false reject':>15}{'review':>12}   {'links: precision / recall / F1'}")
    sub = (f"  {'':<22}{'':>11}{'':>12}{'% of all':>15}{'% of valid':>15}{'% of all':>12}")
    out = [head, sub]
    for name, data, acc in rows:
        r = acc.rates()
        li = acc.links
        links = "-" if li is None else (
            f"{li.precision:.4f} / {li.recall:.4f} / {li.f1:.4f}"
            + ("!" if name.startswith("FEBRL") and li.f1 < TARGET_F1 else ""))
        voters = f"{data.voters:,}" if data is not None else ""
        out.append(f"  {name:<22}{voters:>11}{acc.signatures:>12,}"
                   f"{_pct(r['false_accept_rate'], TARGET_FA):>15}"
                   f"{_pct(r['valid_rejected_rate'], TARGET_FR):>15}"
                   f"{_pct(r['review_rate'], TARGET_REVIEW, 2):>12}   {links}")
    out.append(f"  {'targets':<45}{'<= 0.1 %':>15}{'<= 0.5 %':>15}{'<= 3 %':>12}   "
               f"F1 >= {TARGET_F1} (FEBRL)")
    out.append("  (! marks a figure beyond its target)")
    return out


# -------------------------------------------------------------------------- in process

@dataclass
class InProcess:
    accuracy: list[tuple[str, EvalData | None, Accuracy]] = field(default_factory=list)
    #: The blocked rapidfuzz baseline's rate in this process (signatures/s), which the
    #: pipeline's rates are also given against: a measure of this machine's speed.
    baseline: float | None = None


def run_in_process(args: argparse.Namespace, data: EvalData, work: Path) -> InProcess:
    config = MatchConfig()
    cores = os.cpu_count() or 1
    say("[bold]matcher, in this process[/bold]")
    rss0 = _proc_kib("VmRSS")
    index, build = _timed(lambda: build_index(data.roll_csv, workers=cores))
    voters = len(index)
    figure(f"index build (CSV streamed into IndexBuilder, rows coded by {cores} processes)",
           f"{build:.1f} s ({voters / build:,.0f} voters/s; "
           f"{_per_million(build, voters):,.0f} s per million voters)")
    figure("  this process's resident memory after the build",
           f"+{_mib(_proc_kib('VmRSS') - rss0)} (peak {_mib(_proc_kib('VmHWM'))})")
    index_path = work / "index.bin"

    def write() -> int:
        n = 0
        with index_path.open("wb") as fh:
            for piece in index.chunks():
                n += fh.write(piece)
        return n

    size, dump_secs = _timed(write)
    figure("saved index (VoterIndex.chunks)",
           f"{size:,} bytes ({_per_million(size, voters) / 2**20:,.0f} MiB per million voters;"
           f" written in {dump_secs:.2f} s)")
    figure("  arrays in memory (VoterIndex.nbytes)",
           f"{index.nbytes():,} bytes ({_per_million(index.nbytes(), voters) / 2**20:,.0f} MiB"
           " per million voters)")
    with _spawn_pool(1) as probe:
        load_secs, added, peak, _ = probe.submit(_load_probe, str(index_path)).result()
    figure("load of the saved index (file read + VoterIndex.loads, fresh process)",
           f"{load_secs:.3f} s ({_per_million(load_secs, voters):.2f} s per million voters)")
    figure("  resident memory of the loaded index",
           f"{_mib(added)} ({_per_million(added, voters) / 1024:,.0f} MiB per million voters; "
           f"peak while loading +{_mib(peak)})")

    rows = read_batches(_as_synth(data))
    sigs = [r.signature for r in rows if r.complete]
    learned, train_secs = _timed(lambda: EngineMatcher.learn(index, sigs, TRAIN_MAX))
    model: fs.Model = learned.model
    t = model.trained
    figure("model training (engine.train: u from random pairs, m by EM)",
           f"{train_secs:.1f} s (on {min(len(sigs), TRAIN_MAX):,} signatures, "
           f"{t.get('u_pairs', 0):,} u pairs, {t.get('em_iterations', '?')} EM iterations)")
    # The garbage collector as a matcher replica runs with it (sigverify_common.heap): the
    # defaults' full collections walked the index's tables and the signatures over and over.
    heap.tune()
    figure("garbage collector as in the services",
           f"young threshold {heap.YOUNG_THRESHOLD:,}; {heap.settle():,} objects settled")

    batches = _chunks(sigs, args.batch_size)
    saved_workers = engine.WORKERS
    try:
        engine.WORKERS = 1
        results, secs = _timed(lambda: match_all(index, model, batches, config))
    finally:
        engine.WORKERS = saved_workers
    one = len(sigs) / secs
    figure(f"engine, one thread (match_batch + results, batches of {args.batch_size:,})",
           f"{one:,.0f} signatures/s ({len(sigs):,} in {secs:.1f} s)")
    reference = _compact(results)
    best = Rate("one thread", one)
    if cores > 1:
        for rate in two_core_rates(index, index_path, model, batches, config, cores, reference):
            if rate.per_second <= 0:
                figure(f"engine, {rate.how}", "-")
                continue
            figure(f"engine, {rate.how}",
                   f"{rate.per_second:,.0f} signatures/s ({rate.per_second / one:.2f}x one "
                   "thread)" + ("" if rate.same else "; decisions DIFFER from one thread's"))
            if rate.per_second > best.per_second:
                best = rate
        figure(f"engine, fastest on {cores} cores",
               best.how if best.how != "one thread" else "none faster than one thread")

    step = max(1, len(sigs) // BASELINE_SAMPLE)
    sample = sigs[::step][:BASELINE_SAMPLE]
    keep = {block_key(s.zip, s.last_name) for s in sample}
    baseline, base_build = _timed(lambda: BaselineMatcher.from_rows(
        baseline_rows(data.roll_csv), keep))
    got, base_secs = _timed(lambda: [baseline.match(s) for s in sample])
    base_rate = len(sample) / base_secs
    figure("baseline: blocked rapidfuzz (zip + last initial, WRatio >= 0.6)",
           f"{base_rate:,.0f} signatures/s (on {len(sample):,}; its {len(baseline):,} voters "
           f"of the blocks needed read in {base_build:.1f} s)")
    truth = _truth_voters(data.truth_csv)
    keys = [(r.batch_file, r.line) for r in rows if r.complete]
    sample_keys = keys[::step][:BASELINE_SAMPLE]
    made = [(k, v) for k, (v, _) in zip(sample_keys, got, strict=True) if v]
    correct = sum(1 for k, v in made if truth.get(k) == v)
    to_find = sum(1 for k in sample_keys if truth.get(k))
    eng = {k: r.voter_id if r.decision is not Decision.REVIEW else ""
           for k, r in zip(keys, results, strict=True)}
    eng_made = [(k, eng[k]) for k in sample_keys if eng[k]]
    eng_correct = sum(1 for k, v in eng_made if truth.get(k) == v)
    figure("  links on that sample: baseline precision / recall",
           f"{correct / max(len(made), 1):.4f} / {correct / max(to_find, 1):.4f}")
    figure("  links on that sample: engine precision / recall",
           f"{eng_correct / max(len(eng_made), 1):.4f} / {eng_correct / max(to_find, 1):.4f}"
           " (a review is no link)")
    figure("engine one thread / baseline", f"{one / base_rate:.2f}x")
    if best.per_second != one:
        figure(f"engine fastest ({best.how}) / baseline", f"{best.per_second / base_rate:.2f}x")
    figure("this process's peak resident memory so far", _mib(_proc_kib("VmHWM")))

    out = InProcess(baseline=base_rate)
    out.accuracy.append(("synth (this run)", data, score_results(data, rows, results)))
    index_path.unlink(missing_ok=True)
    return out


def _truth_voters(truth_csv: Path) -> dict[tuple[str, int], str]:
    """(batch file, line) -> the voter the truth links the row to ("" for none)."""
    with truth_csv.open(newline="", encoding="utf-8") as fh:
        return {(r["batch_file"], int(r["line"])): (r.get("voter_id") or "").strip()
                if r["expected_reason"] != "INCOMPLETE" else "" for r in csv.DictReader(fh)}


def run_accuracy(args: argparse.Namespace, results: InProcess, work: Path) -> None:
    hv = min(args.voters, HOSTILE_MAX_VOTERS)
    hs = min(max(1, args.signatures * hv // max(args.voters, 1)), hv // 2)
    sets: list[tuple[str, Callable[[Path], EvalData]]] = [
        ("hostile", lambda d: evaldata.write_dataset(
            "hostile", d, voters=hv, signatures=hs, seed=args.seed, batch_size=args.batch_size)),
    ]
    sets += [(kind, functools.partial(evaldata.write_dataset, kind)) for kind in FEBRL_SETS]
    for name, make in sets:
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-", dir=work) as tmp:
            started = time.perf_counter()
            data = make(Path(tmp))
            acc = dataset_accuracy(data, args.batch_size)
            label = name.upper().replace("FEBRL", "FEBRL ") if name.startswith("febrl") else name
            results.accuracy.append((label, data, acc))
            say(f"[dim]  {label}: {data.voters:,} voters, {data.signatures:,} signatures, "
                f"evaluated in {time.perf_counter() - started:.0f} s[/dim]")


# ---------------------------------------------------------------------------- the pipeline

async def _roll_load(ep: Endpoints, pool: asyncpg.Pool, path: Path) -> int:
    from sigverify_cli.main import upload_roll

    started = time.perf_counter()
    rows = await plain_copy(pool, path)
    plain = rows / (time.perf_counter() - started)
    copied = 0.0

    def on_progress(p: matching_pb2.RollProgress, sent: int) -> None:
        nonlocal copied
        if p.state == matching_pb2.ROLL_STATE_LOADING:
            copied = time.perf_counter()

    started = time.perf_counter()
    async with ep.channel(ep.matching) as ch:
        done = await upload_roll(ch, path, "", ACTIVATION_SECONDS, on_progress)
    total = time.perf_counter() - started
    loaded = max(copied - started, 1e-9)
    figure("roll load via LoadRoll (upload, validate, COPY)",
           f"{done.rows / loaded:,.0f} rows/s ({done.rows:,} rows in {loaded:.1f} s)")
    figure("plain COPY of the same file (baseline)", f"{plain:,.0f} rows/s")
    figure("LoadRoll / plain COPY", f"{done.rows / loaded / plain:.2f}x")
    meta = await pool.fetchrow("SELECT build_seconds, bytes FROM matching.roll_index_meta "
                               "WHERE version = $1", done.version)
    figure("until active (the replica builds and saves the index)",
           f"{total:.1f} s in all"
           + (f"; index built from the database in {meta['build_seconds']:.1f} s, "
              f"{meta['bytes']:,} bytes saved" if meta else ""))
    return int(done.version)


async def _pipeline(ep: Endpoints, data: EvalData, petition: str, concurrency: int = 4
                    ) -> tuple[float, float, dict[str, str], int]:
    """Submit every batch and wait for the final tally: (seconds to submit, seconds to the
    final tally, batch id -> file name, signatures received)."""
    from sigverify_cli.main import wait_done

    async with ep.channel(ep.intake) as ch:
        await intake_pb2_grpc.IntakeServiceStub(ch).CreatePetition(
            intake_pb2.CreatePetitionRequest(
                petition_id=petition, title="bench", required_signatures=585_407,
                deadline=data.deadline.isoformat(), accept_online=data.accept_online),
            timeout=30)
        sem = asyncio.Semaphore(concurrency)
        files: dict[str, str] = {}
        started = time.perf_counter()

        async def one(path: Path, county: str) -> None:
            async with sem:
                r = await client.submit_batch(ch, path, petition, county)
            files[r.batch_id] = path.name

        await asyncio.gather(*(one(p, c) for p, c in data.batches))
        submitted = time.perf_counter() - started
    tally = await wait_done(ep, petition, timeout=3600 * 4)
    return submitted, time.perf_counter() - started, files, tally.total.received


async def _matcher_rate(pool: asyncpg.Pool, petition: str) -> tuple[float, float]:
    """(decisions per second between the petition's first and last decision, that span)."""
    row = await pool.fetchrow(
        "SELECT count(*) AS n, extract(epoch FROM max(decided_at) - min(decided_at)) AS s "
        "FROM matching.decisions WHERE petition_id = $1", petition)
    assert row is not None
    span = float(row["s"] or 0)
    return float(row["n"]) / max(span, 1e-9), span


async def _models_since(pool: asyncpg.Pool, since: Any) -> str:
    rows = await pool.fetch(
        "SELECT model_id, (model->'trained'->>'seconds')::float8 AS s, "
        "(model->'trained'->>'cpu_seconds')::float8 AS cpu, signatures "
        "FROM matching.models WHERE trained_at >= $1 ORDER BY model_id", since)
    if not rows:
        return "none learned (the roll version's model was reused)"
    return "; ".join(f"model {r['model_id']} learned from {r['signatures']:,} signatures in "
                     f"{r['s'] or 0:.1f} s"
                     + (f" ({r['cpu']:.1f} s of CPU in its thread)" if r["cpu"] is not None
                        else "") for r in rows)


async def _wait_serving(ep: Endpoints, version: int, replicas: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    async with ep.channel(ep.matching) as ch:
        stub = matching_pb2_grpc.MatchingServiceStub(ch)
        while True:
            r = await stub.ListRolls(matching_pb2.ListRollsRequest(), timeout=30)
            if sum(1 for x in r.replicas if x.live and x.serving_version == version) >= replicas:
                return
            if time.monotonic() > end:
                raise stack.StackError(f"{replicas} matcher replicas do not serve roll version "
                                       f"{version} after {timeout:.0f}s")
            await asyncio.sleep(1.0)


async def _one_run(ep: Endpoints, pool: asyncpg.Pool, data: EvalData, label: str, tag: str,
                   work: Path, state: stack.StackState | None = None,
                   baseline: float | None = None) -> tuple[float, Accuracy]:
    since = await pool.fetchval("SELECT now()")
    petition = f"bench-{tag}-{int(time.time())}"  # the bench's database is kept between runs
    cpu0 = cpu_by_process(state) if state else {}
    gc0 = await asyncio.to_thread(gc_by_process, state) if state else {}
    submitted, elapsed, files, n = await _pipeline(ep, data, petition)
    cpu1 = cpu_by_process(state) if state else {}
    gc1 = await asyncio.to_thread(gc_by_process, state) if state else {}
    rate, span = await _matcher_rate(pool, petition)
    figure(f"first submit to final tally ({label})",
           f"{elapsed:.1f} s: {n / elapsed:,.0f} signatures/s end to end "
           f"({n:,} signatures; all submitted after {submitted:.1f} s)")
    if baseline:
        figure(f"  end to end / the in-process baseline ({label})",
               f"{n / elapsed / baseline:.2f}x (baseline {baseline:,.0f} signatures/s)")
    figure(f"  matching, first to last decision ({label})",
           f"{rate:,.0f} signatures/s over {span:.1f} s")
    if cpu1:
        used = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
        figure("  CPU per 1,000 signatures, by process",
               f"{sum(used.values()) * 1000 / max(n, 1):.2f} s in all: " + ", ".join(
                   f"{k} {v * 1000 / max(n, 1):.2f}"
                   for k, v in sorted(used.items(), key=lambda kv: -kv[1])))
    if gc1:
        figure("  of which Python's garbage collector, per 1,000 signatures",
               ", ".join(f"{k} {(gc1[k] - gc0.get(k, 0.0)) * 1000 / max(n, 1):.3f}"
                         for k in sorted(gc1)))
    figure("  match model", await _models_since(pool, since))
    out = work / f"results-{tag}.csv"
    from sigverify_cli.main import export_results
    await export_results(ep, petition, out)
    acc = compare(data.truth_csv, read_results_csv(out, files))
    out.unlink(missing_ok=True)
    return n / elapsed, acc


async def _run_pipeline(data: EvalData, state: stack.StackState, work: Path,
                        one_petition: bool = False, baseline: float | None = None
                        ) -> list[tuple[str, EvalData | None, Accuracy]]:
    ep = Endpoints.discover()
    pool = await asyncpg.create_pool(state.database_url, min_size=1, max_size=4)
    try:
        say("[bold]pipeline: roll load[/bold]")
        version = await _roll_load(ep, pool, data.roll_csv)
        say("[bold]pipeline: one matcher replica, first petition[/bold] (the roll version's "
            "match model is learned from its first signatures, while they wait)")
        _, acc0 = await _one_run(ep, pool, data, "1 replica, first", "0", work, state, baseline)
        if one_petition:
            _peaks(state)
            return [("pipeline, first", data, acc0)]
        say("[bold]pipeline: one matcher replica[/bold] (a new petition, the model in place)")
        e2e1, acc1 = await _one_run(ep, pool, data, "1 replica", "1", work, state, baseline)
        say("[bold]pipeline: two matcher replicas[/bold] (a new petition, the model in place)")
        stack.spawn_service(state, "matching", instance="matching-2")
        await asyncio.to_thread(stack.wait_healthy, state, ("matching-2",), 300)
        await _wait_serving(ep, version, 2, ACTIVATION_SECONDS)
        await asyncio.sleep(15)  # let the consumer group settle on two members
        e2e2, acc2 = await _one_run(ep, pool, data, "2 replicas", "2", work, state, baseline)
        figure("end to end, 2 replicas / 1 replica (model in place)", f"{e2e2 / e2e1:.2f}x")
        _peaks(state)
    finally:
        await pool.close()
    return [("pipeline, first", data, acc0), ("pipeline, 1 replica", data, acc1),
            ("pipeline, 2 replicas", data, acc2)]


def _peaks(state: stack.StackState) -> None:
    say("[bold]pipeline: peak memory per service (VmHWM)[/bold]")
    for name, proc in state.services.items():
        figure(name, _mib(_proc_kib("VmHWM", proc.pid)))
    if state.broker_pid:
        figure("broker (tansu)", _mib(_proc_kib("VmHWM", state.broker_pid)))


# ------------------------------------------------------------------------------------- run

@contextlib.contextmanager
def _alone(home: Path) -> Iterator[bool]:
    """An exclusive lock on ``<home>/bench.lock`` while the run lasts: True when this run has
    it, False when another bench holds it (released when this process ends, however)."""
    with (home / "bench.lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def run_bench(args: argparse.Namespace) -> int:
    """One bench at a time per home: a second would regenerate the first's data set under it
    and stop its stack."""
    from sigverify_cli.main import err

    home = client.home() / "bench"
    home.mkdir(parents=True, exist_ok=True)
    with _alone(home) as alone:
        if not alone:
            err.print(f"[red]another sigverify bench is running from {home}[/red] (its data set "
                      "and its stack are there); wait for it to finish, or give this one "
                      "another SIGVERIFY_HOME")
            return 1
        return _run_bench(args, home)


def _run_bench(args: argparse.Namespace, home: Path) -> int:
    skip_pipeline = bool(getattr(args, "skip_pipeline", False))
    skip_accuracy = bool(getattr(args, "skip_accuracy", False))
    work = home / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    started = time.perf_counter()
    data, reused = bench_data(home / "data", args.voters, args.signatures, args.seed,
                              args.batch_size)
    say(f"[bold]SigVerify bench[/bold]: {data.voters:,} voters, {data.signatures:,} signatures "
        f"in {len(data.batches)} batches of up to {args.batch_size:,} (seed {args.seed}; "
        + ("reused from an earlier run, same parameters and generator"
           if reused else f"generated in {time.perf_counter() - started:.0f} s")
        + f"); {os.cpu_count()} cores, Python {platform.python_version()}")
    try:
        results = (InProcess() if getattr(args, "skip_in_process", False)
                   else run_in_process(args, data, work))
        gc.collect()  # the index and the baseline go before anything else is built
        if not skip_accuracy:
            say("[bold]accuracy, in process[/bold] (hostile and FEBRL sets written to a "
                "temporary folder)")
            run_accuracy(args, results, work)
        if not skip_pipeline:
            results.accuracy += _with_stack(home, data, work,
                                            bool(getattr(args, "one_petition", False)),
                                            results.baseline)
        say("[bold]accuracy[/bold]")
        for line in accuracy_table(results.accuracy):
            _console().print(line, highlight=False, markup=False, soft_wrap=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _with_stack(home: Path, data: EvalData, work: Path, one_petition: bool = False,
                baseline: float | None = None) -> list[tuple[str, EvalData | None, Accuracy]]:
    from sigverify_cli.main import err

    stack.down(home, lambda m: None)
    # An empty database each run: an earlier run's petitions, roll versions and signatures
    # would change what this one measures (its first model learned from the last run's
    # 20,000 signatures, its invariant checks covering the last run's petitions).
    shutil.rmtree(home / "pg", ignore_errors=True)
    os.environ["SIGVERIFY_HOME"] = str(home)
    err.print("[dim]starting a stack for the bench[/dim]")
    state = stack.up(home, os.environ, lambda m: err.print(f"[dim]{m}[/dim]"))
    try:
        return asyncio.run(_run_pipeline(data, state, work, one_petition, baseline))
    finally:
        stack.down(home, lambda m: err.print(f"[dim]{m}[/dim]"))
