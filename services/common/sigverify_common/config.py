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


def tls_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """GRPC_TLS_CERT and GRPC_TLS_KEY (both or neither), optional GRPC_TLS_CLIENT_CA."""
    cert, key, ca = (env.get(n, "").strip() for n in ("GRPC_TLS_CERT", "GRPC_TLS_KEY",
                                                       "GRPC_TLS_CLIENT_CA"))
    if bool(cert) != bool(key):
        raise ConfigError("environment variables GRPC_TLS_CERT and GRPC_TLS_KEY go together: "
                          f"{'GRPC_TLS_KEY' if cert else 'GRPC_TLS_CERT'} is not set")
    if ca and not cert:
        raise ConfigError("environment variable GRPC_TLS_CLIENT_CA needs GRPC_TLS_CERT and GRPC_TLS_KEY")
    for name, path in (("GRPC_TLS_CERT", cert), ("GRPC_TLS_KEY", key), ("GRPC_TLS_CLIENT_CA", ca)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"environment variable {name}: no such file {path!r}")
    return {"tls_cert": cert, "tls_key": key, "tls_client_ca": ca}


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
    #: TLS: PEM file paths. Certificate and key together turn TLS on; a client CA on top
    #: makes it mutual (clients must present a certificate signed by it).
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    #: How long a service remembers what a bearer token resolves to (revocation delay).
    auth_cache_seconds: float = 30.0
    #: Reconciliation (service.Reconciler): how often to look for stranded work, how long an
    #: item must have been stranded while the next stage was caught up, and how long before
    #: the same item is re-driven again.
    reconcile_interval_seconds: float = 30.0
    reconcile_age_seconds: float = 120.0
    reconcile_cooldown_seconds: float = 900.0

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
            **tls_from_env(e),
            "auth_cache_seconds": float_var(e, "AUTH_CACHE_SECONDS", 30.0),
            "reconcile_interval_seconds": float_var(e, "RECONCILE_INTERVAL_SECONDS", 30.0),
            "reconcile_age_seconds": float_var(e, "RECONCILE_AGE_SECONDS", 120.0),
            "reconcile_cooldown_seconds": float_var(e, "RECONCILE_COOLDOWN_SECONDS", 900.0),
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        return cls(**cls.base_from_env(env))  # type: ignore[arg-type]
