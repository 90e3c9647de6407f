from __future__ import annotations

import itertools
from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from sigverify_common.vocab import Reason, Status
from sigverify_dedupe.domain import Entry, resolve


def e(sid: str, day: int | None, seq: int, reason: Reason = Reason.MATCHED) -> Entry:
    return Entry(sid, reason, date(2017, 5, day) if day else None, seq)


def test_earliest_signed_counts_and_the_rest_are_duplicates() -> None:
    out = resolve([e("b", 9, 1), e("a", 3, 2), e("c", 20, 3)])
    assert out == {"a": (Status.VALID, Reason.MATCHED), "b": (Status.INVALID, Reason.DUPLICATE),
                   "c": (Status.INVALID, Reason.DUPLICATE)}


def test_ties_go_to_the_first_received_and_undated_come_last() -> None:
    out = resolve([e("x", None, 1), e("y", 4, 3), e("z", 4, 2)])
    assert out["z"] == (Status.VALID, Reason.MATCHED)
    assert out["x"][1] is Reason.DUPLICATE


def test_uncountable_signatures_keep_their_reason_and_do_not_block() -> None:
    out = resolve([e("a", 1, 1, Reason.WRONG_COUNTY), e("b", 2, 2),
                   e("c", 3, 3, Reason.PENDING_REVIEW)])
    assert out == {"a": (Status.INVALID, Reason.WRONG_COUNTY),
                   "b": (Status.VALID, Reason.MATCHED),
                   "c": (Status.REVIEW, Reason.PENDING_REVIEW)}


@given(st.lists(st.tuples(st.integers(1, 28) | st.none(), st.booleans()), min_size=1, max_size=6))
def test_outcome_does_not_depend_on_arrival_order(spec: list[tuple[int | None, bool]]) -> None:
    entries = [e(f"s{i}", day, i, Reason.MATCHED if ok else Reason.VOTER_INACTIVE)
               for i, (day, ok) in enumerate(spec)]
    outcomes = {tuple(sorted(resolve(p).items())) for p in itertools.permutations(entries)}
    assert len(outcomes) == 1
    result = dict(next(iter(outcomes)))
    assert sum(1 for s, _ in result.values() if s is Status.VALID) == (1 if any(ok for _, ok in spec) else 0)
