"""The identifiers the services make, as their canonical text (lower-case hex, hyphens).

A signature's id (and a batch's) is a UUIDv7 (RFC 9562): its first 48 bits are the time
it was made in milliseconds, the other 74 random. Ids made one after another are close in
every index that holds them (``intake.signatures``, ``matching.decisions``,
``dedupe.signatures``, ``tally.results``, all keyed by it), so a batch's rows are added at
the right-hand edge of each primary key and read back from a few pages, instead of one
random page each as with a random (version 4) id; at a statewide roll, where those indexes
outgrow memory, that is the difference between a page in cache and a read from disk. The
time in the id says when the signature was received, which ``intake`` records anyway.

An event's id is a random (version 4) UUID. Both are made by ``uuid-utils`` (Rust): the
standard library's ``uuid4()`` took ~3 µs, a few percent of a consumer's time per record.
"""

from __future__ import annotations

import uuid_utils


def new_id() -> str:
    """A new time-ordered id (UUIDv7) for a stored row: a signature or a batch."""
    return str(uuid_utils.uuid7())


def event_id() -> str:
    """A new random id (UUIDv4) for an event."""
    return str(uuid_utils.uuid4())
