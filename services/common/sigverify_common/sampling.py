"""Verification methods, random-sample parameters and the seeded draw: pure.

The draw is meant to be re-done by anyone, with any tool: each signature's draw key is the
hex SHA-256 of ``"<seed>:<signature id>"``, the county's signatures are ordered by that key
(ties, which SHA-256 makes practically impossible, by signature id) and the sample is the
first ``sample_size`` of them. Every signature has the same chance of being drawn (EC 9030
asks for "a computerised random number generator"), the order does not depend on how the
signatures were stored or listed, and the seed is recorded with the county's filing.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from enum import StrEnum


class Method(StrEnum):
    FULL_COUNT = "full-count"
    RANDOM_SAMPLE = "random-sample"


@dataclass(frozen=True, slots=True)
class SamplingRules:
    """California's parameters by default (EC 9030; 2 CCR 20520 ff., 20530-20532)."""

    #: Every signature is verified in a county with this many or fewer; otherwise the
    #: sample is the greater of this and ``percent`` of the raw count.
    minimum: int = 500
    percent: Decimal = Decimal(3)
    #: The projection fails below ``fail_below`` percent of the requirement and qualifies
    #: above ``qualify_above`` percent; in between, every signature is counted.
    fail_below: Decimal = Decimal(95)
    qualify_above: Decimal = Decimal(110)

    def check(self) -> SamplingRules:
        if self.minimum < 1:
            raise ValueError("minimum_sample must be at least 1")
        if not Decimal(0) < self.percent <= Decimal(100):
            raise ValueError("sample_percent must be above 0 and at most 100")
        if not Decimal(0) < self.fail_below <= self.qualify_above:
            raise ValueError("fail_below_percent must be above 0 and at most qualify_above_percent")
        return self


CALIFORNIA = SamplingRules()


def parse_percent(text: str, default: Decimal, field: str) -> Decimal:
    """A percentage given as decimal text ("" takes the default); ValueError names the field."""
    if not text.strip():
        return default
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{field} {text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{field} {text!r} is not a number")
    return value


def sample_size(raw: int, rules: SamplingRules = CALIFORNIA) -> int:
    """How many of a county's ``raw`` signatures to verify."""
    if raw < 0:
        raise ValueError("raw count cannot be negative")
    if raw <= rules.minimum:
        return raw
    fraction = Decimal(raw) * rules.percent / 100
    return max(rules.minimum, int(fraction.to_integral_value(rounding=ROUND_CEILING)))


def new_seed() -> str:
    """128 random bits, as hex."""
    return secrets.token_hex(16)


def draw_key(seed: str, signature_id: str) -> str:
    return hashlib.sha256(f"{seed}:{signature_id}".encode()).hexdigest()


def draw_order(seed: str, signature_ids: Iterable[str]) -> list[tuple[str, str]]:
    """(signature id, draw key) for every signature, in draw order."""
    keyed = [(draw_key(seed, sid), sid) for sid in signature_ids]
    keyed.sort()
    return [(sid, key) for key, sid in keyed]


def draw(seed: str, signature_ids: Iterable[str], size: int) -> list[str]:
    """The ``size`` signatures the seed draws, in draw order."""
    if size < 0:
        raise ValueError("sample size cannot be negative")
    return [sid for sid, _ in draw_order(seed, signature_ids)[:size]]
