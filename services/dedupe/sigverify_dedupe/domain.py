"""Duplicate resolution: pure.

One voter, one counted signature per petition. Among a voter's signatures that the matcher
(or a reviewer) found countable (reason MATCHED):

- ``keep-first``: the earliest signed counts, ties broken by order of receipt; the others
  are INVALID with reason DUPLICATE.
- ``invalidate-all``: when the voter signed more than once, none counts (all DUPLICATE).

An online signature on a petition that does not accept them never counts (reason
ONLINE_NOT_ACCEPTED), yet it is still a signature of that voter: it takes part in finding
duplicates (under ``invalidate-all`` a voter who signed online and on paper has signed
twice). Re-resolving a voter's group after every arrival makes the outcome independent of
arrival order, so a late-arriving earlier signature takes the count over.

Each signature's outcome depends only on its own fields and on the group's *winner* (the
signature that counts, or none): every other countable signature is a DUPLICATE whoever
wins. The winner of a whole group is the winner of any part of it that holds the group's two
earliest MATCHED signatures of each source (paper, online): the earliest countable one for
``keep-first``, and whether there is one MATCHED signature or more for ``invalidate-all``.
So a group is re-resolved from that part, the signature counted before, and what arrives or
changes (the consumer's ``DECIDING_ROWS``); no other signature can change its outcome.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from sigverify_common.vocab import DuplicatePolicy, Reason, Status, status_for


@dataclass(frozen=True, slots=True)
class Entry:
    signature_id: str
    match_reason: Reason
    signed_on: date | None
    received_seq: int
    online: bool = False


@dataclass(frozen=True, slots=True)
class Rules:
    """A petition's settings that decide duplicates and online signatures."""

    policy: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST
    accept_online: bool = False


def _order(e: Entry) -> tuple[bool, date, int]:
    return (e.signed_on is None, e.signed_on or date.min, e.received_seq)


def resolve(entries: Iterable[Entry], rules: Rules | None = None) -> dict[str, tuple[Status, Reason]]:
    """Final (status, reason) for each signature of one voter on one petition."""
    rules = rules or Rules()
    items = list(entries)
    signed = [e for e in items if e.match_reason is Reason.MATCHED]
    countable = [e for e in signed if _countable(e, rules)]
    if rules.policy is DuplicatePolicy.INVALIDATE_ALL:
        winner = countable[0] if len(signed) == 1 and countable else None
    else:
        winner = min(countable, key=_order, default=None)
    out: dict[str, tuple[Status, Reason]] = {}
    # One pass, each signature decided on its own fields and the winner (testing membership
    # in ``countable`` made a group of n signatures cost n^2 comparisons).
    for e in items:
        if e.match_reason is not Reason.MATCHED:
            out[e.signature_id] = (status_for(e.match_reason), e.match_reason)
        elif not _countable(e, rules):
            out[e.signature_id] = (Status.INVALID, Reason.ONLINE_NOT_ACCEPTED)
        elif winner is not None and e.signature_id == winner.signature_id:
            out[e.signature_id] = (Status.VALID, Reason.MATCHED)
        else:
            out[e.signature_id] = (Status.INVALID, Reason.DUPLICATE)
    return out


def _countable(e: Entry, rules: Rules) -> bool:
    return rules.accept_online or not e.online
