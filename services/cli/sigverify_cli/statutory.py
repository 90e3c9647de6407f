"""The statutory process as the CLI shows it: the ``--json`` form, the lines and per-county
rows that ``tally``, ``watch`` and ``report`` print, and the independent check of a county's
random sample (``sigverify sample show``). Pure: no I/O.

Decimal figures (rate, A, B, the thresholds, the percentage of the requirement) arrive as
text so that no rounding is added on the way; they stay text in JSON and are only given
thousands separators for people, never rounded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sigverify.intake.v1 import intake_pb2
from sigverify.tally.v1 import tally_pb2
from sigverify_common.convert import method_from_pb
from sigverify_common.sampling import Method, draw_order

#: Outcomes that end the process.
FINAL_OUTCOMES = frozenset({tally_pb2.OUTCOME_FAILS, tally_pb2.OUTCOME_QUALIFIES})

#: How many differences a failed draw check names (the rest are counted).
SHOWN = 5

#: rich styles of the outcomes.
OUTCOME_STYLE = {"QUALIFIES": "bold green", "FAILS": "bold red", "FULL_COUNT": "bold yellow"}


def outcome_name(value: int) -> str:
    """``FAILS``, ``FULL_COUNT``, ...; the number itself for a value this CLI does not know."""
    try:
        return str(tally_pb2.Outcome.Name(tally_pb2.Outcome.ValueType(value))).removeprefix("OUTCOME_")
    except ValueError:
        return str(value)


def method_of(value: int) -> Method:
    """A petition's or tally's method (unset: full count)."""
    try:
        return method_from_pb(value)
    except (ValueError, KeyError):
        return Method.FULL_COUNT


def is_statutory(t: tally_pb2.Tally) -> bool:
    """Whether the tally has a statutory process to show."""
    return method_of(t.method) is Method.RANDOM_SAMPLE or bool(t.statutory.stage)


def dec(text: str) -> str:
    """Decimal text with thousands separators and every digit it came with ("-" when empty)."""
    if not text:
        return "-"
    try:
        d = Decimal(text)
    except InvalidOperation:
        return text
    return f"{d:,}" if d.is_finite() else text


# -- JSON ----------------------------------------------------------------------------------------

def county_projection_dict(c: tally_pb2.CountyProjection) -> dict[str, Any]:
    return {"county": c.county, "raw": c.raw, "closed": c.closed, "sample_size": c.sample_size,
            "sample_verified": c.sample_verified, "valid_in_sample": c.valid_in_sample,
            "duplicates_in_sample": c.duplicates_in_sample, "rate_percent": c.rate_percent,
            "v": c.v, "a": c.a, "b": c.b, "c": c.c, "projected": c.projected,
            "complete": c.complete, "counted": c.counted, "seed": c.seed}


def statutory_dict(s: tally_pb2.Statutory) -> dict[str, Any]:
    return {"stage": s.stage, "raw_total": s.raw_total, "raw_complete": s.raw_complete,
            "counties": [county_projection_dict(c) for c in s.counties],
            "projected_total": s.projected_total, "fail_below": s.fail_below,
            "qualify_above": s.qualify_above, "projected_percent": s.projected_percent,
            "sample_outcome": outcome_name(s.sample_outcome),
            "sample_decided_at": s.sample_decided_at, "provisional": s.provisional,
            "full_count": s.full_count, "counted_valid": s.counted_valid,
            "counted_verified": s.counted_verified, "counted_remaining": s.counted_remaining,
            "outcome": outcome_name(s.outcome), "decided_at": s.decided_at,
            "decided_by": s.decided_by, "stopped_at_requirement": s.stopped_at_requirement,
            "explanation": s.explanation}


# -- text ----------------------------------------------------------------------------------------

COUNTY_COLUMNS = ("county", "raw", "closed", "sample", "verified in sample", "valid in sample",
                  "duplicates in sample", "rate %", "V", "A", "B", "C", "projected", "state")


def county_state(c: tally_pb2.CountyProjection) -> str:
    """open, in progress, complete (the sample is decided) or counted (every signature was
    verified, so the figure is a count, not a projection)."""
    if not c.closed:
        return "open"
    if not c.complete:
        return "in progress"
    return "counted" if c.counted else "complete"


def county_row(c: tally_pb2.CountyProjection) -> list[str]:
    """One row under ``COUNTY_COLUMNS``."""
    drawn = c.closed and c.sample_size > 0
    return [c.county, f"{c.raw:,}", "yes" if c.closed else "no",
            f"{c.sample_size:,}" if drawn else "-",
            f"{c.sample_verified:,}" if drawn else "-",
            f"{c.valid_in_sample:,}" if drawn else "-",
            f"{c.duplicates_in_sample:,}" if drawn else "-",
            dec(c.rate_percent), f"{c.v:,}" if drawn else "-", dec(c.a), dec(c.b),
            f"{c.c:,}" if drawn else "-", f"{c.projected:,}" if drawn else "-", county_state(c)]


def statewide_facts(t: tally_pb2.Tally) -> list[tuple[str, str]]:
    """(label, sentence) pairs for the statewide part of the process, in its order."""
    s = t.statutory
    facts: list[tuple[str, str]] = [("method", method_of(t.method).value),
                                    ("stage", s.stage or "-")]
    counties = list(s.counties)
    still_open = sum(1 for c in counties if not c.closed)
    if s.raw_complete:
        filed = "every county has closed its filing"
    elif counties:
        filed = f"{still_open:,} of {len(counties):,} counties still open"
    else:
        filed = "no county has filed yet"
    facts.append(("raw count", f"{s.raw_total:,} of {t.required_signatures:,} required ({filed})"))
    if any(c.closed and c.sample_size for c in counties) or s.projected_total:
        projection = (f"{s.projected_total:,} valid projected = {dec(s.projected_percent)} % of "
                      f"the requirement; fails below {dec(s.fail_below)}, qualifies above "
                      f"{dec(s.qualify_above)}, full count in between")
        if s.provisional:
            projection += " (provisional: the sample is not complete)"
        facts.append(("projection", projection))
    if s.sample_outcome and method_of(t.method) is Method.RANDOM_SAMPLE:
        sample = outcome_name(s.sample_outcome)
        if s.sample_decided_at:
            sample += f" (decided {s.sample_decided_at})"
        facts.append(("sample outcome", sample))
    if s.full_count:
        facts.append(("full count", f"{s.counted_valid:,} valid counted of "
                                    f"{s.counted_verified:,} verified; "
                                    f"{s.counted_remaining:,} remaining"))
    outcome = outcome_name(s.outcome)
    if s.decided_by or s.decided_at:
        outcome += (f", decided by the {s.decided_by or '?'}"
                    + (f" at {s.decided_at}" if s.decided_at else ""))
    if s.stopped_at_requirement:
        outcome += "; stopped at the requirement (AB 2219)"
    facts.append(("outcome", outcome))
    if s.explanation:
        facts.append(("explanation", s.explanation))
    return facts


def outcome_line(t: tally_pb2.Tally) -> str:
    """One line for the live view: projected total and the outcome."""
    s = t.statutory
    parts = [f"statutory process: {s.stage or '-'}"]
    if s.projected_total or any(c.closed and c.sample_size for c in s.counties):
        parts.append(f"projected {s.projected_total:,} ({dec(s.projected_percent)} % of required; "
                     f"fails below {dec(s.fail_below)}, qualifies above {dec(s.qualify_above)})"
                     + (" provisional" if s.provisional else ""))
    if s.full_count:
        parts.append(f"full count {s.counted_valid:,} valid, {s.counted_remaining:,} remaining")
    outcome = f"outcome {outcome_name(s.outcome)}"
    if s.decided_by:
        outcome += f" by the {s.decided_by}"
    if s.stopped_at_requirement:
        outcome += ", stopped at the requirement (AB 2219)"
    parts.append(outcome)
    return " · ".join(parts)


# -- the draw check ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DrawCheck:
    """An independent re-draw of a county's sample compared with what intake listed."""

    seed: str
    #: Signatures listed (every one, sampled or not).
    raw: int
    #: Signatures intake marked as sampled.
    sampled: int
    #: The re-drawn sample, in draw order.
    redrawn: tuple[str, ...]
    problems: tuple[str, ...]

    @property
    def identical(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.identical:
            return f"re-drawn from seed {self.seed}: identical ({len(self.redrawn):,} of {self.raw:,})"
        return (f"re-drawn from seed {self.seed}: DIFFERENT from the listed sample: "
                + "; ".join(self.problems))


def _some(ids: Sequence[str] | set[str]) -> str:
    shown = sorted(ids)[:SHOWN]
    more = f" and {len(ids) - len(shown):,} more" if len(ids) > len(shown) else ""
    return ", ".join(shown) + more


def check_draw(seed: str, sample_size: int, entries: Sequence[intake_pb2.SampleEntry],
               raw_count: int | None = None, expected_size: int | None = None) -> DrawCheck:
    """Re-draw ``sample_size`` of the listed signatures from ``seed`` with
    ``sigverify_common.sampling`` and compare: the sampled set and its order, every draw key
    and rank, the sample's size (against the filing, and ``expected_size`` from the petition's
    rules when given) and the number listed against the filing's ``raw_count``."""
    problems: list[str] = []
    ids = [e.signature_id for e in entries]
    repeated = {sid for sid, n in Counter(ids).items() if n > 1}
    if not seed:
        problems.append("no seed is recorded for the county")
    if repeated:
        problems.append(f"{len(repeated):,} signature(s) listed twice: {_some(repeated)}")
    if raw_count is not None and len(set(ids)) != raw_count:
        problems.append(f"{len(set(ids)):,} signatures listed, the filing's raw count is {raw_count:,}")
    if expected_size is not None and sample_size != expected_size:
        raw = raw_count if raw_count is not None else len(set(ids))
        problems.append(f"the filing's sample size {sample_size:,} is not the rules' "
                        f"{expected_size:,} for a raw count of {raw:,}")
    order = draw_order(seed, sorted(set(ids)))
    redrawn = tuple(sid for sid, _ in order[:sample_size])
    listed = [e for e in entries if e.sampled]
    listed_ids = [e.signature_id for e in sorted(listed, key=lambda e: e.rank)]
    if len(listed) != sample_size:
        problems.append(f"{len(listed):,} signatures marked sampled, the filing's sample size "
                        f"is {sample_size:,}")
    extra = set(listed_ids) - set(redrawn)
    missing = set(redrawn) - set(listed_ids)
    if extra:
        problems.append(f"{len(extra):,} marked sampled that the seed does not draw: {_some(extra)}")
    if missing:
        problems.append(f"{len(missing):,} drawn by the seed but not marked sampled: {_some(missing)}")
    if not extra and not missing and listed_ids != list(redrawn):
        problems.append("the sampled signatures are listed in another order than the draw's")
    position = {sid: (i + 1, key) for i, (sid, key) in enumerate(order)}
    bad_key = [e.signature_id for e in entries
               if e.signature_id in position and e.draw_key and e.draw_key != position[e.signature_id][1]]
    bad_rank = [e.signature_id for e in entries
                if e.signature_id in position and e.rank != position[e.signature_id][0]]
    if bad_key:
        problems.append(f"{len(bad_key):,} draw key(s) differ from SHA-256(seed:id): {_some(bad_key)}")
    if bad_rank:
        problems.append(f"{len(bad_rank):,} rank(s) differ from the draw order: {_some(bad_rank)}")
    return DrawCheck(seed, len(set(ids)), len(listed), redrawn, tuple(problems))
