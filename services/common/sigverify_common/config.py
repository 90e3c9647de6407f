"""Configuration read once from the environment, frozen, failing fast with the variable's name.

``Config.from_env()`` in each service is the only reader of ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

from sigverify_common.errors import ConfigError


def require(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"environment variable {name} is required and not set")
    return value


def int_var(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        if default is None:
            raise ConfigError(f"environment variable {name} is required and not set")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {raw!r}") from None


def float_var(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a number, got {raw!r}") from None


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """What every service needs: its database, the broker, its ports."""

    #: Variables a deployment must set (checked against docker-compose and deploy/k8s by a test).
    REQUIRED_ENV: ClassVar[tuple[str, ...]] = (
        "DATABASE_URL",
        "KAFKA_BOOTSTRAP_SERVERS",
        "GRPC_PORT",
        "METRICS_PORT",
    )

    database_url: str
    kafka_bootstrap_servers: str
    grpc_port: int
    metrics_port: int
    log_level: str = "INFO"
    shutdown_grace_seconds: float = 5.0
    topic_partitions: int = 6
    topic_replication: int = 1

    @classmethod
    def base_from_env(cls, env: Mapping[str, str] | None = None) -> dict[str, object]:
        e = os.environ if env is None else env
        return {
            "database_url": require(e, "DATABASE_URL"),
            "kafka_bootstrap_servers": require(e, "KAFKA_BOOTSTRAP_SERVERS"),
            "grpc_port": int_var(e, "GRPC_PORT"),
            "metrics_port": int_var(e, "METRICS_PORT"),
            "log_level": e.get("LOG_LEVEL", "INFO").upper(),
            "shutdown_grace_seconds": float_var(e, "SHUTDOWN_GRACE_SECONDS", 5.0),
            "topic_partitions": int_var(e, "TOPIC_PARTITIONS", 6),
            "topic_replication": int_var(e, "TOPIC_REPLICATION", 1),
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        return cls(**cls.base_from_env(env))  # type: ignore[arg-type]
