"""Configuration of the matching service (see sigverify_common.config)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Self

from sigverify_common.config import ServiceConfig, float_var
from sigverify_common.errors import ConfigError
from sigverify_matching.domain import MatchConfig


@dataclass(frozen=True, slots=True)
class RollConfig:
    """The roll lifecycle as this replica takes part in it."""

    #: This replica's name in ``matching.replicas`` (MATCHING_REPLICA_ID; default
    #: host:GRPC_PORT).
    replica_id: str = ""
    #: How often a replica heartbeats and looks for versions to build (ROLL_HEARTBEAT_SECONDS).
    heartbeat_seconds: float = 1.0
    #: A replica whose heartbeat is older than this is not live: a load does not wait for it
    #: (ROLL_REPLICA_STALE_SECONDS).
    stale_seconds: float = 10.0
    #: How long a load or activation waits for every live replica to build the version's
    #: index before failing without activating (ROLL_ACTIVATION_TIMEOUT_SECONDS).
    activation_timeout_seconds: float = 900.0


@dataclass(frozen=True, slots=True)
class Config(ServiceConfig):
    match: MatchConfig = field(default_factory=MatchConfig)
    roll: RollConfig = field(default_factory=RollConfig)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        e = os.environ if env is None else env
        defaults = MatchConfig()
        match = MatchConfig(
            accept_threshold=float_var(e, "MATCH_ACCEPT_THRESHOLD", defaults.accept_threshold),
            review_threshold=float_var(e, "MATCH_REVIEW_THRESHOLD", defaults.review_threshold),
        )
        r = RollConfig()
        base = cls.base_from_env(e)
        roll = RollConfig(
            # Host and port: unique among running replicas, and the same when a replica
            # restarts in place (its heartbeat row is reused rather than left to go stale).
            replica_id=e.get("MATCHING_REPLICA_ID", "").strip()
            or f"{socket.gethostname()}:{base['grpc_port']}",
            heartbeat_seconds=float_var(e, "ROLL_HEARTBEAT_SECONDS", r.heartbeat_seconds),
            stale_seconds=float_var(e, "ROLL_REPLICA_STALE_SECONDS", r.stale_seconds),
            activation_timeout_seconds=float_var(e, "ROLL_ACTIVATION_TIMEOUT_SECONDS",
                                                 r.activation_timeout_seconds),
        )
        if not 0 < roll.heartbeat_seconds < roll.stale_seconds:
            raise ConfigError("ROLL_HEARTBEAT_SECONDS must be positive and below "
                              "ROLL_REPLICA_STALE_SECONDS")
        if roll.activation_timeout_seconds <= 0:
            raise ConfigError("ROLL_ACTIVATION_TIMEOUT_SECONDS must be positive")
        return cls(**base, match=match, roll=roll)  # type: ignore[arg-type]
