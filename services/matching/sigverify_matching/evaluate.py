"""Accuracy of the matcher on a roll and batches with known truth, without the services.

``evaluate`` does what the pipeline does to every batch row: a row with no printed name or
no street is INCOMPLETE (intake's rule); the roll is indexed (``columnar``), a model learned
from the batches' own signatures (unlabelled: ``engine.train``, as the service learns from
the signatures it receives), every other row matched against the roll within its batch's
county, with the petition's deadline; then duplicates are resolved the way the dedupe
service does (among a voter's MATCHED signatures the earliest signed counts, ties by order
of receipt). The result is scored by ``sigverify_cli.scoring.compare``.

Used by the accuracy regression test and by ``make bench``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

from sigverify_cli.synth import Accuracy, SynthOutput, compare
from sigverify_common.vocab import Decision, Reason, status_for
from sigverify_dedupe.domain import Entry, Rules, resolve
from sigverify_matching import engine, fs
from sigverify_matching.columnar import IndexBuilder, VoterIndex
from sigverify_matching.domain import MatchConfig, MatchResult, SignatureInput, VoterRecord


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


class Matcher(Protocol):
    def match_many(self, sigs: Sequence[SignatureInput], config: MatchConfig
                   ) -> list[MatchResult]: ...


@dataclass
class EngineMatcher:
    """The service's matcher in one process: a roll's index and a model."""

    index: VoterIndex
    model: fs.Model

    @classmethod
    def learn(cls, index: VoterIndex, sigs: Sequence[SignatureInput],
              max_training: int = 20_000) -> EngineMatcher:
        """Learn the model from (the last ``max_training`` of) ``sigs``, as the service does."""
        return cls(index, engine.train(index, list(sigs)[-max_training:]))

    def match_many(self, sigs: Sequence[SignatureInput], config: MatchConfig
                   ) -> list[MatchResult]:
        if not sigs:
            return []
        return engine.match_batch(self.index, self.model, sigs, config).results()


def build_index(voters: Iterator[VoterRecord], version: int = 1, chunk: int = 50_000
                ) -> VoterIndex:
    builder = IndexBuilder(version)
    rows: list[tuple[object, ...]] = []
    for v in voters:
        rows.append((v.voter_id, v.first_name, v.middle_name, v.last_name, v.suffix,
                     v.birth_date, v.street, v.unit, v.city, v.zip, v.county, v.status,
                     v.registered_on))
        if len(rows) >= chunk:
            builder.add(rows)  # type: ignore[arg-type]
            rows = []
    builder.add(rows)  # type: ignore[arg-type]
    return builder.finish()


def decide_rows(matcher: Matcher, rows: list[BatchRow], config: MatchConfig,
                rules: Rules | None = None) -> dict[tuple[str, int], tuple[str, str]]:
    """(batch file, line) -> (status, reason), duplicates resolved."""
    complete = [r for r in rows if r.complete]
    results: list[MatchResult] = matcher.match_many([r.signature for r in complete], config)
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
             matcher: Matcher | None = None) -> Accuracy:
    """Match every signature of a data set and score the decisions against its truth."""
    config = config or MatchConfig()
    rows = read_batches(out)
    if matcher is None:
        index = build_index(read_roll_csv(out.roll_csv))
        matcher = EngineMatcher.learn(index, [r.signature for r in rows if r.complete])
    rules = Rules(accept_online=out.spec.accept_online)
    return compare(out.truth_csv, decide_rows(matcher, rows, config, rules))
