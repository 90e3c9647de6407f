from __future__ import annotations

import itertools
from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from sigverify_common.vocab import DuplicatePolicy, Reason, Status
from sigverify_dedupe.domain import Entry, Rules, resolve


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


def test_invalidate_all_counts_no_signature_of_a_voter_who_signed_twice() -> None:
    rules = Rules(policy=DuplicatePolicy.INVALIDATE_ALL)
    assert resolve([e("a", 3, 1)], rules) == {"a": (Status.VALID, Reason.MATCHED)}
    out = resolve([e("a", 3, 1), e("b", 9, 2), e("c", 1, 3, Reason.VOTER_INACTIVE)], rules)
    assert out == {"a": (Status.INVALID, Reason.DUPLICATE), "b": (Status.INVALID, Reason.DUPLICATE),
                   "c": (Status.INVALID, Reason.VOTER_INACTIVE)}


def test_online_signatures_never_count_unless_accepted_but_reveal_duplicates() -> None:
    online = Entry("o", Reason.MATCHED, date(2017, 5, 1), 1, online=True)
    paper = Entry("p", Reason.MATCHED, date(2017, 5, 9), 2)
    assert resolve([online, paper]) == {"o": (Status.INVALID, Reason.ONLINE_NOT_ACCEPTED),
                                        "p": (Status.VALID, Reason.MATCHED)}
    assert resolve([online, paper], Rules(policy=DuplicatePolicy.INVALIDATE_ALL)) == {
        "o": (Status.INVALID, Reason.ONLINE_NOT_ACCEPTED), "p": (Status.INVALID, Reason.DUPLICATE)}
    assert resolve([online, paper], Rules(accept_online=True)) == {
        "o": (Status.VALID, Reason.MATCHED), "p": (Status.INVALID, Reason.DUPLICATE)}
    assert resolve([online]) == {"o": (Status.INVALID, Reason.ONLINE_NOT_ACCEPTED)}


@given(st.lists(st.tuples(st.integers(1, 28) | st.none(), st.booleans(), st.booleans()),
                min_size=1, max_size=5),
       st.sampled_from(list(DuplicatePolicy)), st.booleans())
def test_at_most_one_signature_of_a_voter_counts(spec: list[tuple[int | None, bool, bool]],
                                                 policy: DuplicatePolicy, accept_online: bool) -> None:
    entries = [Entry(f"s{i}", Reason.MATCHED, date(2017, 5, d) if d else None, i, online)
               for i, (d, online, _) in enumerate(spec)]
    out = resolve(entries, Rules(policy, accept_online))
    valid = [s for s, (status, _) in out.items() if status is Status.VALID]
    assert len(valid) <= 1
    if policy is DuplicatePolicy.INVALIDATE_ALL and len(entries) > 1:
        assert valid == []
