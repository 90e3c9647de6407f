"""Prometheus metrics shared by the services (each service adds its own beside these)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

CONSUMED = Counter("sigverify_consumed_records_total", "Kafka records applied", ["group", "topic"])
PUBLISHED = Counter("sigverify_published_records_total", "Outbox rows published", ["schema"])
#: reason: undecodable (not the topic's message), invalid (fails the topic's checks),
#: poison (the handler failed on it alone), rejected (refers to what does not exist).
DEAD_LETTERS = Counter("sigverify_dead_letters_total", "Records set aside in dead letters",
                       ["group", "reason"])
HANDLER_RETRIES = Counter("sigverify_handler_retries_total", "Batches retried after an error", ["group"])
COMMIT_FAILURES = Counter("sigverify_commit_failures_total",
                          "Offset commits lost to a rebalance (the batch is redelivered)", ["group"])
REBALANCES = Counter("sigverify_rebalances_total", "Partition assignments received", ["group"])
CONSUMER_LAG = Gauge("sigverify_consumer_lag", "Records behind the partition end",
                     ["group", "topic", "partition"])
#: reason: the producer error's class (MessageSizeTooLargeError, ...).
OUTBOX_QUARANTINED = Counter("sigverify_outbox_quarantined_total",
                             "Outbox rows that can never be sent, moved to <schema>.outbox_quarantine",
                             ["schema", "reason"])
OUTBOX_FAILURES = Counter("sigverify_outbox_failures_total",
                          "Publish rounds that left rows behind after a retriable error", ["schema"])
OUTBOX_FAILING = Gauge("sigverify_outbox_failing_seconds",
                       "Seconds the outbox publisher has been failing without a successful round "
                       "(0 when it is not failing); alert above a minute", ["schema"])
#: Set by kafka.BrokerWatch from a metadata request every 2 s (0 until the first answer).
BROKER_REACHABLE = Gauge("sigverify_broker_reachable",
                         "1 when the Kafka broker answers a metadata request, else 0")
REDRIVEN = Counter("sigverify_redriven_total",
                   "Events re-published from the database for work the next stage lacks",
                   ["service"])
RPC_LATENCY = Histogram("sigverify_rpc_seconds", "gRPC handler latency", ["method"])
#: code: UNAVAILABLE (a dependency is down) or INTERNAL (a bug); each is logged with a reference.
RPC_UNEXPECTED = Counter("sigverify_rpc_unexpected_errors_total",
                         "RPCs that failed with an exception outside the error tree", ["method", "code"])
HEALTHY = Gauge("sigverify_healthy", "1 when the service reports SERVING")
#: The event loop's stall watchdog (service.LoopWatchdog), both set from its own thread:
#: /metrics is served from a thread too, so a scrape answers while the loop is blocked.
LOOP_STALLS = Histogram("sigverify_loop_stall_seconds",
                        "Event-loop stalls longer than LOOP_STALL_SECONDS, by their whole length "
                        "(observed when the loop runs again)",
                        buckets=(0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0))
LOOP_BLOCKED = Gauge("sigverify_loop_blocked_seconds",
                     "Seconds the event loop has been blocked, once past LOOP_STALL_SECONDS "
                     "(0 while it runs); health checks go unanswered meanwhile")
ACCESS_REFUSALS = Counter("sigverify_access_refusals_total",
                          "Calls refused by the auth interceptor (written to the audit log "
                          "aggregated, not one entry per call)", ["code", "kind"])


def serve(port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - BIND_HOST's default
    """Serve /metrics on ``host`` (BIND_HOST: every interface in a container, where
    Prometheus scrapes from other hosts; 127.0.0.1 under ``sigverify stack up``)."""
    if port > 0:
        start_http_server(port, addr=host.strip("[]"))
