"""The synthetic data generator: formats, determinism, the mix, the truth, and scoring."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import pytest

from sigverify_cli import synth
from sigverify_cli.synth import (
    CIRCULATION_DAYS,
    MIX,
    Accuracy,
    SynthOutput,
    SynthSpec,
    compare,
    format_accuracy,
    generate,
)

SMALL = SynthSpec(voters=6_000, signatures=1_200, batch_size=150, seed=11, accept_online=True)

ROLL_HEADER = ("voter_id,first_name,middle_name,last_name,suffix,birth_date,street,unit,city,"
               "zip,county,status,registered_on")
BATCH_HEADER = ("line,first_name,middle_name,last_name,street,unit,city,zip,signed_on,"
                "circulator_id,source")
TRUTH_HEADER = "batch_file,line,expected_status,expected_reason,voter_id,noise"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@dataclass
class Generated:
    out: SynthOutput
    roll: dict[str, dict[str, str]]
    batches: dict[str, list[dict[str, str]]]      # file name -> rows
    county_of: dict[str, str]                     # file name -> county
    order: dict[str, int]                         # file name -> submission position
    truth: list[dict[str, str]]

    def sig(self, t: dict[str, str]) -> dict[str, str]:
        return self.batches[t["batch_file"]][int(t["line"]) - 1]


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    out = generate(tmp_path_factory.mktemp("synth"), SMALL)
    roll = {r["voter_id"]: r for r in _rows(out.roll_csv)}
    batches = {p.name: _rows(p) for p, _ in out.batches}
    return Generated(out, roll, batches, {p.name: c for p, c in out.batches},
                     {p.name: i for i, (p, _) in enumerate(out.batches)}, _rows(out.truth_csv))


def _files(out: SynthOutput) -> dict[str, bytes]:
    paths = [out.roll_csv, out.truth_csv, *(p for p, _ in out.batches)]
    return {p.name: p.read_bytes() for p in paths}


def test_same_seed_same_files(tmp_path: Path) -> None:
    spec = SynthSpec(voters=2_000, signatures=300, batch_size=100, seed=3)
    a = generate(tmp_path / "a", spec)
    b = generate(tmp_path / "b", spec)
    assert [(p.name, c) for p, c in a.batches] == [(p.name, c) for p, c in b.batches]
    assert _files(a) == _files(b)
    c = generate(tmp_path / "c", SynthSpec(voters=2_000, signatures=300, batch_size=100, seed=4))
    assert _files(c)["roll.csv"] != _files(a)["roll.csv"]


_HASH_SCRIPT = """
import hashlib, sys
from pathlib import Path
from sigverify_cli.synth import SynthSpec, generate
o = generate(Path(sys.argv[1]), SynthSpec(voters=1_500, signatures=300, batch_size=100))
h = hashlib.sha256()
for p in [o.roll_csv, o.truth_csv, *(p for p, _ in o.batches)]:
    h.update(p.read_bytes())
print(h.hexdigest())
"""


def test_output_does_not_depend_on_hash_seed(tmp_path: Path) -> None:
    digests = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run([sys.executable, "-c", _HASH_SCRIPT, str(tmp_path / hash_seed)],
                              env=env, capture_output=True, text=True, check=True, timeout=60)
        digests.add(done.stdout.strip())
    assert len(digests) == 1


def test_headers(gen: Generated) -> None:
    def header(p: Path) -> str:
        return p.read_text(encoding="utf-8").split("\n", 1)[0]

    assert header(gen.out.roll_csv) == ROLL_HEADER
    assert header(gen.out.truth_csv) == TRUTH_HEADER
    for p, _ in gen.out.batches:
        assert header(p) == BATCH_HEADER


def test_batches_layout(gen: Generated) -> None:
    assert len(gen.truth) == SMALL.signatures == sum(len(r) for r in gen.batches.values())
    per_county: dict[str, list[str]] = defaultdict(list)
    for p, county in gen.out.batches:
        per_county[county].append(p.name)
        rows = gen.batches[p.name]
        assert 0 < len(rows) <= SMALL.batch_size
        assert [int(r["line"]) for r in rows] == list(range(1, len(rows) + 1))
        assert all(r["circulator_id"].startswith("C-") and len(r["circulator_id"]) == 6
                   for r in rows)
        assert {r["source"] for r in rows} <= {"paper", "online"}
    assert set(per_county) == set(SMALL.counties)
    for county, names in per_county.items():
        slug = county.lower().replace(" ", "-")
        assert names == [f"{slug}-{i:03d}.csv" for i in range(1, len(names) + 1)]
    truth_keys = [(t["batch_file"], int(t["line"])) for t in gen.truth]
    assert len(set(truth_keys)) == len(truth_keys)
    online = sum(r["source"] == "online" for rows in gen.batches.values() for r in rows)
    assert 0.06 < online / SMALL.signatures < 0.14
    for county in SMALL.counties:
        circ = {r["circulator_id"] for n in per_county[county] for r in gen.batches[n]}
        assert 5 <= len(circ) <= 30


def test_mix_within_tolerance(gen: Generated) -> None:
    n = len(gen.truth)
    got = Counter(t["expected_reason"] for t in gen.truth)
    for reason, share in MIX.items():
        assert abs(got[reason] - share * n) <= max(3, 0.005 * n), (reason, got[reason])
    valid = sum(t["expected_status"] == "VALID" for t in gen.truth)
    assert 0.70 <= valid / n <= 0.80
    assert all((t["expected_status"] == "VALID") == (t["expected_reason"] == "MATCHED")
               for t in gen.truth)
    noisy = [t for t in gen.truth if t["expected_reason"] == "MATCHED" and t["noise"]]
    assert 0.45 < len(noisy) / got["MATCHED"] < 0.75
    kinds = Counter(k for t in gen.truth for k in t["noise"].split("+") if k)
    for kind in synth.NOISE_WEIGHTS:
        assert kinds[kind] > 0, kind


def test_truth_voters_exist_with_right_county_and_status(gen: Generated) -> None:
    status_for = {"VOTER_INACTIVE": "INACTIVE", "VOTER_CANCELLED": "CANCELLED"}
    for t in gen.truth:
        reason, vid = t["expected_reason"], t["voter_id"]
        county = gen.county_of[t["batch_file"]]
        if reason == "NOT_REGISTERED":
            assert vid == ""
            continue
        voter = gen.roll[vid]
        assert voter["status"] == status_for.get(reason, "ACTIVE"), t
        if reason == "WRONG_COUNTY":
            assert voter["county"] != county
        else:
            assert voter["county"] == county


def test_each_voter_signs_once_except_duplicates(gen: Generated) -> None:
    by_voter: dict[str, list[dict[str, str]]] = defaultdict(list)
    for t in gen.truth:
        if t["voter_id"]:
            by_voter[t["voter_id"]].append(t)
    for vid, ts in by_voter.items():
        reasons = sorted(t["expected_reason"] for t in ts)
        assert reasons in (["DUPLICATE", "MATCHED"], [reasons[0]]), (vid, reasons)


def test_duplicates_follow_a_valid_earlier_signature(gen: Generated) -> None:
    matched = {t["voter_id"]: t for t in gen.truth if t["expected_reason"] == "MATCHED"}
    county_batches = Counter(gen.county_of.values())
    dups = [t for t in gen.truth if t["expected_reason"] == "DUPLICATE"]
    assert dups
    for t in dups:
        first = matched[t["voter_id"]]
        assert gen.county_of[first["batch_file"]] == gen.county_of[t["batch_file"]]
        if county_batches[gen.county_of[t["batch_file"]]] > 1:
            assert gen.order[first["batch_file"]] < gen.order[t["batch_file"]]
        assert gen.sig(first)["signed_on"] < gen.sig(t)["signed_on"] <= str(SMALL.deadline)


def test_dates(gen: Generated) -> None:
    start = SMALL.deadline - timedelta(days=CIRCULATION_DAYS)
    for t in gen.truth:
        signed = date.fromisoformat(gen.sig(t)["signed_on"])
        if t["expected_reason"] == "SIGNED_AFTER_DEADLINE":
            assert signed > SMALL.deadline
            continue
        assert start <= signed <= SMALL.deadline
        if t["voter_id"]:
            assert signed > date.fromisoformat(gen.roll[t["voter_id"]]["registered_on"])


def test_rows_are_what_the_truth_says(gen: Generated) -> None:
    names_by_county: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for r in gen.roll.values():
        names_by_county[r["county"]][r["first_name"], r["last_name"]] += 1
    streets = {(r["street"], r["zip"]) for r in gen.roll.values()}
    for t in gen.truth:
        s, reason = gen.sig(t), t["expected_reason"]
        county = gen.county_of[t["batch_file"]]
        v = gen.roll.get(t["voter_id"])
        if reason == "MATCHED" and not t["noise"] and v and not v["suffix"]:
            assert [s[k] for k in ("first_name", "middle_name", "last_name", "street", "unit",
                                   "city", "zip")] == [
                v[k] for k in ("first_name", "middle_name", "last_name", "street", "unit",
                               "city", "zip")]
        if reason == "ADDRESS_MISMATCH":
            assert v is not None
            assert names_by_county[county][v["first_name"], v["last_name"]] == 1
            if "street_abbrev" not in t["noise"]:
                assert s["street"].upper() != v["street"]
        if reason == "NOT_REGISTERED":
            name = (s["first_name"].upper(), s["last_name"].upper())
            assert names_by_county[county][name] == 0
            if "household" in t["noise"] and not t["noise"].replace("household", "").strip("+"):
                assert (s["street"], s["zip"]) in streets
        if reason == "INCOMPLETE":
            assert (s["first_name"] == s["last_name"] == "") or s["street"] == ""
        if reason == "WRONG_COUNTY" and "city_dropped" not in t["noise"]:
            assert v is not None and s["zip"] == v["zip"]


def test_roll_realism(gen: Generated) -> None:
    voters = list(gen.roll.values())
    assert len(voters) == SMALL.voters
    status = Counter(v["status"] for v in voters)
    assert abs(status["ACTIVE"] / len(voters) - 0.92) < 0.02
    assert abs(status["CANCELLED"] / len(voters) - 0.02) < 0.01
    addresses: dict[tuple[str, ...], list[dict[str, str]]] = defaultdict(list)
    for v in voters:
        addresses[v["street"], v["unit"], v["zip"]].append(v)
    sizes = Counter(len(vs) for vs in addresses.values())
    assert set(sizes) <= {1, 2, 3, 4} and sizes[2] and sizes[4]
    assert all(len({v["last_name"] for v in vs}) == 1 for vs in addresses.values())
    with_unit = sum(1 for a in addresses if a[1]) / len(addresses)
    assert 0.18 < with_unit < 0.32
    units = {a[1].split(" ")[0] if " " in a[1] else a[1][:1] for a in addresses if a[1]}
    assert units == {"APT", "UNIT", "#"}
    juniors = [(v, vs) for vs in addresses.values() for v in vs if v["suffix"] == "JR"]
    assert juniors
    assert all(any(o["first_name"] == v["first_name"] and o is not v for o in vs)
               for v, vs in juniors)
    smiths = Counter(v["zip"] for v in voters
                     if (v["first_name"], v["last_name"]) == synth.COMMON_NAME)
    assert max(smiths.values()) >= 3
    assert 0 < sum(v["birth_date"] == "" for v in voters) < 0.06 * len(voters)
    regs = sorted(v["registered_on"] for v in voters)
    assert regs[0] >= "1990-01-01" and regs[-1] < str(SMALL.deadline)
    zips: dict[str, set[str]] = defaultdict(set)
    cities: dict[str, set[str]] = defaultdict(set)
    for v in voters:
        assert len(v["zip"]) == 5 and v["zip"].isdigit()
        zips[v["zip"]].add(v["county"])
        cities[v["city"]].add(v["county"])
    assert all(len(c) == 1 for c in zips.values())
    assert all(len(c) == 1 for c in cities.values())


def test_small_spec_is_quick(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    generate(tmp_path, SynthSpec(voters=2_000, signatures=400, seed=5))
    assert time.perf_counter() - t0 < 2.0


def test_signed_before_registration_when_mixed_in(tmp_path: Path) -> None:
    mix = dict(MIX, MATCHED=0.69, SIGNED_BEFORE_REGISTRATION=0.05)
    out = synth._generate(tmp_path, SynthSpec(voters=8_000, signatures=400, seed=2), mix)
    roll = {r["voter_id"]: r for r in _rows(out.roll_csv)}
    batches = {p.name: _rows(p) for p, _ in out.batches}
    early = [t for t in _rows(out.truth_csv)
             if t["expected_reason"] == "SIGNED_BEFORE_REGISTRATION"]
    assert len(early) >= 15
    for t in early:
        signed = batches[t["batch_file"]][int(t["line"]) - 1]["signed_on"]
        assert signed < roll[t["voter_id"]]["registered_on"]


@pytest.mark.parametrize("spec", [
    SynthSpec(counties=()),
    SynthSpec(counties=("Kern", "Kern")),
    SynthSpec(voters=100, signatures=80),
    SynthSpec(batch_size=0),
])
def test_bad_specs(tmp_path: Path, spec: SynthSpec) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        generate(tmp_path, spec)


def test_compare_counts(tmp_path: Path) -> None:
    truth = tmp_path / "truth.csv"
    truth.write_text(
        TRUTH_HEADER + "\n"
        "a.csv,1,VALID,MATCHED,V1,\n"              # agree (empty reason means MATCHED)
        "a.csv,2,VALID,MATCHED,V2,nickname\n"      # false reject
        "a.csv,3,INVALID,NOT_REGISTERED,,\n"       # false accept
        "a.csv,4,INVALID,DUPLICATE,V1,\n"          # agree
        "b.csv,1,INVALID,WRONG_COUNTY,V3,\n"       # invalid, wrong reason
        "b.csv,2,VALID,MATCHED,V4,\n"              # review
        "b.csv,3,INVALID,INCOMPLETE,V5,\n"         # missing from results
        "b.csv,4,VALID,MATCHED,V6,\n",             # agree
        encoding="utf-8")
    results = {
        ("a.csv", 1): ("VALID", ""),
        ("a.csv", 2): ("INVALID", "NOT_REGISTERED"),
        ("a.csv", 3): ("VALID", "MATCHED"),
        ("a.csv", 4): ("INVALID", "DUPLICATE"),
        ("b.csv", 1): ("INVALID", "ADDRESS_MISMATCH"),
        ("b.csv", 2): ("REVIEW", "AMBIGUOUS"),
        ("b.csv", 4): ("valid", "matched"),
        ("c.csv", 1): ("VALID", "MATCHED"),        # not in the truth: ignored
    }
    acc = compare(truth, results)
    assert acc == Accuracy(
        signatures=8, agree=3, false_accept=1, false_reject=1, to_review=1,
        by_expected_reason={"DUPLICATE": (1, 1), "INCOMPLETE": (1, 0), "MATCHED": (4, 2),
                            "NOT_REGISTERED": (1, 0), "WRONG_COUNTY": (1, 0)},
        confusion={("INCOMPLETE", "MISSING"): 1, ("MATCHED", "NOT_REGISTERED"): 1,
                   ("MATCHED", "REVIEW"): 1, ("NOT_REGISTERED", "MATCHED"): 1,
                   ("WRONG_COUNTY", "ADDRESS_MISMATCH"): 1},
        valid=4, links=None,
    )
    assert acc.rates() == {"false_accept_rate": 0.125, "false_reject_rate": 0.125,
                           "review_rate": 0.125, "agreement": 0.375,
                           "valid_rejected_rate": 0.25}
    text = format_accuracy(acc)
    assert "agreement 37.50%" in text and "WRONG_COUNTY -> ADDRESS_MISMATCH" in text


def test_compare_against_the_truth_itself(gen: Generated) -> None:
    perfect = {(t["batch_file"], int(t["line"])): (t["expected_status"], t["expected_reason"])
               for t in gen.truth}
    acc = compare(gen.out.truth_csv, perfect)
    assert acc.agree == acc.signatures == SMALL.signatures
    assert acc.false_accept == acc.false_reject == acc.to_review == 0
    assert acc.confusion == {}
    assert sum(e for e, _ in acc.by_expected_reason.values()) == SMALL.signatures
    empty = compare(gen.out.truth_csv, {})
    assert empty.agree == 0 and sum(empty.confusion.values()) == SMALL.signatures


def test_online_signatures_do_not_count_where_the_petition_refuses_them(
    tmp_path: Path, gen: Generated
) -> None:
    out = generate(tmp_path, replace(SMALL, accept_online=False))
    truth = list(_rows(out.truth_csv))
    accepted = {(t["batch_file"], t["line"]): t for t in gen.truth}
    sources = {(p.name, r["line"]): r["source"] for p, _ in out.batches for r in _rows(p)}
    changed = 0
    for t in truth:
        before = accepted[(t["batch_file"], t["line"])]
        online = sources[(t["batch_file"], t["line"])] == "online"
        if before["expected_reason"] in ("MATCHED", "DUPLICATE") and online:
            assert t["expected_reason"] == "ONLINE_NOT_ACCEPTED"
            changed += 1
        elif t["expected_reason"] != before["expected_reason"]:
            # A paper signature of a voter whose counted signature was online takes the count.
            assert (before["expected_reason"], t["expected_reason"]) == ("DUPLICATE", "MATCHED")
    assert changed > 0
    assert not any(t["expected_status"] == "VALID" and sources[(t["batch_file"], t["line"])]
                   == "online" for t in truth)
