"""Tally's statutory gauges: an Assessment's values, and stale series removed."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from sigverify_common.sampling import CALIFORNIA, Method
from sigverify_common.vocab import Reason
from sigverify_tally import repository
from sigverify_tally.domain import Counts
from sigverify_tally.service import (
    COUNTIES,
    COUNTIES_CLOSED,
    NOT_SAMPLED,
    OUTCOME,
    PROJECTED,
    RAW,
    REQUIRED,
    MetricsRefresher,
)
from sigverify_tally.statutory import Assessment, CountyInput, Stage, assess

RS = Method.RANDOM_SAMPLE
values = MetricsRefresher.statutory_values


def sample(valid: int, duplicates: int = 0, other: int = 0) -> Counts:
    c = Counts(valid=valid, invalid=duplicates + other)
    if duplicates:
        c.by_reason[Reason.DUPLICATE] = duplicates
    if other:
        c.by_reason[Reason.NOT_REGISTERED] = other
    return c


def everything(received: int, valid: int, invalid: int, not_sampled: int) -> Counts:
    return Counts(received=received, valid=valid, invalid=invalid, not_sampled=not_sampled)


def outcomes(v: dict[Any, float], petition: str) -> dict[str, float]:
    return {labels[1]: n for (gauge, labels), n in v.items() if gauge is OUTCOME and labels[0] == petition}


def test_a_decided_sample_sets_every_gauge_and_the_one_outcome() -> None:
    # DOMAIN.md's worked example: raw 24,034, sample 722, 516 valid, 2 duplicates -> 15,028,
    # between 95 % and 110 % of 15,000: every signature is counted.
    county = CountyInput("Sacramento", 24_034, True, 722, "s", sample(516, 2, 204))
    total = everything(24_034, 516, 206, 24_034 - 722)
    a = assess(RS, CALIFORNIA, 15_000, [county, CountyInput("Inyo", 0, True)], total, {})
    v = values("P-1", a, total)
    assert v[REQUIRED, ("P-1",)] == 15_000
    assert v[RAW, ("P-1",)] == 24_034
    assert v[PROJECTED, ("P-1",)] == 15_028
    assert v[NOT_SAMPLED, ("P-1",)] == 24_034 - 722
    assert (v[COUNTIES_CLOSED, ("P-1",)], v[COUNTIES, ("P-1",)]) == (2, 2)
    assert outcomes(v, "P-1") == {"PENDING": 0, "FAILS": 0, "FULL_COUNT": 1, "QUALIFIES": 0}


def test_a_provisional_projection_is_set_while_pending_but_not_before_any_verification() -> None:
    open_county = CountyInput("Inyo", 500, False)
    total = everything(1500, 0, 0, 1000)
    nothing = assess(RS, CALIFORNIA, 500, [CountyInput("Kern", 1000, True, 500, "s"), open_county],
                     total, {})
    v = values("P-2", nothing, total)
    assert (PROJECTED, ("P-2",)) not in v
    assert (v[COUNTIES_CLOSED, ("P-2",)], v[COUNTIES, ("P-2",)]) == (1, 2)
    assert outcomes(v, "P-2") == {"PENDING": 1, "FAILS": 0, "FULL_COUNT": 0, "QUALIFIES": 0}
    partial = CountyInput("Kern", 1000, True, 500, "s", sample(100, 0, 20))
    some = assess(RS, CALIFORNIA, 500, [partial, open_county], everything(1500, 100, 20, 1000), {})
    assert some.provisional
    assert values("P-2", some, total)[PROJECTED, ("P-2",)] == some.projected_total > 0


def test_a_full_count_petition_has_no_projection() -> None:
    total = everything(300, 200, 10, 0)
    a = assess(Method.FULL_COUNT, CALIFORNIA, 200, [CountyInput("Kern", 300, False)], total, {})
    v = values("P-3", a, total)
    assert (PROJECTED, ("P-3",)) not in v
    assert v[NOT_SAMPLED, ("P-3",)] == 0 and v[RAW, ("P-3",)] == 300
    assert outcomes(v, "P-3") == {"PENDING": 0, "FAILS": 0, "FULL_COUNT": 0, "QUALIFIES": 1}


def test_a_raw_count_failure_reads_fails() -> None:
    counties = [CountyInput("Kern", 600, True, 500, "s", sample(500))]
    total = everything(600, 500, 0, 100)
    a = assess(RS, CALIFORNIA, 1000, counties, total, {})
    assert a.decided_by is Stage.RAW_COUNT
    assert outcomes(values("P-4", a, total), "P-4")["FAILS"] == 1


async def test_refresh_sets_the_gauges_and_removes_a_vanished_petitions_series(
        monkeypatch: pytest.MonkeyPatch) -> None:
    county = CountyInput("Kern", 2000, True, 500, "s", sample(400, 0, 100))
    total = everything(2000, 400, 100, 1500)
    rs: Assessment = assess(RS, CALIFORNIA, 1600, [county], total, {})
    fc: Assessment = assess(Method.FULL_COUNT, CALIFORNIA, 1600, [county], total, {})
    petitions = [repository.StatutoryMetrics("M-RS", rs, total),
                 repository.StatutoryMetrics("M-FC", fc, total)]

    async def none(pool: object) -> list[object]:
        return []

    async def statutory(pool: object) -> list[repository.StatutoryMetrics]:
        return list(petitions)

    monkeypatch.setattr(repository, "status_counts", none)
    monkeypatch.setattr(repository, "received_counts", none)
    monkeypatch.setattr(repository, "statutory_metrics", statutory)
    refresher = MetricsRefresher(None)  # type: ignore[arg-type]  # the pool is never used

    def get(name: str, petition: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"petition": petition, **labels})

    await refresher.refresh()
    assert get("sigverify_tally_projected", "M-RS") == rs.projected_total
    assert get("sigverify_tally_projected", "M-FC") is None
    assert get("sigverify_tally_outcome", "M-RS", outcome="FULL_COUNT") == 1
    assert get("sigverify_tally_required", "M-FC") == 1600

    petitions.pop()
    await refresher.refresh()
    assert get("sigverify_tally_required", "M-FC") is None
    assert get("sigverify_tally_outcome", "M-FC", outcome="PENDING") is None
    assert get("sigverify_tally_required", "M-RS") == 1600
