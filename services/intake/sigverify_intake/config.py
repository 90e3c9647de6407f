"""Configuration of the intake service (see sigverify_common.config)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

from sigverify_common.config import ServiceConfig, int_var

#: A full count keeps at most this many signatures sent to matching and not yet verified, so
#: that it can stop close to the requirement (AB 2219) without starving the matchers.
DEFAULT_FULL_COUNT_IN_FLIGHT = 20_000


@dataclass(frozen=True, slots=True)
class Config(ServiceConfig):
    full_count_in_flight: int = DEFAULT_FULL_COUNT_IN_FLIGHT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        e = os.environ if env is None else env
        in_flight = int_var(e, "FULL_COUNT_IN_FLIGHT", DEFAULT_FULL_COUNT_IN_FLIGHT)
        return cls(**cls.base_from_env(e), full_count_in_flight=max(1, in_flight))  # type: ignore[arg-type]
