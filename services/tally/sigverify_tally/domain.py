"""Folding per-group status counts into tallies: pure."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import TypeVar

from sigverify_common.vocab import Reason, Status

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class Counts:
    received: int = 0
    valid: int = 0
    invalid: int = 0
    review: int = 0
    by_reason: dict[Reason, int] = field(default_factory=dict)
    #: Stored but held back from matching (outside a random sample): never pending.
    not_sampled: int = 0

    @property
    def verified(self) -> int:
        return self.valid + self.invalid + self.review

    @property
    def pending(self) -> int:
        return max(0, self.received - self.not_sampled - self.verified)

    @property
    def duplicates(self) -> int:
        return self.by_reason.get(Reason.DUPLICATE, 0)

    def add(self, status: Status, reason: Reason, n: int) -> None:
        if status is Status.VALID:
            self.valid += n
        elif status is Status.REVIEW:
            self.review += n
        else:
            self.invalid += n
            self.by_reason[reason] = self.by_reason.get(reason, 0) + n


def fold(received: Iterable[tuple[K, int] | tuple[K, int, int]],
         statuses: Iterable[tuple[K, Status, Reason, int]]) -> dict[K, Counts]:
    """Counts per group key from (key, received[, not sampled]) and (key, status, reason, n) rows."""
    out: dict[K, Counts] = {}
    for row in received:
        c = out.setdefault(row[0], Counts())
        c.received += row[1]
        if len(row) > 2:
            c.not_sampled += row[2]
    for key, status, reason, n in statuses:
        out.setdefault(key, Counts()).add(status, reason, n)
    return out


def total(groups: Iterable[Counts]) -> Counts:
    t = Counts()
    for c in groups:
        t.received += c.received
        t.valid += c.valid
        t.invalid += c.invalid
        t.review += c.review
        t.not_sampled += c.not_sampled
        for r, n in c.by_reason.items():
            t.by_reason[r] = t.by_reason.get(r, 0) + n
    return t


def progress_percent(valid: int, required: int) -> float:
    return round(100.0 * valid / required, 2) if required > 0 else 0.0


def days_to_deadline(deadline: date, today: date) -> int:
    return (deadline - today).days
