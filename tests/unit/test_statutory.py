"""The statutory process's stages and decisions (pure), and the seeded draw."""

from __future__ import annotations

import uuid
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from sigverify_common.sampling import (
    CALIFORNIA,
    Method,
    SamplingRules,
    draw,
    draw_key,
    draw_order,
    sample_size,
)
from sigverify_common.vocab import Reason
from sigverify_tally.domain import Counts
from sigverify_tally.projection import Outcome
from sigverify_tally.statutory import CountyFigures, CountyInput, Stage, assess

RS = Method.RANDOM_SAMPLE


def sample(valid: int, duplicates: int = 0, other: int = 0, review: int = 0) -> Counts:
    c = Counts(valid=valid, invalid=duplicates + other, review=review)
    if duplicates:
        c.by_reason[Reason.DUPLICATE] = duplicates
    if other:
        c.by_reason[Reason.NOT_REGISTERED] = other
    return c


def everything(received: int, valid: int, invalid: int, not_sampled: int, review: int = 0) -> Counts:
    return Counts(received=received, valid=valid, invalid=invalid, review=review,
                  not_sampled=not_sampled)


def test_the_worked_example_decides_from_its_projection() -> None:
    # DOMAIN.md: raw 24,034, sample 722, 516 valid, 2 duplicates -> projected 15,028.
    county = CountyInput("Sacramento", 24_034, True, 722, "s", sample(516, 2, 204))
    total = everything(24_034, 516, 206, 24_034 - 722)
    for required, outcome in ((13_000, Outcome.QUALIFIES), (15_000, Outcome.FULL_COUNT),
                              (16_000, Outcome.FAILS)):
        a = assess(RS, CALIFORNIA, required, [county], total, {})
        assert a.projected_total == 15_028
        assert [(d.stage, d.outcome) for d in a.due] == [(Stage.RANDOM_SAMPLE, outcome)]
        figures = a.decisions[Stage.RANDOM_SAMPLE].detail["counties"][0]
        assert figures["projection"]["c"] == 2_150 and figures["projection"]["v"] == 17_178
        assert not a.provisional


def test_nothing_is_decided_while_a_county_is_open_or_its_sample_incomplete() -> None:
    closed = CountyInput("Kern", 1000, True, 500, "s", sample(400, 0, 100))
    total = everything(1500, 400, 100, 1000)
    a = assess(RS, CALIFORNIA, 500, [closed, CountyInput("Inyo", 500, False)], total, {})
    assert a.due == [] and a.outcome is None and a.stage == "raw count" and a.provisional
    # Closed, but two sampled signatures still in review: review is not final.
    partial = CountyInput("Kern", 1000, True, 500, "s", sample(398, 0, 100, review=2))
    a = assess(RS, CALIFORNIA, 500, [partial], everything(1000, 398, 100, 500, 2), {})
    assert a.due == [] and a.stage == "random sample"
    # The provisional projection is made from what is verified: 398/498 valid.
    assert a.counties[0].projection is not None and a.counties[0].projection.sample == 498


def test_a_statewide_raw_count_below_the_requirement_fails_first() -> None:
    counties = [CountyInput("Kern", 600, True, 500, "s", sample(500)),
                CountyInput("Inyo", 300, True, 300, "t", sample(300))]
    a = assess(RS, CALIFORNIA, 1000, counties, everything(900, 800, 0, 100), {})
    assert [(d.stage, d.outcome) for d in a.due] == [(Stage.RAW_COUNT, Outcome.FAILS)]
    assert a.outcome is Outcome.FAILS and a.decided_by is Stage.RAW_COUNT
    assert "raw count" in a.explanation


def test_full_count_qualifies_at_the_requirement_and_reports_the_stop() -> None:
    county = CountyInput("Kern", 2000, True, 500, "s", sample(400, 0, 100))
    decided = assess(RS, CALIFORNIA, 1600, [county], everything(2000, 400, 100, 1500), {})
    assert decided.due[0].outcome is Outcome.FULL_COUNT and decided.outcome is Outcome.FULL_COUNT
    recorded = {Stage.RANDOM_SAMPLE: decided.due[0]}
    # Counting: 1,500 valid of 1,900 verified, 100 left.
    a = assess(RS, CALIFORNIA, 1600, [county], everything(2000, 1500, 400, 100), recorded)
    assert a.due == [] and a.stage == "full count" and a.full_count and a.counted_remaining == 100
    # The frozen sample figures stay whatever the full count changes.
    assert a.counties[0].valid_in_sample == 400
    a = assess(RS, CALIFORNIA, 1600, [county], everything(2000, 1600, 350, 50), recorded)
    assert [(d.stage, d.outcome) for d in a.due] == [(Stage.FULL_COUNT, Outcome.QUALIFIES)]
    assert a.stopped_at_requirement and a.outcome is Outcome.QUALIFIES
    assert "AB 2219" in a.explanation


def test_full_count_fails_only_when_every_signature_is_verified() -> None:
    county = CountyInput("Kern", 2000, True, 500, "s", sample(400, 0, 100))
    first = assess(RS, CALIFORNIA, 1600, [county], everything(2000, 400, 100, 1500), {})
    recorded = {Stage.RANDOM_SAMPLE: first.due[0]}
    a = assess(RS, CALIFORNIA, 1600, [county], everything(2000, 1590, 400, 0, review=10), recorded)
    assert a.due == []
    a = assess(RS, CALIFORNIA, 1600, [county], everything(2000, 1595, 405, 0), recorded)
    assert [(d.stage, d.outcome) for d in a.due] == [(Stage.FULL_COUNT, Outcome.FAILS)]
    assert not a.stopped_at_requirement


def test_a_full_count_petition_qualifies_when_its_count_reaches_the_requirement() -> None:
    counties = [CountyInput("Kern", 300, False)]
    a = assess(Method.FULL_COUNT, CALIFORNIA, 200, counties, everything(300, 150, 10, 0), {})
    assert a.due == [] and a.outcome is None
    a = assess(Method.FULL_COUNT, CALIFORNIA, 200, counties, everything(300, 200, 10, 0), {})
    assert [(d.stage, d.outcome) for d in a.due] == [(Stage.FULL_COUNT, Outcome.QUALIFIES)]
    assert not a.stopped_at_requirement


def test_recorded_decisions_are_not_due_again() -> None:
    county = CountyInput("Kern", 2000, True, 500, "s", sample(480, 0, 20))
    first = assess(RS, CALIFORNIA, 1000, [county], everything(2000, 480, 20, 1500), {})
    assert first.due[0].outcome is Outcome.QUALIFIES
    again = assess(RS, CALIFORNIA, 1000, [county], everything(2000, 480, 20, 1500),
                   {Stage.RANDOM_SAMPLE: first.due[0]})
    assert again.due == [] and again.outcome is Outcome.QUALIFIES
    assert again.decided_by is Stage.RANDOM_SAMPLE and again.stage == "decided"


def test_other_states_bands_are_parameters() -> None:
    county = CountyInput("Kern", 2000, True, 500, "s", sample(250, 0, 250))  # projects 1,000
    strict = SamplingRules(fail_below=Decimal(100), qualify_above=Decimal(100))
    a = assess(RS, strict, 1000, [county], everything(2000, 250, 250, 1500), {})
    assert a.projected_total == 1000 and a.due[0].outcome is Outcome.FULL_COUNT
    a = assess(RS, strict, 999, [county], everything(2000, 250, 250, 1500), {})
    assert a.due[0].outcome is Outcome.QUALIFIES


@given(st.lists(st.builds(lambda v, d, o: (v, d, o), st.integers(0, 300), st.integers(0, 20),
                          st.integers(0, 200)), min_size=1, max_size=5),
       st.integers(1, 50_000))
@settings(max_examples=200)
def test_county_figures_survive_the_record(rows: list[tuple[int, int, int]], extra: int) -> None:
    counties = []
    for i, (v, d, o) in enumerate(rows):
        size = v + d + o
        raw = size + (extra if size else 0)
        counties.append(CountyInput(f"C{i}", raw, True, sample_size(raw) if size else 0, "s",
                                    sample(v, d, o)))
    for c in counties:
        f = assess(RS, CALIFORNIA, 10, [c], Counts(), {}).counties[0]
        assert CountyFigures.from_json(f.to_json()) == f


# --------------------------------------------------------------------------- the draw

IDS = [str(uuid.UUID(int=i * 7919 + 13)) for i in range(2000)]


def test_the_draw_is_the_smallest_sha256_keys_whatever_the_listing_order() -> None:
    drawn = draw("seed-1", IDS, 60)
    assert drawn == draw("seed-1", list(reversed(IDS)), 60)
    keys = sorted(draw_key("seed-1", i) for i in IDS)
    assert [draw_key("seed-1", i) for i in drawn] == keys[:60]
    assert draw("seed-2", IDS, 60) != drawn
    assert draw_order("seed-1", IDS)[0] == (drawn[0], keys[0])


@given(st.text(min_size=1, max_size=20), st.integers(0, 2000))
@settings(max_examples=50)
def test_a_seed_redraws_the_same_sample(seed: str, n: int) -> None:
    first = draw(seed, IDS, n)
    assert len(first) == n == len(set(first))
    assert draw(seed, IDS[::-1], n) == first
    assert draw(seed, IDS, n + 1)[:n] == first  # a larger sample contains the smaller


def test_every_signature_has_the_same_chance() -> None:
    # 400 seeds drawing 10 of 100: each id is drawn about 40 times (binomial, sd ~6).
    ids = IDS[:100]
    hits = dict.fromkeys(ids, 0)
    for s in range(400):
        for sid in draw(f"seed-{s}", ids, 10):
            hits[sid] += 1
    assert min(hits.values()) > 15 and max(hits.values()) < 70
    assert sum(hits.values()) == 4000


def test_signatures_held_back_are_not_pending() -> None:
    c = Counts(received=10, valid=2, invalid=1, review=1, not_sampled=5)
    assert c.pending == 1 and c.verified == 4
