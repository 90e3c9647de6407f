"""Configuration of the matching service (see sigverify_common.config)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Self

from sigverify_common.config import ServiceConfig, counties_var, float_var, int_var
from sigverify_common.errors import ConfigError
from sigverify_common.vocab import CALIFORNIA_COUNTIES
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
class ModelConfig:
    """When and from what the match model of a roll version is learned."""

    #: The first model of a version waits for this many signatures (MATCH_TRAIN_MIN) ...
    train_min: int = 1000
    #: ... or this long since a batch first needed it (MATCH_TRAIN_WAIT_SECONDS).
    train_wait_seconds: float = 10.0
    #: At most this many of the most recent signatures (MATCH_TRAIN_MAX).
    train_max: int = 20_000


@dataclass(frozen=True, slots=True)
class Config(ServiceConfig):
    match: MatchConfig = field(default_factory=MatchConfig)
    roll: RollConfig = field(default_factory=RollConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    #: The counties roll rows and the review list may name (COUNTIES, as intake reads it).
    counties: tuple[str, ...] = CALIFORNIA_COUNTIES

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
        m = ModelConfig()
        model = ModelConfig(
            train_min=int_var(e, "MATCH_TRAIN_MIN", m.train_min),
            train_wait_seconds=float_var(e, "MATCH_TRAIN_WAIT_SECONDS", m.train_wait_seconds),
            train_max=int_var(e, "MATCH_TRAIN_MAX", m.train_max),
        )
        if model.train_min < 1 or model.train_max < model.train_min:
            raise ConfigError("MATCH_TRAIN_MIN must be at least 1 and at most MATCH_TRAIN_MAX")
        if not 0 < match.review_threshold <= match.accept_threshold <= 100:
            raise ConfigError("MATCH_REVIEW_THRESHOLD and MATCH_ACCEPT_THRESHOLD are "
                              "probabilities in percent: 0 < review <= accept <= 100")
        return cls(**base, match=match, roll=roll, model=model,  # type: ignore[arg-type]
                   counties=counties_var(e))
