"""The generator's hostile profile: what it contains, and that its truth stays exact; and that
the default profile's output has not moved by a byte."""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from sigverify_cli.hostile import CLUSTER_NAMES, HOSTILE_WEIGHTS, fold
from sigverify_cli.synth import (
    _DIRS,
    _SUFFIXES,
    MIX,
    NOISE_WEIGHTS,
    SynthOutput,
    SynthSpec,
    generate,
)
from sigverify_intake.domain import validate
from sigverify_matching.roll import read_roll

_LONG = {**_SUFFIXES, **_DIRS}
HOSTILE = SynthSpec(voters=30_000, signatures=6_000, batch_size=500, seed=23, hostile=True)
GOLDEN = SynthSpec(voters=3_000, signatures=600, batch_size=100, seed=19)
#: sha256 over (file name, bytes) of roll, truth and batches of GOLDEN, as generated before the
#: hostile profile existed (commit a1b70cc): the default profile must never move.
GOLDEN_DIGEST = "dafa6c2535f6e55505e5fc3568d87180572a7aeba6de3a067615f3d350c1dda8"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _digest(out: SynthOutput) -> str:
    h = hashlib.sha256()
    for p in [out.roll_csv, out.truth_csv, *(p for p, _ in out.batches)]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_default_output_is_byte_for_byte_what_it_was(tmp_path: Path) -> None:
    assert _digest(generate(tmp_path, GOLDEN)) == GOLDEN_DIGEST


class Data:
    def __init__(self, out: SynthOutput) -> None:
        self.out = out
        self.roll = {r["voter_id"]: r for r in _rows(out.roll_csv)}
        self.batches = {p.name: _rows(p) for p, _ in out.batches}
        self.county_of = {p.name: c for p, c in out.batches}
        self.truth = _rows(out.truth_csv)

    def sig(self, t: dict[str, str]) -> dict[str, str]:
        return self.batches[t["batch_file"]][int(t["line"]) - 1]

    def valid_noise(self) -> Counter[str]:
        rows = [t for t in self.truth if t["expected_reason"] in ("MATCHED", "DUPLICATE")]
        kinds = Counter(k for t in rows for k in t["noise"].split("+") if k)
        return Counter({k: v / len(rows) for k, v in kinds.items()})


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return Data(generate(tmp_path_factory.mktemp("hostile"), HOSTILE))


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return Data(generate(tmp_path_factory.mktemp("default"), replace(HOSTILE, hostile=False)))


def test_hostile_is_deterministic_and_not_the_default(tmp_path: Path, hostile: Data) -> None:
    again = generate(tmp_path, HOSTILE)
    assert _digest(again) == _digest(hostile.out)
    assert _digest(generate(tmp_path / "d", replace(HOSTILE, hostile=False))) != _digest(again)


def test_every_noise_kind_and_the_default_ones_at_two_to_three_times(
        hostile: Data, default: Data) -> None:
    got, base = hostile.valid_noise(), default.valid_noise()
    for kind in HOSTILE_WEIGHTS:
        assert got[kind] > 0, kind
    for kind in NOISE_WEIGHTS:
        ratio = got[kind] / base[kind]
        assert 1.6 <= ratio <= 3.6, (kind, round(ratio, 2))
    for kind in ("suffix_unwritten", "common_name", "household"):
        assert any(kind in t["noise"] for t in hostile.truth), kind


def test_the_mix_of_reasons_is_the_default_one(hostile: Data) -> None:
    n = len(hostile.truth)
    got = Counter(t["expected_reason"] for t in hostile.truth)
    online = got["ONLINE_NOT_ACCEPTED"]
    for reason, share in MIX.items():
        k = got[reason] + (online if reason == "MATCHED" else 0)
        slack = max(3, 0.005 * n) + (0.5 * online if reason in ("MATCHED", "DUPLICATE") else 0)
        assert abs(k - share * n) <= slack, (reason, k)


def test_names_are_californias(hostile: Data) -> None:
    voters = list(hostile.roll.values())
    n = len(voters)
    accented = sum(fold(v["first_name"] + v["last_name"]) != v["first_name"] + v["last_name"]
                   for v in voters)
    assert 0.06 < accented / n < 0.2
    assert sum("-" in v["last_name"] for v in voters) / n > 0.015              # GARCIA-LOPEZ
    assert sum(" " in v["last_name"] for v in voters) / n > 0.05               # GARCIA LOPEZ
    assert sum(" " in v["first_name"] for v in voters) / n > 0.03              # MARIA JOSE
    assert sum(fold(v["last_name"]) == "NGUYEN" for v in voters) / n > 0.015
    assert sum(v["middle_name"] in ("VAN", "THI") for v in voters) > 100
    assert {"KIM", "PATEL", "SINGH", "DELA CRUZ", "CHEN", "CHAN", "LEE"} <= {
        fold(v["last_name"]) for v in voters}
    assert any(re.fullmatch(r"[A-Z]+-[A-Z]+", v["first_name"]) for v in voters)  # WEI-MING
    # a first name signed as one word where the roll has two, and the reverse
    forms = [hostile.sig(t) for t in hostile.truth if "first_form" in t["noise"]]
    assert forms


def test_namesakes_by_the_hundred(hostile: Data) -> None:
    la = [v for v in hostile.roll.values() if v["county"] == "Los Angeles"]
    names = Counter((fold(v["first_name"]).split(" ")[0], fold(v["last_name"])) for v in la)
    for given, family, _, _ in CLUSTER_NAMES:
        assert names[fold(given), fold(family)] >= 0.002 * len(la), (given, family)
    zips = Counter(v["zip"] for v in la if (fold(v["first_name"]), fold(v["last_name"])) == (
        "MARIA", "GARCIA"))
    assert zips.most_common(1)[0][1] >= 5
    homes: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for v in la:
        if fold(v["last_name"]) in ("GARCIA", "NGUYEN", "SMITH", "MARTINEZ", "HERNANDEZ", "LEE"):
            homes[v["street"], v["unit"], v["zip"]].add(v["suffix"])
    assert sum({"JR", "SR"} <= s for s in homes.values()) >= 10


def test_files_read_as_the_services_read_them(hostile: Data) -> None:
    errors: list[tuple[int, str, str]] = []
    assert len(list(read_roll(hostile.out.roll_csv, errors))) == HOSTILE.voters and not errors
    truth = {(t["batch_file"], int(t["line"])): t for t in hostile.truth}
    for path, _ in hostile.out.batches:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            got = validate(header, list(enumerate(reader, start=2)))
        assert got.rejected == []
        for s in got.signatures:
            assert s.incomplete == (truth[path.name, s.line]["expected_reason"] == "INCOMPLETE")


def _street(text: str) -> tuple[str, ...]:
    """A street without its number, directionals and suffix spelt out."""
    words = fold(text).upper().replace(",", " ").replace(".", " ").split()
    return tuple(_LONG.get(w, w) for w in words[1:])


def test_the_truth_stays_exact(hostile: Data) -> None:
    status_for = {"VOTER_INACTIVE": "INACTIVE", "VOTER_CANCELLED": "CANCELLED"}
    homes: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    namesakes: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    for v in hostile.roll.values():
        homes[v["street"], v["zip"]].append(v)
        namesakes[v["county"], fold(v["first_name"]).split(" ")[0], fold(v["last_name"])].append(v)
    by_voter: Counter[str] = Counter()
    hard = 0
    for t in hostile.truth:
        reason, county, s = t["expected_reason"], hostile.county_of[t["batch_file"]], hostile.sig(t)
        noise = set(t["noise"].split("+"))
        if reason == "NOT_REGISTERED":
            assert t["voter_id"] == ""
            if "common_name" in noise and not noise & {"swap_names", "family_first"}:
                # registered namesakes live in the zip, none of them on the signer's street
                first, last = fold(s["first_name"]).upper(), fold(s["last_name"]).upper()
                same = namesakes[county, first.split(" ")[0], last]
                assert any(v["zip"] == s["zip"] for v in same), t
                assert all(v["zip"] != s["zip"] or _street(v["street"]) != _street(s["street"])
                           for v in same), t
                hard += 1
            continue
        voter = hostile.roll[t["voter_id"]]
        by_voter[t["voter_id"]] += 1
        assert voter["status"] == status_for.get(reason, "ACTIVE"), t
        assert (voter["county"] != county) == (reason == "WRONG_COUNTY"), t
        if reason in ("MATCHED", "DUPLICATE") and not t["noise"]:
            suffix = f" {voter['suffix']}" if voter["suffix"] else ""
            assert (s["first_name"], s["last_name"], s["street"], s["zip"]) == (
                voter["first_name"], voter["last_name"] + suffix, voter["street"], voter["zip"])
    assert max(by_voter.values()) <= 2
    assert hard > 50


def test_unregistered_household_members_share_no_initial(hostile: Data) -> None:
    homes: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for v in hostile.roll.values():
        homes[v["street"], v["zip"]].append(v)
    checked = 0
    for t in hostile.truth:
        noise = set(t["noise"].split("+"))
        if "household" not in noise or noise & {"swap_names", "family_first", "street_abbrev",
                                                "punct", "case"}:
            continue
        s = hostile.sig(t)
        house = homes[s["street"], s["zip"]]
        assert house, t
        initials = {fold(m["first_name"])[:1] for m in house} | {
            fold(m["middle_name"])[:1] for m in house}
        assert fold(s["first_name"])[:1] not in initials, (t, house)
        checked += 1
    assert checked > 30


def test_noise_never_turns_a_row_into_a_household_member(hostile: Data) -> None:
    homes: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for v in hostile.roll.values():
        homes[v["street"], v["zip"]].append(v)
    checked = 0
    for t in hostile.truth:
        if t["expected_reason"] != "MATCHED" or not t["noise"]:
            continue
        voter = hostile.roll[t["voter_id"]]
        s = hostile.sig(t)
        written = fold(s["first_name"]).upper().rstrip(".")
        for m in homes[voter["street"], voter["zip"]]:
            if m is voter or m["first_name"] == voter["first_name"]:
                continue    # the voter, or a namesake JR/SR (suffix_unwritten)
            assert fold(m["first_name"]) != written, (t, m)
            if "first_initial" in t["noise"]:
                assert fold(m["first_name"])[:1] != written[:1], (t, m)
            checked += 1
    assert checked > 500


def test_slipped_house_numbers_stay_off_the_roll(hostile: Data) -> None:
    roll_streets = {(v["street"], v["zip"]) for v in hostile.roll.values()}
    slips = 0
    for t in hostile.truth:
        if "number_slip" not in t["noise"] or t["expected_reason"] != "MATCHED":
            continue
        voter = hostile.roll[t["voter_id"]]
        s = hostile.sig(t)
        number = voter["street"].split(" ", 1)[0]
        assert not s["street"].upper().startswith(number + " ") or "street_unit_swap" in t["noise"]
        written = s["street"].upper().split(" ", 1)[0].rstrip(",")
        if written.isdigit():
            rest = voter["street"].split(" ", 1)[1]
            assert (f"{written} {rest}", voter["zip"]) not in roll_streets
        slips += 1
    assert slips > 200
