"""Configuration read once from the environment, frozen, failing fast with the variable's name.

``Config.from_env()`` in each service is the only reader of ``os.environ``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

from sigverify_common.errors import ConfigError
from sigverify_common.vocab import CALIFORNIA_COUNTIES, canonical_county


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


def counties_var(env: Mapping[str, str]) -> tuple[str, ...]:
    """``COUNTIES``: the deployment's counties, comma-separated, each in ``canonical_county``'s
    spelling (duplicates dropped); unset or blank: California's 58. The one reader of
    ``COUNTIES``: intake (batches, filings, clerks' tokens) and matching (roll rows, the review
    list) agree on the list. An empty name ("Kern,,Inyo") is refused."""
    raw = env.get("COUNTIES")
    if raw is None or not raw.strip():
        return CALIFORNIA_COUNTIES
    names = [canonical_county(n) for n in raw.split(",")]
    if not all(names):
        raise ConfigError("environment variable COUNTIES has an empty name (comma-separated "
                          "county names, e.g. 'Kern,Los Angeles')")
    return tuple(dict.fromkeys(names))


def float_var(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a number, got {raw!r}") from None


def positive(value: float, name: str) -> float:
    if value <= 0:
        raise ConfigError(f"environment variable {name} must be greater than 0, got {value:g}")
    return value


def not_negative(value: float, name: str) -> float:
    if not value >= 0:  # NaN too
        raise ConfigError(f"environment variable {name} must be 0 or more, got {value:g}")
    return value


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


def bind_host_var(env: Mapping[str, str]) -> str:
    """BIND_HOST: the address gRPC and metrics listen on. Default 0.0.0.0 (every interface),
    which a container needs; ``sigverify stack up`` sets 127.0.0.1 (this machine only)."""
    raw = env.get("BIND_HOST", "").strip() or "0.0.0.0"  # noqa: S104 - containers need it
    try:
        return str(ipaddress.ip_address(raw.strip("[]")))
    except ValueError:
        raise ConfigError("environment variable BIND_HOST must be an IP address (0.0.0.0 for "
                          f"every interface, 127.0.0.1 for this machine only), got {raw!r}"
                          ) from None


def host_port(host: str, port: int) -> str:
    """``host:port`` for binding, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
    #: The address gRPC and metrics listen on (BIND_HOST).
    bind_host: str = "0.0.0.0"  # noqa: S104 - containers need every interface
    #: Refused calls are counted in memory and written to the audit log as one entry per
    #: (reason, RPC, caller) this often, and at shutdown (REFUSAL_AUDIT_SECONDS).
    refusal_audit_seconds: float = 60.0
    #: The largest gRPC message the server accepts (a larger one: RESOURCE_EXHAUSTED).
    grpc_max_receive_bytes: int = 64 * 1024 * 1024
    #: Reconciliation (service.Reconciler): how often to look for stranded work, how long an
    #: item must have been stranded while the next stage was caught up, and how long before
    #: the same item is re-driven again.
    reconcile_interval_seconds: float = 30.0
    reconcile_age_seconds: float = 120.0
    reconcile_cooldown_seconds: float = 900.0
    #: The event loop's stall watchdog (service.LoopWatchdog): a loop that has not run for
    #: longer than this is logged, with where it is, and counted (LOOP_STALL_SECONDS; 0: off).
    loop_stall_seconds: float = 5.0

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
            "bind_host": bind_host_var(e),
            "refusal_audit_seconds": positive(float_var(e, "REFUSAL_AUDIT_SECONDS", 60.0),
                                              "REFUSAL_AUDIT_SECONDS"),
            "grpc_max_receive_bytes": int_var(e, "GRPC_MAX_RECEIVE_BYTES", 64 * 1024 * 1024),
            "reconcile_interval_seconds": float_var(e, "RECONCILE_INTERVAL_SECONDS", 30.0),
            "reconcile_age_seconds": float_var(e, "RECONCILE_AGE_SECONDS", 120.0),
            "reconcile_cooldown_seconds": float_var(e, "RECONCILE_COOLDOWN_SECONDS", 900.0),
            "loop_stall_seconds": not_negative(float_var(e, "LOOP_STALL_SECONDS", 5.0),
                                               "LOOP_STALL_SECONDS"),
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        return cls(**cls.base_from_env(env))  # type: ignore[arg-type]
