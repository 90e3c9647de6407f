"""Accuracy of the matcher on a synthetic roll and batches with known truth, without the services.

``evaluate`` does what the pipeline does to every batch row: a row with no printed name or
no street is INCOMPLETE (intake's rule); every other row is matched against the roll within
its batch's county, with the petition's deadline; then duplicates are resolved the way the
dedupe service does (among a voter's MATCHED signatures the earliest signed counts, ties by
order of receipt). The result is scored by ``sigverify_cli.synth.compare``.

Used by the accuracy regression test and by ``make bench``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sigverify_cli.synth import Accuracy, SynthOutput, compare
from sigverify_common.vocab import Decision, Reason, status_for
from sigverify_dedupe.domain import Entry, Rules, resolve
from sigverify_matching.domain import MatchConfig, MatchResult, SignatureInput, VoterRecord
from sigverify_matching.index import CandidateIndex


def _date(text: str) -> date | None:
    text = (text or "").strip()
    return date.fromisoformat(text) if text else None


def read_roll_csv(path: Path) -> Iterator[VoterRecord]:
    """The voters of a roll CSV (the synthetic generator's columns)."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            yield VoterRecord(
                voter_id=r["voter_id"], first_name=r["first_name"], middle_name=r["middle_name"],
                last_name=r["last_name"], suffix=r["suffix"], birth_date=_date(r["birth_date"]),
                street=r["street"], unit=r["unit"], city=r["city"], zip=r["zip"],
                county=r["county"], status=r["status"], registered_on=_date(r["registered_on"]),
            )


@dataclass(frozen=True, slots=True)
class BatchRow:
    batch_file: str
    line: int
    signature: SignatureInput
    complete: bool  # printed name and street present
    online: bool = False


def read_batches(out: SynthOutput) -> list[BatchRow]:
    """Every batch row in submission order, as the matcher would see it."""
    rows: list[BatchRow] = []
    deadline = out.spec.deadline
    for path, county in out.batches:
        with Path(path).open(newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                sig = SignatureInput(
                    first_name=r["first_name"], middle_name=r["middle_name"],
                    last_name=r["last_name"], street=r["street"], unit=r["unit"], city=r["city"],
                    zip=r["zip"], county=county, signed_on=_date(r["signed_on"]),
                    birth_date=_date(r.get("birth_date") or ""), deadline=deadline,
                )
                named = bool((r["first_name"] + r["last_name"]).strip())
                rows.append(BatchRow(Path(path).name, int(r["line"]), sig,
                                     named and bool(r["street"].strip()),
                                     r.get("source", "").strip().lower() == "online"))
    return rows


def decide_rows(index: CandidateIndex, rows: list[BatchRow], config: MatchConfig,
                rules: Rules | None = None) -> dict[tuple[str, int], tuple[str, str]]:
    """(batch file, line) -> (status, reason), duplicates resolved."""
    complete = [r for r in rows if r.complete]
    results: list[MatchResult] = index.match_many([r.signature for r in complete], config)
    out: dict[tuple[str, int], tuple[str, str]] = {}
    for r in rows:
        if not r.complete:
            out[r.batch_file, r.line] = ("INVALID", Reason.INCOMPLETE.value)
    by_voter: dict[str, list[Entry]] = {}
    keys: dict[str, tuple[str, int]] = {}
    for seq, (r, res) in enumerate(zip(complete, results, strict=True)):
        key = (r.batch_file, r.line)
        if res.decision is Decision.MATCH and res.voter_id:
            sid = f"{r.batch_file}:{r.line}"
            keys[sid] = key
            by_voter.setdefault(res.voter_id, []).append(
                Entry(sid, res.reason, r.signature.signed_on, seq, r.online))
        else:
            out[key] = (status_for(res.reason).value, res.reason.value)
    for entries in by_voter.values():
        for sid, (status, reason) in resolve(entries, rules).items():
            out[keys[sid]] = (status.value, reason.value)
    return out


def evaluate(out: SynthOutput, config: MatchConfig | None = None,
             index: CandidateIndex | None = None) -> Accuracy:
    """Match every signature of a generated set and score the decisions against its truth."""
    config = config or MatchConfig()
    if index is None:
        index = CandidateIndex.build(read_roll_csv(out.roll_csv))
    rules = Rules(accept_online=out.spec.accept_online)
    return compare(out.truth_csv, decide_rows(index, read_batches(out), config, rules))
