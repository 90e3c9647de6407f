"""Configuration of the matching service (see sigverify_common.config)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Self

from sigverify_common.config import ServiceConfig, float_var
from sigverify_matching.domain import MatchConfig


@dataclass(frozen=True, slots=True)
class Config(ServiceConfig):
    match: MatchConfig = field(default_factory=MatchConfig)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        e = os.environ if env is None else env
        defaults = MatchConfig()
        match = MatchConfig(
            accept_threshold=float_var(e, "MATCH_ACCEPT_THRESHOLD", defaults.accept_threshold),
            review_threshold=float_var(e, "MATCH_REVIEW_THRESHOLD", defaults.review_threshold),
        )
        return cls(**cls.base_from_env(e), match=match)  # type: ignore[arg-type]
