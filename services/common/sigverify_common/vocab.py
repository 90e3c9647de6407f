"""The words every service shares: statuses, match decisions and reason codes.

Pure: no I/O and no generated types (``convert`` maps these to and from protobuf enums).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
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


#: California's 58 counties, in their canonical spelling (the default list intake accepts;
#: intake's ``COUNTIES`` variable replaces it for another state).
CALIFORNIA_COUNTIES: tuple[str, ...] = (
    "Alameda", "Alpine", "Amador", "Butte", "Calaveras", "Colusa", "Contra Costa", "Del Norte",
    "El Dorado", "Fresno", "Glenn", "Humboldt", "Imperial", "Inyo", "Kern", "Kings", "Lake",
    "Lassen", "Los Angeles", "Madera", "Marin", "Mariposa", "Mendocino", "Merced", "Modoc",
    "Mono", "Monterey", "Napa", "Nevada", "Orange", "Placer", "Plumas", "Riverside",
    "Sacramento", "San Benito", "San Bernardino", "San Diego", "San Francisco", "San Joaquin",
    "San Luis Obispo", "San Mateo", "Santa Barbara", "Santa Clara", "Santa Cruz", "Shasta",
    "Sierra", "Siskiyou", "Solano", "Sonoma", "Stanislaus", "Sutter", "Tehama", "Trinity",
    "Tulare", "Tuolumne", "Ventura", "Yolo", "Yuba",
)


class Counties:
    """The counties a deployment knows, looked up whatever the spelling's case and spacing.

    ``resolve`` gives the canonical name (``canonical_county``'s spelling, so that clerks'
    tokens, batches and filings all agree) or None for a name that is not on the list.
    """

    __slots__ = ("_names",)

    def __init__(self, names: Iterable[str] = CALIFORNIA_COUNTIES) -> None:
        self._names = frozenset(c for c in map(canonical_county, names) if c)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.resolve(name) is not None

    def resolve(self, name: str) -> str | None:
        c = canonical_county(name)
        return c if c in self._names else None

    def suggest(self, name: str) -> str | None:
        """The known county closest to a misspelt one ("Kern County", "Alamdea"), if any."""
        c = canonical_county(name)
        if c.endswith(" County") and c.removesuffix(" County") in self._names:
            return c.removesuffix(" County")
        close = difflib.get_close_matches(c, sorted(self._names), n=1, cutoff=0.75)
        return close[0] if close else None

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._names))


class DuplicatePolicy(StrEnum):
    """Per petition: which of a voter's several signatures count (states differ)."""

    KEEP_FIRST = "keep-first"
    INVALIDATE_ALL = "invalidate-all"


#: Reasons a reviewer may give when resolving a signature as invalid.
REVIEW_REJECTIONS = frozenset({
    Reason.NOT_REGISTERED, Reason.SIGNATURE_MISMATCH, Reason.WITHDRAWN, Reason.ADDRESS_MISMATCH,
    Reason.WRONG_COUNTY, Reason.INCOMPLETE,
})
