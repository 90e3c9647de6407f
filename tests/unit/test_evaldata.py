"""The evaluation hook: writing data sets, scoring a results export, the `eval-data` command,
and the sharded (bounded-memory) generation for a state-scale roll."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from datetime import date
from pathlib import Path

import pytest

from sigverify_cli import evaldata
from sigverify_cli.main import main
from sigverify_cli.synth import CALIFORNIA_COUNTIES, SynthSpec, generate_sharded, plan_shards


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _perfect_export(data: evaldata.EvalData, tmp_path: Path) -> tuple[Path, Path]:
    """A results export that says what the truth says, under made-up batch ids."""
    ids = {p.name: f"B-{i}" for i, (p, _) in enumerate(data.batches)}
    export, bmap = tmp_path / "results.csv", tmp_path / "batch-ids.csv"
    with export.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(("signature_id", "batch_id", "county", "line", "status", "reason", "voter_id",
                    "score"))
        for i, t in enumerate(_rows(data.truth_csv)):
            linked = t["expected_reason"] not in ("NOT_REGISTERED", "INCOMPLETE")
            w.writerow((f"s{i}", ids[t["batch_file"]], "x", t["line"], t["expected_status"],
                        t["expected_reason"], t["voter_id"] if linked else "", "99.00"))
    with bmap.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(("batch_id", "batch_file"))
        w.writerows((b, name) for name, b in ids.items())
    return export, bmap


@pytest.mark.parametrize("kind", ["hostile", "febrl1"])
def test_a_written_data_set_scores_perfectly_against_itself(tmp_path: Path, kind: str) -> None:
    data = evaldata.write_dataset(kind, tmp_path / "d", voters=3_000, signatures=600,
                                  batch_size=100, holdout=True)
    assert [(r["batch_file"], r["county"]) for r in _rows(data.manifest_csv)] == [
        (p.name, c) for p, c in data.batches]
    assert sum(len(_rows(p)) for p, _ in data.batches) == data.signatures == len(
        _rows(data.truth_csv))
    export, bmap = _perfect_export(data, tmp_path)
    acc = evaldata.score(data.truth_csv, export, bmap)
    assert acc.agree == acc.signatures == data.signatures
    assert acc.links is not None and acc.links.precision == acc.links.recall == 1.0
    assert acc.false_accept == acc.false_reject == acc.to_review == 0
    if kind == "febrl1":
        assert data.kind == "febrl1-holdout" and acc.by_expected_reason["NOT_REGISTERED"][0] == 50


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["eval-data", "make", "febrl1", "--out", str(tmp_path / "d")])
    assert done.value.code == 0
    truth = tmp_path / "d" / "truth.csv"
    data = evaldata.EvalData("febrl1", tmp_path / "d" / "roll.csv", tuple(
        (tmp_path / "d" / "batches" / r["batch_file"], r["county"])
        for r in _rows(tmp_path / "d" / "batches.csv")), truth, tmp_path / "d" / "batches.csv",
        date(2017, 7, 25), False, 500, 500)
    export, bmap = _perfect_export(data, tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["eval-data", "score", "--truth", str(truth), "--results", str(export),
              "--batches", str(bmap), "--json"])
    assert done.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["agree"] == out["signatures"] == 500 and out["links"]["f1"] == 1.0
    with pytest.raises(SystemExit) as done:
        main(["eval-data", "score", "--truth", str(truth), "--results", str(truth)])
    assert done.value.code == 2
    assert "results header lacks" in capsys.readouterr().err


def test_shards_are_whole_counties_of_bounded_size() -> None:
    spec = SynthSpec(voters=22_000_000, signatures=1_000_000, counties=CALIFORNIA_COUNTIES)
    plans = plan_shards(spec, 2_000_000)
    counties = [c for p in plans for c in p.counties]
    assert sorted(counties) == sorted(CALIFORNIA_COUNTIES)
    assert sum(p.voters for p in plans) == spec.voters
    assert sum(p.signatures for p in plans) == spec.signatures
    assert all(len(p.counties) >= 2 for p in plans)
    assert all(p.voters <= 2_000_000 or len(p.counties) == 2 for p in plans)
    prefixes = [z for p in plans for z in p.zip_prefixes]
    assert len(prefixes) == len(set(prefixes)) and all(p.zip_prefixes for p in plans)
    assert len({p.seed for p in plans}) == len(plans)


def test_sharded_generation_keeps_ids_zips_and_truth_straight(tmp_path: Path) -> None:
    spec = SynthSpec(voters=24_000, signatures=2_400, batch_size=400, seed=3,
                     counties=CALIFORNIA_COUNTIES[:12])
    out = generate_sharded(tmp_path, spec, shard_voters=6_000, workers=1, shard_counties=4)
    roll = {r["voter_id"]: r for r in _rows(out.roll_csv)}
    assert len(roll) == spec.voters
    zips: dict[str, set[str]] = defaultdict(set)
    for v in roll.values():
        zips[v["zip"]].add(v["county"])
    assert all(len(c) == 1 for c in zips.values())
    truth = _rows(out.truth_csv)
    assert len(truth) == spec.signatures == sum(len(_rows(p)) for p, _ in out.batches)
    county_of = {p.name: c for p, c in out.batches}
    assert set(county_of.values()) == set(spec.counties)
    for t in truth:
        if t["voter_id"]:
            voter = roll[t["voter_id"]]
            assert (voter["county"] != county_of[t["batch_file"]]) == (
                t["expected_reason"] == "WRONG_COUNTY")
    assert not (tmp_path / "shards").exists()
