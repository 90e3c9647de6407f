"""Configuration of the tally service (see sigverify_common.config)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

from sigverify_common.config import ServiceConfig, float_var


@dataclass(frozen=True, slots=True)
class Config(ServiceConfig):
    #: How often every petition's delivery invariants are checked (0: never; the
    #: CheckInvariants RPC still works).
    invariant_interval_seconds: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        e = os.environ if env is None else env
        return cls(**cls.base_from_env(e),  # type: ignore[arg-type]
                   invariant_interval_seconds=float_var(e, "INVARIANT_INTERVAL_SECONDS", 60.0))
