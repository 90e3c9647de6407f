"""Circulator flags: circulators whose suspect-invalid rate is far above their county's. Pure.

The test, per county:

- Each (county, circulator) pair is compared with *the rest of the same county* (the
  county's other circulators), since counties differ (rolls, mobility, campaigns) and a
  statewide baseline would flag whole counties instead of people.
- The rate is ``suspect / decided``. ``decided`` = valid + invalid: signatures in human
  review (REVIEW) and those still in the pipeline have no outcome yet and are left out.
  ``suspect`` counts only the invalid reasons a circulator's conduct produces
  (``SUSPECT_REASONS``): NOT_REGISTERED (invented people), DUPLICATE (the same names
  copied again, "round-tabling"), VOTER_CANCELLED (cancelled includes deceased: names
  copied from old lists) and SIGNATURE_MISMATCH (forged, found by reviewers). The others
  are mostly the signer's or the paperwork's (moved: ADDRESS_MISMATCH; wrong county,
  inactive, dates, incomplete rows, online signatures not accepted) and would dilute the
  signal with honest error. Every invalid count is still reported beside the rate.
- Significance: a one-sided Fisher exact test on the 2x2 table (this circulator vs the
  rest of the county) x (suspect vs not): P(X >= k) for X hypergeometric with the
  county's totals fixed. Exact, so it holds for the small counts one circulator has, and
  it does not treat the rest of the county's rate as known (a binomial test would).
- Only pairs with at least ``MIN_DECIDED`` decided signatures, in a county with other
  circulators, are tested. The p-values of a county's tested circulators are adjusted
  with Benjamini-Hochberg (false discovery rate ``FDR``): among flagged circulators, the
  expected share of honest ones is at most 1 %. A flag is a lead for investigators, not a
  finding, and FDR keeps power when a county has hundreds of circulators, where
  Bonferroni would miss real ones.
- "Far above" is also an effect size: the rate must be at least ``MIN_RATIO`` times the
  rest of the county's, so a huge circulator with a trivially higher rate is not flagged
  however small its p-value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from sigverify_common.vocab import Reason
from sigverify_tally.domain import Counts

SUSPECT_REASONS: frozenset[str] = frozenset(
    {"NOT_REGISTERED", "DUPLICATE", "VOTER_CANCELLED", "SIGNATURE_MISMATCH"})
MIN_DECIDED = 20
MIN_RATIO = 1.5
FDR = 0.01
TEST_NAME = ("one-sided Fisher exact test of each circulator's suspect-invalid rate against "
             "the rest of its county; Benjamini-Hochberg within the county")


def suspect_by_reason(c: Counts) -> dict[Reason, int]:
    return {r: n for r, n in c.by_reason.items() if r.value in SUSPECT_REASONS and n}


def decided(c: Counts) -> int:
    return c.valid + c.invalid


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _tail(start: int, stop: int, step: int, n: int, big_k: int, big_n: int) -> float:
    """Sum of hypergeometric probabilities from ``start`` towards ``stop`` (inclusive), moving
    away from the mode, so terms only shrink: stops once they no longer change the sum."""
    logp = _log_comb(big_k, start) + _log_comb(big_n - big_k, n - start) - _log_comb(big_n, n)
    term = math.exp(logp)
    total = 0.0
    x = start
    while True:
        total += term
        if x == stop or term <= total * 1e-17:
            return total
        if step > 0:   # pmf(x + 1) / pmf(x)
            term *= (big_k - x) * (n - x) / ((x + 1) * (big_n - big_k - n + x + 1))
        else:          # pmf(x - 1) / pmf(x)
            term *= x * (big_n - big_k - n + x) / ((big_k - x + 1) * (n - x + 1))
        x += step


def fisher_greater(k: int, n: int, big_k: int, big_n: int) -> float:
    """One-sided Fisher exact p-value P(X >= k), X ~ Hypergeometric(N=big_n, K=big_k, n).

    ``n`` of the ``big_n`` decided signatures of a county are this circulator's, ``big_k``
    of the county's are suspect, ``k`` of the circulator's are. Summed from ``k`` upwards
    when ``k`` is above the mode (small p-values stay exact), else as one minus the lower
    tail; either way only the terms that matter are added, so a county of millions costs
    a few hundred steps.
    """
    if not (0 <= k <= n <= big_n and 0 <= big_k <= big_n and k <= big_k):
        raise ValueError(f"impossible table: k={k} n={n} K={big_k} N={big_n}")
    lo = max(0, n - (big_n - big_k))
    hi = min(n, big_k)
    if k <= lo:
        return 1.0  # the whole support
    mode = (n + 1) * (big_k + 1) // (big_n + 2)
    if k > mode:
        return min(1.0, _tail(k, hi, 1, n, big_k, big_n))
    return min(1.0, max(0.0, 1.0 - _tail(k - 1, lo, -1, n, big_k, big_n)))


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """BH-adjusted p-values (q-values), in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [1.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, pvalues[i] * m / rank)
        out[i] = min(1.0, running)
    return out


@dataclass(frozen=True, slots=True)
class CirculatorCheck:
    county: str
    circulator_id: str
    counts: Counts
    decided: int
    suspect: int
    rate: float           # suspect / decided
    others_rate: float    # the same for the rest of the county
    county_rate: float    # the same for the whole county
    p_value: float = 1.0
    q_value: float = 1.0
    tested: bool = False
    flagged: bool = False
    suspect_by_reason: dict[Reason, int] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        if self.others_rate > 0:
            return self.rate / self.others_rate
        return math.inf if self.rate > 0 else 0.0


def _rate(k: int, n: int) -> float:
    return k / n if n else 0.0


def check_circulators(groups: Mapping[tuple[str, str], Counts], *, min_decided: int = MIN_DECIDED,
                      min_ratio: float = MIN_RATIO, fdr: float = FDR) -> list[CirculatorCheck]:
    """Every (county, circulator) pair with its rate, test and flag; flagged first."""
    by_county: dict[str, list[tuple[str, Counts]]] = {}
    for (county, circ), c in groups.items():
        by_county.setdefault(county, []).append((circ, c))
    checks: list[CirculatorCheck] = []
    for county, members in by_county.items():
        big_n = sum(decided(c) for _, c in members)
        big_k = sum(sum(suspect_by_reason(c).values()) for _, c in members)
        rows: list[CirculatorCheck] = []
        for circ, c in members:
            n = decided(c)
            reasons = suspect_by_reason(c)
            k = sum(reasons.values())
            tested = n >= min_decided and big_n - n > 0
            rows.append(CirculatorCheck(
                county=county, circulator_id=circ, counts=c, decided=n, suspect=k,
                rate=_rate(k, n), others_rate=_rate(big_k - k, big_n - n),
                county_rate=_rate(big_k, big_n),
                p_value=fisher_greater(k, n, big_k, big_n) if tested else 1.0,
                tested=tested, suspect_by_reason=reasons,
            ))
        tested_rows = [i for i, r in enumerate(rows) if r.tested]
        qs = benjamini_hochberg([rows[i].p_value for i in tested_rows])
        for i, q in zip(tested_rows, qs, strict=True):
            r = rows[i]
            far_above = r.rate > 0 and r.ratio >= min_ratio
            rows[i] = replace(r, q_value=q, flagged=far_above and q <= fdr)
        checks.extend(rows)
    checks.sort(key=lambda r: (not r.flagged, r.p_value, r.county, r.circulator_id))
    return checks
