"""Prometheus metrics shared by the services (each service adds its own beside these)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

CONSUMED = Counter("sigverify_consumed_records_total", "Kafka records applied", ["group", "topic"])
PUBLISHED = Counter("sigverify_published_records_total", "Outbox rows published", ["schema"])
DEAD_LETTERS = Counter("sigverify_dead_letters_total", "Undecodable records set aside", ["group"])
HANDLER_RETRIES = Counter("sigverify_handler_retries_total", "Batches retried after an error", ["group"])
CONSUMER_LAG = Gauge("sigverify_consumer_lag", "Records behind the partition end",
                     ["group", "topic", "partition"])
RPC_LATENCY = Histogram("sigverify_rpc_seconds", "gRPC handler latency", ["method"])
HEALTHY = Gauge("sigverify_healthy", "1 when the service reports SERVING")
ACCESS_REFUSALS = Counter("sigverify_access_refusals_total",
                          "Calls refused by the auth interceptor (written to the audit log "
                          "aggregated, not one entry per call)", ["code", "kind"])


def serve(port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - BIND_HOST's default
    """Serve /metrics on ``host`` (BIND_HOST: every interface in a container, where
    Prometheus scrapes from other hosts; 127.0.0.1 under ``sigverify stack up``)."""
    if port > 0:
        start_http_server(port, addr=host.strip("[]"))
