"""Configuration of the intake service (see sigverify_common.config)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

from sigverify_common.config import ServiceConfig, counties_var, int_var
from sigverify_common.errors import ConfigError
from sigverify_common.vocab import CALIFORNIA_COUNTIES

#: A full count keeps at most this many signatures sent to matching and not yet verified, so
#: that it can stop close to the requirement (AB 2219) without starving the matchers.
DEFAULT_FULL_COUNT_IN_FLIGHT = 20_000
#: The largest message intake accepts: far above a client's row chunks (the CLI sends at most
#: about 1 MiB), far below what would let one request or row stall the pipeline.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Config(ServiceConfig):
    full_count_in_flight: int = DEFAULT_FULL_COUNT_IN_FLIGHT
    #: The counties batches, filings and clerks' tokens may name (canonical spelling).
    counties: tuple[str, ...] = CALIFORNIA_COUNTIES

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        e = os.environ if env is None else env
        in_flight = int_var(e, "FULL_COUNT_IN_FLIGHT", DEFAULT_FULL_COUNT_IN_FLIGHT)
        base = cls.base_from_env(e)
        max_message = int_var(e, "GRPC_MAX_RECEIVE_BYTES", DEFAULT_MAX_MESSAGE_BYTES)
        if max_message < 64 * 1024:
            raise ConfigError("environment variable GRPC_MAX_RECEIVE_BYTES must be at least "
                              f"65536, got {max_message}")
        base["grpc_max_receive_bytes"] = max_message
        return cls(**base, full_count_in_flight=max(1, in_flight),  # type: ignore[arg-type]
                   counties=counties_var(e))
