"""Tallies through the real stack: WatchTally updates, circulator flags, `sigverify report`
and `sigverify watch --once`."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sigverify.tally.v1 import tally_pb2, tally_pb2_grpc
from sigverify_cli import stack
from sigverify_cli.synth import SynthOutput
from tests.integration import helpers as h

pytestmark = pytest.mark.integration

BATCH_COLUMNS = ("line", "first_name", "middle_name", "last_name", "street", "unit", "city", "zip",
                 "signed_on", "circulator_id")
SIGNED_ON = "2017-07-01"


async def test_watch_tally_streams_updates_while_batches_are_processed(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    """One WatchTally call, opened before anything is submitted, sees each batch verified.

    The pipeline can verify a whole batch within the stream's 200 ms floor, so batches are
    submitted one at a time, each once the stream has shown the previous one verified.
    """
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid, required=400)
    updates: list[tally_pb2.Tally] = []

    async def watch() -> None:
        async with h.channel(live_stack, "tally") as ch:
            call = tally_pb2_grpc.TallyServiceStub(ch).WatchTally(
                tally_pb2.WatchTallyRequest(petition_id=pid, min_interval_ms=200), timeout=300)
            async for t in call:
                updates.append(t)

    async def seen(predicate: Callable[[tally_pb2.Tally], bool], what: str) -> None:
        async with asyncio.timeout(120):
            while not (updates and predicate(updates[-1])):
                if watcher.done():
                    watcher.result()
                    raise AssertionError(f"the stream ended before {what}")
                await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        await seen(lambda t: True, "the first message")
        total = 0
        for path, county in synth_data.batches:
            total += (await h.submit(live_stack, path, pid, county)).signatures_accepted
            await seen(lambda t, n=total: t.total.verified == n and t.total.pending == 0,
                       f"{total} signatures were verified")
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    verified = [t.total.verified for t in updates]
    assert updates[0].total.received == 0 and verified[0] == 0
    assert verified[-1] == total == synth_data.spec.signatures
    assert verified == sorted(verified)                          # counts only grow
    steps = sorted({v for v in verified if v > 0})
    assert len(steps) >= len(synth_data.batches), verified       # an update per batch at least
    assert all(t.petition_id == pid for t in updates)


def _roll_voters(roll_csv: Path, county: str, n: int) -> list[dict[str, str]]:
    with roll_csv.open(newline="", encoding="utf-8") as fh:
        voters = [v for v in csv.DictReader(fh)
                  if v["county"] == county and v["status"] == "ACTIVE" and not v["suffix"]
                  and v["registered_on"] < "2017-01-01"]
    assert len(voters) >= n
    return voters[:n]


def _invented(i: int) -> dict[str, str]:
    """Someone who is on no roll."""
    letters = "bcdfghjklmnpqrstvwxz"
    first = "Q" + "".join(letters[(i * 7 + k * 3) % 20] for k in range(5)) + "o"
    last = "X" + "".join(letters[(i * 11 + k * 5) % 20] for k in range(6)) + "ux"
    return {"first_name": first, "middle_name": "", "last_name": last,
            "street": f"{9000 + i} Nowhere Rd", "unit": "", "city": "Nowhere", "zip": "00001"}


def _write_batch(path: Path, rows: list[tuple[dict[str, str], str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(BATCH_COLUMNS)
        for line, (p, circ) in enumerate(rows, start=1):
            w.writerow((line, p["first_name"], p["middle_name"], p["last_name"], p["street"],
                        p["unit"], p["city"], p["zip"], SIGNED_ON, circ))


async def _cli(home: Path, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("INTAKE_ADDR", "MATCHING_ADDR", "TALLY_ADDR", "SIGVERIFY_TOKEN")}
    env["SIGVERIFY_HOME"] = str(home)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from sigverify_cli.main import main; main()", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_a_circulator_with_many_unregistered_signers_is_flagged_and_reported(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput, tmp_path: Path
) -> None:
    county = synth_data.spec.counties[0]
    voters = iter(_roll_voters(synth_data.roll_csv, county, 130))
    rows: list[tuple[dict[str, str], str]] = []
    invented = 0
    for circ in ("C-GOOD1", "C-GOOD2", "C-GOOD3", "C-GOOD4"):
        rows += [(next(voters), circ) for _ in range(30)]
        rows += [(_invented(invented + k), circ) for k in range(2)]
        invented += 2
    rows += [(next(voters), "C-BAD") for _ in range(10)]
    rows += [(_invented(invented + k), "C-BAD") for k in range(30)]
    path = tmp_path / "circulators.csv"
    _write_batch(path, rows)

    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid, required=150)
    receipt = await h.submit(live_stack, path, pid, county)
    assert receipt.signatures_accepted == len(rows) == 168
    t = await h.wait_verified(live_stack, pid, len(rows))

    by_circ = {(x.county, x.circulator_id): x for x in t.circulators}
    assert set(by_circ) == {(county, c) for c in ("C-GOOD1", "C-GOOD2", "C-GOOD3", "C-GOOD4", "C-BAD")}
    assert [(x.county, x.circulator_id) for x in t.flagged_circulators] == [(county, "C-BAD")]
    bad = by_circ[(county, "C-BAD")]
    assert bad.flagged and bad.tested and bad.decided >= 38 and bad.suspect >= 28
    assert bad.rate > 0.6 and bad.others_rate < 0.15 and bad.q_value < 1e-6
    assert not any(x.flagged for k, x in by_circ.items() if k[1] != "C-BAD")

    # sigverify tally --json carries the flags
    code, out, err = await _cli(Path(live_stack.home), "tally", "--petition", pid, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert [f["circulator_id"] for f in d["flagged_circulators"]] == ["C-BAD"]
    assert d["total"]["received"] == len(rows)

    # sigverify report --petition ID --out DIR
    out_dir = tmp_path / "report"
    code, out, err = await _cli(Path(live_stack.home), "report", "--petition", pid, "--out", str(out_dir))
    assert code == 0, err
    with (out_dir / "counties.csv").open(newline="", encoding="utf-8") as fh:
        counties = list(csv.DictReader(fh))
    assert [r["county"] for r in counties] == [county]
    assert int(counties[0]["received"]) == len(rows)
    assert int(counties[0]["valid"]) + int(counties[0]["invalid"]) + int(counties[0]["review"]) == len(rows)
    assert int(counties[0]["invalid_not_registered"]) >= 36
    with (out_dir / "circulators.csv").open(newline="", encoding="utf-8") as fh:
        circs = {r["circulator_id"]: r for r in csv.DictReader(fh)}
    assert circs["C-BAD"]["flagged"] == "true"
    assert {c for c, r in circs.items() if r["flagged"] == "true"} == {"C-BAD"}
    page = (out_dir / "report.html").read_text(encoding="utf-8")
    assert "C-BAD" in page and "<svg" in page
    assert "http://" not in page and "https://" not in page

    # sigverify watch --once: one frame, then exit
    code, out, err = await _cli(Path(live_stack.home), "watch", "--petition", pid, "--once")
    assert code == 0, err
    assert county in out and "C-BAD" in out and "valid / required" in out
