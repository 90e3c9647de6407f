"""The words every service shares: statuses, match decisions and reason codes.

Pure: no I/O and no generated types (``convert`` maps these to and from protobuf enums).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    VALID = "VALID"
    INVALID = "INVALID"
    REVIEW = "REVIEW"
    #: Stored, never verified: outside a random sample (exports only, never in events).
    NOT_SAMPLED = "NOT_SAMPLED"


class Decision(StrEnum):
    MATCH = "MATCH"
    NO_MATCH = "NO_MATCH"
    REVIEW = "REVIEW"


class Reason(StrEnum):
    MATCHED = "MATCHED"
    NOT_REGISTERED = "NOT_REGISTERED"
    ADDRESS_MISMATCH = "ADDRESS_MISMATCH"
    WRONG_COUNTY = "WRONG_COUNTY"
    VOTER_INACTIVE = "VOTER_INACTIVE"
    VOTER_CANCELLED = "VOTER_CANCELLED"
    SIGNED_BEFORE_REGISTRATION = "SIGNED_BEFORE_REGISTRATION"
    SIGNED_AFTER_DEADLINE = "SIGNED_AFTER_DEADLINE"
    DUPLICATE = "DUPLICATE"
    INCOMPLETE = "INCOMPLETE"
    PENDING_REVIEW = "PENDING_REVIEW"
    ONLINE_NOT_ACCEPTED = "ONLINE_NOT_ACCEPTED"
    SIGNATURE_MISMATCH = "SIGNATURE_MISMATCH"
    WITHDRAWN = "WITHDRAWN"


class Source(StrEnum):
    PAPER = "paper"
    ONLINE = "online"


def status_for(reason: Reason) -> Status:
    """The final status a signature has when this is its reason."""
    if reason is Reason.MATCHED:
        return Status.VALID
    if reason is Reason.PENDING_REVIEW:
        return Status.REVIEW
    return Status.INVALID


def canonical_county(name: str) -> str:
    """One spelling per county: words capitalised, spaces folded ("los  angeles" -> "Los Angeles")."""
    return " ".join(w.capitalize() for w in name.split())


class DuplicatePolicy(StrEnum):
    """Per petition: which of a voter's several signatures count (states differ)."""

    KEEP_FIRST = "keep-first"
    INVALIDATE_ALL = "invalidate-all"


#: Reasons a reviewer may give when resolving a signature as invalid.
REVIEW_REJECTIONS = frozenset({
    Reason.NOT_REGISTERED, Reason.SIGNATURE_MISMATCH, Reason.WITHDRAWN, Reason.ADDRESS_MISMATCH,
    Reason.WRONG_COUNTY, Reason.INCOMPLETE,
})
