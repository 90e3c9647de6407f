"""Duplicate resolution: pure.

Among a voter's signatures on one petition that the matcher found countable (reason
MATCHED), the earliest signed counts (ties broken by order of receipt); the others are
INVALID with reason DUPLICATE. Re-resolving after every arrival makes the outcome
independent of arrival order, so a late-arriving earlier signature takes the count over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from sigverify_common.vocab import Reason, Status, status_for


@dataclass(frozen=True, slots=True)
class Entry:
    signature_id: str
    match_reason: Reason
    signed_on: date | None
    received_seq: int


def resolve(entries: Iterable[Entry]) -> dict[str, tuple[Status, Reason]]:
    """Final (status, reason) for each signature of one voter on one petition."""
    items = list(entries)
    countable = [e for e in items if e.match_reason is Reason.MATCHED]
    winner = min(
        countable,
        key=lambda e: (e.signed_on is None, e.signed_on or date.min, e.received_seq),
        default=None,
    )
    out: dict[str, tuple[Status, Reason]] = {}
    for e in items:
        if e.match_reason is not Reason.MATCHED:
            out[e.signature_id] = (status_for(e.match_reason), e.match_reason)
        elif winner is not None and e.signature_id == winner.signature_id:
            out[e.signature_id] = (Status.VALID, Reason.MATCHED)
        else:
            out[e.signature_id] = (Status.INVALID, Reason.DUPLICATE)
    return out
