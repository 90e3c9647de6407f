"""California's random-sample projection (2 CCR 20530-20532) and the decision on it: pure.

Follows the regulation's own rounding, worked in decimal arithmetic so that no binary
floating-point error can move a figure across a rounding boundary:

- ``rate = valid_in_sample / sample_size`` as a percentage to two decimals (half up);
- ``V = ceil(raw * rate)``;
- ``A = raw / sample_size`` to four decimals (half up); ``B = A * (A - 1)``;
- ``C = ceil(duplicates_in_sample * B)``;
- ``projected = V - C``.

``valid_in_sample`` counts sampled signatures found valid (the first signature of a
duplicated voter included, its repeats excluded); ``duplicates_in_sample`` counts the
repeats. A county whose every signature was verified (500 or fewer) reports its count.
Where a county's published figure differs (Santa Cruz, 2012, rounded C down), the
regulation is followed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from enum import StrEnum

from sigverify_common.sampling import CALIFORNIA, SamplingRules, sample_size

__all__ = ["Outcome", "Projection", "decide", "project", "sample_size", "statewide", "thresholds"]

#: California's parameters (see ``sigverify_common.sampling.SamplingRules``).
MIN_SAMPLE = CALIFORNIA.minimum
SAMPLE_FRACTION = CALIFORNIA.percent / 100
FAIL_BELOW = CALIFORNIA.fail_below / 100
QUALIFY_ABOVE = CALIFORNIA.qualify_above / 100


class Outcome(StrEnum):
    FAILS = "FAILS"
    FULL_COUNT = "FULL_COUNT"
    QUALIFIES = "QUALIFIES"


def _ceil(x: Decimal) -> int:
    return int(x.to_integral_value(rounding=ROUND_CEILING))


@dataclass(frozen=True, slots=True)
class Projection:
    raw: int
    sample: int
    valid_in_sample: int
    duplicates_in_sample: int
    rate_percent: Decimal   # two decimals
    v: int
    a: Decimal              # four decimals
    b: Decimal
    c: int
    projected: int


def project(raw: int, sample: int, valid_in_sample: int, duplicates_in_sample: int) -> Projection:
    """One county's projection of valid signatures from its random sample."""
    if not 0 < sample <= raw:
        raise ValueError("the sample must be between 1 and the raw count")
    if not 0 <= valid_in_sample <= sample or not 0 <= duplicates_in_sample <= sample:
        raise ValueError("sample counts must lie between 0 and the sample size")
    if valid_in_sample + duplicates_in_sample > sample:
        raise ValueError("a sampled signature is valid or a duplicate, not both")
    rate = (Decimal(100) * valid_in_sample / sample).quantize(Decimal("0.01"), ROUND_HALF_UP)
    if sample == raw:
        # Every signature was verified (500 or fewer): that is a count, not a projection.
        # Projecting it anyway would let the rounded rate add signatures (1 valid of 18 ->
        # 5.56 % -> V = 2), so the counted figures stand.
        return Projection(raw, sample, valid_in_sample, duplicates_in_sample, rate,
                          valid_in_sample, Decimal(1), Decimal(0), 0, valid_in_sample)
    v = _ceil(Decimal(raw) * rate / 100)
    a = (Decimal(raw) / sample).quantize(Decimal("0.0001"), ROUND_HALF_UP)
    b = a * (a - 1)
    c = _ceil(duplicates_in_sample * b)
    return Projection(raw, sample, valid_in_sample, duplicates_in_sample, rate, v, a, b, c, v - c)


def thresholds(required: int, rules: SamplingRules = CALIFORNIA) -> tuple[Decimal, Decimal]:
    """(fail below, qualify above) in signatures: 95 % and 110 % of the requirement."""
    return required * rules.fail_below / 100, required * rules.qualify_above / 100


def decide(projected_total: int, required: int, rules: SamplingRules = CALIFORNIA) -> Outcome:
    """The decision on the statewide sum of the counties' projections."""
    if required <= 0:
        raise ValueError("the requirement must be positive")
    fail_below, qualify_above = thresholds(required, rules)
    if projected_total < fail_below:
        return Outcome.FAILS
    if projected_total > qualify_above:
        return Outcome.QUALIFIES
    return Outcome.FULL_COUNT


def statewide(projections: Iterable[Projection]) -> int:
    return sum(p.projected for p in projections)
