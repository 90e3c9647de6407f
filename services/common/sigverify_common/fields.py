"""A request's fields checked the same way by every service: a text argument's length and
NUL bytes, and a value quoted in an error message cut to a readable length (an error that
echoed a 20,000-character value whole broke gRPC's 16 KiB limit on its trailing metadata,
so the client got RESOURCE_EXHAUSTED instead of the error)."""

from __future__ import annotations

from sigverify_common.errors import InvalidArgument

#: The longest identifier (petition, batch, voter, signature id as text) a request may carry.
MAX_ID_CHARS = 200


def shown(text: str, limit: int = 40) -> str:
    """``text`` quoted for an error message, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def check_text(value: str, name: str, limit: int) -> str:
    """A request's text argument, stripped; InvalidArgument when too long or holding a NUL."""
    if len(value) > limit:
        raise InvalidArgument(f"{name} is {len(value):,} characters long; at most {limit:,}")
    if "\x00" in value:
        raise InvalidArgument(f"{name} contains a NUL character")
    return value.strip()
