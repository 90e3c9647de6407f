"""Configuration of the tally service (see sigverify_common.config)."""

from __future__ import annotations

from dataclasses import dataclass

from sigverify_common.config import ServiceConfig


@dataclass(frozen=True, slots=True)
class Config(ServiceConfig):
    pass
