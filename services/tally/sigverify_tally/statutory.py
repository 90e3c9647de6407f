"""Where a petition stands in the statutory process, and which decisions fall due: pure.

California (EC 9030-9031; 2 CCR 20520 ff.), for a random-sample petition:

1. **Raw count.** Once every county with signatures has closed its filing, a statewide raw
   count below the requirement fails the petition.
2. **Random sample.** Once every county's sample is verified (every sampled signature has a
   final status; review is not final), the statewide sum of the counties' projections
   decides: FAILS below ``fail_below`` % of the requirement, QUALIFIES above
   ``qualify_above`` %, FULL_COUNT in between. The decision keeps every county's figures as
   they were, whatever later revisions the full count brings.
3. **Full count.** Every remaining signature is verified; as soon as the counted valid total
   reaches the requirement the petition qualifies and the count may stop (AB 2219, 2014);
   when every signature is verified below the requirement, it fails.

A full-count petition skips step 2: it qualifies when its counted valid total reaches the
requirement and fails when every county has closed and every signature is verified below it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any

from sigverify_common.sampling import Method, SamplingRules
from sigverify_tally.domain import Counts
from sigverify_tally.projection import Outcome, Projection, decide, project, thresholds


class Stage(StrEnum):
    RAW_COUNT = "raw-count"
    RANDOM_SAMPLE = "random-sample"
    FULL_COUNT = "full-count"


#: How a stage is named in the tally ("raw count", ...).
LABEL = {s: s.value.replace("-", " ") for s in Stage}


@dataclass(frozen=True, slots=True)
class CountyInput:
    county: str
    raw: int
    closed: bool
    sample_size: int = 0
    seed: str = ""
    #: Statuses of the county's sampled signatures.
    sample: Counts = field(default_factory=Counts)


@dataclass(frozen=True, slots=True)
class CountyFigures:
    county: str
    raw: int
    closed: bool
    sample_size: int
    seed: str
    sample_verified: int
    valid_in_sample: int
    duplicates_in_sample: int
    #: Every sampled signature has a final status.
    complete: bool
    #: None until a sampled signature is verified (and for a county with no signatures).
    projection: Projection | None

    @property
    def projected(self) -> int:
        return self.projection.projected if self.projection else 0

    @property
    def counted(self) -> bool:
        return 0 < self.sample_size == self.raw

    def to_json(self) -> dict[str, Any]:
        p = self.projection
        return {
            "county": self.county, "raw": self.raw, "closed": self.closed,
            "sample_size": self.sample_size, "seed": self.seed,
            "sample_verified": self.sample_verified, "valid_in_sample": self.valid_in_sample,
            "duplicates_in_sample": self.duplicates_in_sample, "complete": self.complete,
            "projection": None if p is None else {
                "sample": p.sample, "rate_percent": str(p.rate_percent), "v": p.v, "a": str(p.a),
                "b": str(p.b), "c": p.c, "projected": p.projected},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CountyFigures:
        p = d.get("projection")
        projection = None if p is None else Projection(
            d["raw"], p["sample"], d["valid_in_sample"], d["duplicates_in_sample"],
            Decimal(p["rate_percent"]), p["v"], Decimal(p["a"]), Decimal(p["b"]), p["c"],
            p["projected"])
        return cls(d["county"], d["raw"], d["closed"], d["sample_size"], d["seed"],
                   d["sample_verified"], d["valid_in_sample"], d["duplicates_in_sample"],
                   d["complete"], projection)


def county_figures(c: CountyInput) -> CountyFigures:
    """A county's sample figures and projection (provisional while the sample is incomplete:
    then projected from the sampled signatures verified so far)."""
    verified = c.sample.valid + c.sample.invalid
    duplicates = c.sample.duplicates
    complete = c.closed and verified >= c.sample_size and c.sample.review == 0
    projection = None
    if c.raw and verified:
        size = c.sample_size if complete else verified
        projection = project(c.raw, size, c.sample.valid, duplicates)
    return CountyFigures(c.county, c.raw, c.closed, c.sample_size, c.seed, verified,
                         c.sample.valid, duplicates, complete, projection)


@dataclass(frozen=True, slots=True)
class Recorded:
    """A decision as stored."""

    stage: Stage
    outcome: Outcome
    detail: Mapping[str, Any]
    decided_at: str = ""


@dataclass(slots=True)
class Assessment:
    method: Method
    required: int
    stage: str
    raw_total: int
    raw_complete: bool
    counties: list[CountyFigures]
    projected_total: int
    provisional: bool
    fail_below: Decimal
    qualify_above: Decimal
    sample_outcome: Outcome | None
    full_count: bool
    counted_valid: int
    counted_verified: int
    counted_remaining: int
    #: None while pending; FULL_COUNT while counting.
    outcome: Outcome | None
    decided_by: Stage | None
    stopped_at_requirement: bool
    explanation: str
    #: Decisions now due, to be recorded (first one recorded wins).
    due: list[Recorded]
    decisions: dict[Stage, Recorded]

    @property
    def projected_percent(self) -> Decimal:
        return (Decimal(100) * self.projected_total / self.required).quantize(
            Decimal("0.01"), ROUND_HALF_UP)


def assess(method: Method, rules: SamplingRules, required: int, counties: Sequence[CountyInput],
           total: Counts, recorded: Mapping[Stage, Recorded]) -> Assessment:
    """Where the petition stands; ``due`` lists the decisions to record now.

    ``total`` counts every signature of the petition (received, verified, not sampled);
    ``recorded`` holds the decisions already made.
    """
    decisions = dict(recorded)
    due: list[Recorded] = []

    def make(stage: Stage, outcome: Outcome, detail: dict[str, Any]) -> None:
        if stage not in decisions:
            decisions[stage] = Recorded(stage, outcome, detail)
            due.append(decisions[stage])

    raw_total = sum(c.raw for c in counties)
    raw_complete = bool(counties) and all(c.closed for c in counties)
    fail_below, qualify_above = thresholds(required, rules)
    remaining = total.received - total.valid - total.invalid
    if raw_complete and raw_total < required and not decisions:
        make(Stage.RAW_COUNT, Outcome.FAILS, {"raw_total": raw_total, "required": required})

    figures = [county_figures(c) for c in counties]
    sample_outcome: Outcome | None = None
    provisional = False
    if method is Method.RANDOM_SAMPLE:
        frozen = decisions.get(Stage.RANDOM_SAMPLE)
        if frozen is None and raw_complete and all(f.complete for f in figures) \
                and Stage.RAW_COUNT not in decisions:
            projected = sum(f.projected for f in figures)
            make(Stage.RANDOM_SAMPLE, decide(projected, required, rules),
                 {"projected_total": projected, "required": required, "raw_total": raw_total,
                  "fail_below": str(fail_below), "qualify_above": str(qualify_above),
                  "counties": [f.to_json() for f in figures]})
            frozen = decisions[Stage.RANDOM_SAMPLE]
        if frozen is not None:
            figures = [CountyFigures.from_json(d) for d in frozen.detail["counties"]]
            sample_outcome = frozen.outcome
        else:
            provisional = True
    projected_total = sum(f.projected for f in figures)

    counting = method is Method.FULL_COUNT or sample_outcome is Outcome.FULL_COUNT
    if counting and Stage.RAW_COUNT not in decisions:
        detail = {"counted_valid": total.valid, "verified": total.valid + total.invalid,
                  "remaining": remaining, "required": required}
        if total.valid >= required:
            make(Stage.FULL_COUNT, Outcome.QUALIFIES,
                 {**detail, "stopped_at_requirement": method is Method.RANDOM_SAMPLE and remaining > 0})
        elif raw_complete and remaining == 0:
            make(Stage.FULL_COUNT, Outcome.FAILS, {**detail, "stopped_at_requirement": False})

    outcome: Outcome | None = None
    decided_by: Stage | None = None
    for stage in (Stage.RAW_COUNT, Stage.FULL_COUNT, Stage.RANDOM_SAMPLE):
        if stage in decisions:
            outcome, decided_by = decisions[stage].outcome, stage
            break
    if outcome is Outcome.FULL_COUNT:
        decided_by = None
    stopped = bool(Stage.FULL_COUNT in decisions
                   and decisions[Stage.FULL_COUNT].detail.get("stopped_at_requirement"))
    if outcome in (Outcome.FAILS, Outcome.QUALIFIES):
        where = "decided"
    elif not raw_complete:
        where = LABEL[Stage.RAW_COUNT]
    elif counting:
        where = LABEL[Stage.FULL_COUNT]
    else:
        where = LABEL[Stage.RANDOM_SAMPLE]
    a = Assessment(
        method=method, required=required, stage=where, raw_total=raw_total,
        raw_complete=raw_complete, counties=figures, projected_total=projected_total,
        provisional=provisional, fail_below=fail_below, qualify_above=qualify_above,
        sample_outcome=sample_outcome, full_count=method is Method.RANDOM_SAMPLE and counting,
        counted_valid=total.valid, counted_verified=total.valid + total.invalid,
        counted_remaining=remaining, outcome=outcome, decided_by=decided_by,
        stopped_at_requirement=stopped, explanation="", due=due, decisions=decisions,
    )
    a.explanation = explain(a, total)
    return a


def _pct(n: int | Decimal, required: int) -> str:
    return f"{(Decimal(100) * Decimal(n) / required).quantize(Decimal('0.01'), ROUND_HALF_UP)} %"


def explain(a: Assessment, total: Counts) -> str:
    """What happened, in a sentence or two (for the tally, the report and the audit)."""
    req = f"{a.required:,}"
    if a.decided_by is Stage.RAW_COUNT:
        return (f"The statewide raw count, {a.raw_total:,}, is below the requirement of {req}: "
                "the petition fails at the raw count.")
    if a.decided_by is Stage.FULL_COUNT:
        d = a.decisions[Stage.FULL_COUNT].detail
        unverified = a.counted_remaining - total.review
        now = (f" Counted now: {a.counted_valid:,} valid of {a.counted_verified:,} verified"
               f"{f', {total.review:,} in review' if total.review else ''}"
               f"{f', {unverified:,} not verified' if unverified else ''}.")
        if a.outcome is Outcome.QUALIFIES:
            if a.stopped_at_requirement:
                return (f"The full count reached the requirement of {req} with {d['counted_valid']:,} "
                        f"valid signatures while {d['remaining']:,} were unverified: the petition "
                        "qualifies, and no more signatures are sent to matching (AB 2219 lets "
                        f"the count stop there).{now}")
            return (f"The count found {d['counted_valid']:,} valid signatures, at least the "
                    f"requirement of {req}: the petition qualifies.{now}")
        return (f"Every signature is verified: {d['counted_valid']:,} valid, below the requirement "
                f"of {req}: the petition fails.")
    if a.sample_outcome is not None:
        where = (f"The statewide projection, {a.projected_total:,}, is "
                 f"{_pct(a.projected_total, a.required)} of the requirement of {req}")
        if a.sample_outcome is Outcome.QUALIFIES:
            return f"{where}, above {_pct(a.qualify_above, a.required)}: the petition qualifies."
        if a.sample_outcome is Outcome.FAILS:
            return f"{where}, below {_pct(a.fail_below, a.required)}: the petition fails."
        return (f"{where}, between {_pct(a.fail_below, a.required)} and "
                f"{_pct(a.qualify_above, a.required)}: every signature is counted. So far "
                f"{a.counted_valid:,} valid of {a.counted_verified:,} verified, "
                f"{a.counted_remaining:,} to go.")
    closed = sum(1 for c in a.counties if c.closed)
    if not a.raw_complete:
        return (f"Raw count: {closed} of {len(a.counties)} counties closed, {a.raw_total:,} raw "
                f"signatures (requirement {req}).")
    if a.method is Method.RANDOM_SAMPLE:
        size = sum(c.sample_size for c in a.counties)
        done = sum(c.sample_verified for c in a.counties)
        return (f"Random sample: {done:,} of {size:,} sampled signatures verified"
                f"{f', {total.review:,} in review' if total.review else ''}; provisional "
                f"projection {a.projected_total:,} ({_pct(a.projected_total, a.required)} of {req}).")
    return (f"Counting: {a.counted_valid:,} valid of {a.counted_verified:,} verified, "
            f"{a.counted_remaining:,} to go (requirement {req}).")
