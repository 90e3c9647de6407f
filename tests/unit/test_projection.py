"""The statutory projection, to the digit of DOMAIN.md's worked examples, and its rules."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sigverify_tally.projection import Outcome, decide, project, sample_size, statewide


def test_worked_example_2_ccr_20540() -> None:
    p = project(raw=24_034, sample=722, valid_in_sample=516, duplicates_in_sample=2)
    assert p.rate_percent == Decimal("71.47")
    assert p.v == 17_178
    assert p.a == Decimal("33.2881")
    assert p.b.quantize(Decimal("0.0001")) == Decimal("1074.8095")
    assert p.c == 2_150
    assert p.projected == 15_028


def test_worked_example_2012_local_initiative_follows_the_regulation() -> None:
    p = project(raw=10_007, sample=500, valid_in_sample=262, duplicates_in_sample=1)
    assert (p.rate_percent, p.v, p.a) == (Decimal("52.40"), 5_244, Decimal("20.0140"))
    assert p.b.quantize(Decimal("0.001")) == Decimal("380.546")
    # The county published 4,864 by rounding C down; the regulation rounds it up.
    assert (p.c, p.projected) == (381, 4_863)


@pytest.mark.parametrize("raw, size", [(0, 0), (1, 1), (500, 500), (501, 500), (16_666, 500),
                                       (16_667, 501), (24_034, 722), (100_000, 3_000)])
def test_sample_size_is_500_or_3_percent_whichever_is_greater(raw: int, size: int) -> None:
    assert sample_size(raw) == size


@pytest.mark.parametrize("total, outcome", [(94_999, Outcome.FAILS), (95_000, Outcome.FULL_COUNT),
                                            (110_000, Outcome.FULL_COUNT),
                                            (110_001, Outcome.QUALIFIES)])
def test_decision_bands(total: int, outcome: Outcome) -> None:
    assert decide(total, 100_000) is outcome


def test_statewide_sums_the_counties() -> None:
    counties = [project(24_034, 722, 516, 2), project(10_007, 500, 262, 1)]
    assert statewide(counties) == 15_028 + 4_863


counts = st.integers(min_value=1, max_value=2_000_000).flatmap(
    lambda raw: st.tuples(st.just(raw), st.just(sample_size(raw))).flatmap(
        lambda rs: st.tuples(st.just(rs[0]), st.just(rs[1]),
                             st.integers(0, rs[1])).flatmap(
            lambda rsv: st.tuples(st.just(rsv[0]), st.just(rsv[1]), st.just(rsv[2]),
                                  st.integers(0, rsv[1] - rsv[2])))))


@given(counts)
def test_rounding_rules_hold_exactly(c: tuple[int, int, int, int]) -> None:
    raw, sample, valid, dups = c
    p = project(raw, sample, valid, dups)
    if sample == raw:                       # every signature verified: a count, not a projection
        assert (p.v, p.c, p.projected) == (valid, 0, valid)
        return
    exact_rate = Fraction(100 * valid, sample)
    assert abs(Fraction(p.rate_percent) - exact_rate) <= Fraction(1, 200)   # two decimals
    assert p.v == math.ceil(raw * Fraction(p.rate_percent) / 100)           # V rounds up
    assert abs(Fraction(p.a) - Fraction(raw, sample)) <= Fraction(1, 20_000)  # four decimals
    assert p.c == math.ceil(dups * Fraction(p.a) * (Fraction(p.a) - 1))     # C rounds up
    assert p.projected == p.v - p.c
    assert 0 <= p.v <= raw


@given(counts)
def test_more_valid_never_projects_fewer(c: tuple[int, int, int, int]) -> None:
    raw, sample, valid, dups = c
    if valid + dups < sample:
        assert project(raw, sample, valid + 1, dups).projected >= project(raw, sample, valid,
                                                                           dups).projected


def test_impossible_samples_are_refused() -> None:
    with pytest.raises(ValueError):
        project(100, 0, 0, 0)
    with pytest.raises(ValueError):
        project(100, 101, 0, 0)
    with pytest.raises(ValueError):
        project(1_000, 500, 400, 101)
