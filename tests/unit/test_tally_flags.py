"""Circulator flags: the Fisher exact test, Benjamini-Hochberg and the flagging rule."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigverify_common.vocab import Reason
from sigverify_tally.domain import Counts
from sigverify_tally.flags import (
    MIN_DECIDED,
    benjamini_hochberg,
    check_circulators,
    fisher_greater,
)


def counts(valid: int, not_registered: int = 0, other_invalid: int = 0, review: int = 0,
           duplicate: int = 0) -> Counts:
    c = Counts(received=valid + not_registered + other_invalid + review + duplicate,
               valid=valid, invalid=not_registered + other_invalid + duplicate, review=review)
    for r, n in ((Reason.NOT_REGISTERED, not_registered), (Reason.WRONG_COUNTY, other_invalid),
                 (Reason.DUPLICATE, duplicate)):
        if n:
            c.by_reason[r] = n
    return c


def test_fisher_matches_the_lady_tasting_tea() -> None:
    # Fisher's own table [[3, 1], [1, 3]]: one-sided p = 17/70.
    assert fisher_greater(3, 4, 4, 8) == pytest.approx(17 / 70)
    # All four right: 1/70.
    assert fisher_greater(4, 4, 4, 8) == pytest.approx(1 / 70)
    assert fisher_greater(0, 4, 4, 8) == 1.0


def test_fisher_rejects_impossible_tables() -> None:
    with pytest.raises(ValueError):
        fisher_greater(5, 4, 4, 8)


def test_benjamini_hochberg_known_values() -> None:
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.20])
    assert q == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])
    assert benjamini_hochberg([]) == []


def test_a_circulator_with_many_not_registered_is_flagged_and_honest_ones_are_not() -> None:
    groups = {("Kern", f"C-{i}"): counts(valid=85, not_registered=10, other_invalid=5)
              for i in range(10)}
    groups[("Kern", "C-BAD")] = counts(valid=40, not_registered=45, other_invalid=5)
    groups[("Kern", "C-SMALL")] = counts(valid=2, not_registered=8)   # too few to test
    checks = {c.circulator_id: c for c in check_circulators(groups)}
    bad = checks["C-BAD"]
    assert bad.flagged and bad.tested
    assert bad.decided == 90 and bad.suspect == 45
    assert bad.rate == pytest.approx(0.5)
    assert bad.others_rate == pytest.approx(108 / 1010)   # C-SMALL is part of the rest
    assert bad.p_value < 1e-10 and bad.q_value <= 0.01
    assert not any(c.flagged for k, c in checks.items() if k != "C-BAD")
    assert not checks["C-SMALL"].tested and checks["C-SMALL"].p_value == 1.0
    assert check_circulators(groups)[0].circulator_id == "C-BAD"   # flagged first


def test_review_and_non_suspect_reasons_do_not_count() -> None:
    groups = {("Kern", f"C-{i}"): counts(valid=90, not_registered=10) for i in range(5)}
    # Many in review and many out-of-county signers: not what a circulator's fraud produces.
    groups[("Kern", "C-X")] = counts(valid=50, not_registered=5, other_invalid=45, review=300)
    x = next(c for c in check_circulators(groups) if c.circulator_id == "C-X")
    assert x.decided == 100 and x.suspect == 5 and not x.flagged


def test_duplicates_are_suspect() -> None:
    groups = {("Kern", f"C-{i}"): counts(valid=95, duplicate=5) for i in range(8)}
    groups[("Kern", "C-DUP")] = counts(valid=50, duplicate=50)
    assert next(c for c in check_circulators(groups) if c.circulator_id == "C-DUP").flagged


def test_circulators_are_compared_within_their_county() -> None:
    # Orange's circulators all have a high rate (a county with many movers, say): no flags
    # there; the same rate in Kern, where others are clean, is flagged.
    groups = {("Orange", f"O-{i}"): counts(valid=60, not_registered=40) for i in range(6)}
    groups.update({("Kern", f"K-{i}"): counts(valid=95, not_registered=5) for i in range(6)})
    groups[("Kern", "K-BAD")] = counts(valid=60, not_registered=40)
    flagged = {(c.county, c.circulator_id) for c in check_circulators(groups) if c.flagged}
    assert flagged == {("Kern", "K-BAD")}


def test_a_lone_circulator_is_not_tested() -> None:
    [only] = check_circulators({("Kern", "C-1"): counts(valid=10, not_registered=90)})
    assert not only.tested and not only.flagged


# -- properties ------------------------------------------------------------------------------

@given(k=st.integers(0, 60), n=st.integers(0, 60), big_k=st.integers(0, 200),
       big_n=st.integers(0, 400))
def test_fisher_p_is_a_probability_and_falls_as_k_rises(k: int, n: int, big_k: int, big_n: int) -> None:
    n = min(n, big_n)
    big_k = min(big_k, big_n)
    k = min(k, n, big_k)
    if k < n - (big_n - big_k):
        k = n - (big_n - big_k)
    p = fisher_greater(k, n, big_k, big_n)
    assert 0.0 <= p <= 1.0
    if k + 1 <= min(n, big_k):
        assert fisher_greater(k + 1, n, big_k, big_n) <= p + 1e-12


@given(st.lists(st.floats(0, 1), max_size=40))
def test_bh_q_values_are_at_least_p_and_keep_the_order(ps: list[float]) -> None:
    qs = benjamini_hochberg(ps)
    assert all(p <= q + 1e-12 and q <= 1.0 for p, q in zip(ps, qs, strict=True))
    for i in range(len(ps)):
        for j in range(len(ps)):
            if ps[i] <= ps[j]:
                assert qs[i] <= qs[j] + 1e-12


@settings(max_examples=200)
@given(others=st.integers(1, 30), denominator=st.integers(1, 25), data=st.data())
def test_a_circulator_at_the_county_rate_is_never_flagged(others: int, denominator: int,
                                                          data: st.DataObject) -> None:
    # Everyone, this circulator included, at exactly the same rate bad/denominator: sizes are
    # whole multiples of the denominator, so no rounding can make one circulator look worse.
    bad_per_unit = data.draw(st.integers(0, denominator), label="bad_per_unit")
    min_units = -(-MIN_DECIDED // denominator)
    per_other = data.draw(st.integers(min_units, max(min_units, 400 // denominator)), label="units")
    n = data.draw(st.integers(min_units, max(min_units, 400 // denominator)), label="units_x")

    def at_rate(units: int) -> Counts:
        bad = units * bad_per_unit
        return counts(valid=units * denominator - bad, not_registered=bad)

    groups = {("Kern", f"C-{i}"): at_rate(per_other) for i in range(others)}
    groups[("Kern", "C-X")] = at_rate(n)
    assert not any(c.flagged for c in check_circulators(groups))


@settings(max_examples=200)
@given(others=st.integers(1, 10), base_rate_pct=st.integers(0, 40), extra_pct=st.integers(10, 50),
       scale=st.integers(1, 4))
def test_a_real_excess_becomes_significant_with_enough_signatures(
        others: int, base_rate_pct: int, extra_pct: int, scale: int) -> None:
    """A circulator at >= 1.5x (and >= 10 points above) the rest is flagged once counts are large."""
    bad_rate_pct = min(100, max(base_rate_pct * 2, base_rate_pct + extra_pct))
    size = 100 * 10 ** scale
    groups = {("Kern", f"C-{i}"): counts(valid=size - size * base_rate_pct // 100,
                                          not_registered=size * base_rate_pct // 100)
              for i in range(others)}
    groups[("Kern", "C-X")] = counts(valid=size - size * bad_rate_pct // 100,
                                     not_registered=size * bad_rate_pct // 100)
    small = {k: counts(valid=c.valid // (10 ** scale), not_registered=c.invalid // (10 ** scale))
             for k, c in groups.items()}
    big = next(c for c in check_circulators(groups) if c.circulator_id == "C-X")
    little = next(c for c in check_circulators(small) if c.circulator_id == "C-X")
    assert big.flagged
    assert big.p_value <= little.p_value
    assert not math.isnan(big.q_value)
