from __future__ import annotations

from datetime import date

from sigverify_common.vocab import Reason, Status
from sigverify_tally.domain import days_to_deadline, fold, progress_percent, total


def test_fold_counts_by_group_and_reason() -> None:
    groups = fold(
        [("Kern", 5), ("Orange", 2)],
        [("Kern", Status.VALID, Reason.MATCHED, 2), ("Kern", Status.INVALID, Reason.DUPLICATE, 1),
         ("Kern", Status.REVIEW, Reason.PENDING_REVIEW, 1),
         ("Orange", Status.INVALID, Reason.NOT_REGISTERED, 2)],
    )
    kern = groups["Kern"]
    assert (kern.received, kern.valid, kern.invalid, kern.review, kern.pending) == (5, 2, 1, 1, 1)
    assert kern.duplicates == 1
    t = total(groups.values())
    assert (t.received, t.verified, t.pending) == (7, 6, 1)
    assert t.by_reason == {Reason.DUPLICATE: 1, Reason.NOT_REGISTERED: 2}


def test_progress_and_deadline() -> None:
    assert progress_percent(292_704, 585_407) == 50.0
    assert progress_percent(1, 0) == 0.0
    assert days_to_deadline(date(2017, 7, 25), date(2017, 7, 20)) == 5
