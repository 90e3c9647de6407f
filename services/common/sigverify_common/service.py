"""How every service starts, runs and stops.

``run_service`` composes the resources as async context managers (pool, producer, gRPC
server), runs the service's loops in a TaskGroup, and on SIGTERM/SIGINT: reports
NOT_SERVING, stops the gRPC server with a grace period, lets the loops finish their
current batch, drains the outbox, and closes everything in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
from aiokafka import AIOKafkaProducer

from sigverify_common import audit, db, kafka, logs, metrics, tokens
from sigverify_common.auth import AuthInterceptor, RefusalLog
from sigverify_common.config import ServiceConfig, host_port
from sigverify_common.grpc_server import (
    HealthMonitor,
    build_server,
    enable_reflection,
    server_credentials,
)
from sigverify_common.tokens import TokenCache

log = logging.getLogger(__name__)

Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass
class Runtime:
    """What a service's own code gets to build its servicers and loops from."""

    config: ServiceConfig
    pool: asyncpg.Pool
    stop: asyncio.Event
    producer: AIOKafkaProducer | None = None
    outbox: kafka.OutboxPublisher | None = None
    loops: list[Loop] = field(default_factory=list)
    #: The server's auth interceptor (its token cache is what a revocation must clear).
    auth: AuthInterceptor | None = None


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    schema: str
    migrations_package: str
    publishes: bool
    #: Registers servicers on the server; returns their full names (for reflection/health).
    setup: Callable[[Runtime, grpc.aio.Server], Awaitable[Sequence[str]]]
    #: The topic the service publishes to, and how to re-publish, from its own tables, what
    #: the next stage has not applied yet. Run at start when that topic is empty: the broker
    #: is new or forgot its data (tansu keeps nothing across restarts), while Postgres, the
    #: record of truth, still knows which work is unfinished.
    output_topic: str = ""
    redrive: Callable[[Runtime], Awaitable[int]] | None = None


async def _connect(url: str, stop: asyncio.Event) -> asyncpg.Pool:
    attempt = 0
    while True:
        try:
            return await asyncpg.create_pool(url, min_size=1, max_size=8, command_timeout=60)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            attempt += 1
            if stop.is_set() or attempt > 60:
                raise
            log.warning("database not reachable (%s); retrying", exc.__class__.__name__)
            await asyncio.sleep(1.0)


async def run_service(spec: ServiceSpec, config: ServiceConfig) -> None:
    logs.configure(spec.name, config.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics.serve(config.metrics_port, config.bind_host)

    async with AsyncExitStack() as stack:
        pool = await _connect(config.database_url, stop)
        stack.push_async_callback(pool.close)
        await db.migrate(pool, spec.schema, spec.migrations_package)
        # Shared by every service: tokens (read by all) and the audit log (appended by all).
        await db.migrate(pool, tokens.SCHEMA, tokens.MIGRATIONS)
        await db.migrate(pool, audit.SCHEMA, audit.MIGRATIONS)
        await kafka.ensure_topics(config.kafka_bootstrap_servers, config.topic_partitions,
                                 config.topic_replication)
        rt = Runtime(config=config, pool=pool, stop=stop)
        if spec.publishes:
            rt.producer = await stack.enter_async_context(
                kafka.open_producer(config.kafka_bootstrap_servers)
            )
            rt.outbox = kafka.OutboxPublisher(pool, rt.producer, spec.schema)
            rt.loops.append(rt.outbox.run)
            if spec.redrive is not None and await kafka.topic_is_empty(
                config.kafka_bootstrap_servers, spec.output_topic
            ):
                redriven = await spec.redrive(rt)
                if redriven:
                    log.warning("%s was empty: re-published %d unfinished event(s) from the "
                                "database", spec.output_topic, redriven)

        refusals = RefusalLog(pool, spec.name, config.refusal_audit_seconds)
        rt.auth = AuthInterceptor(pool, spec.name, TokenCache(pool, config.auth_cache_seconds),
                                  refusals)
        rt.loops.append(refusals.run)
        # Runs after the server has stopped and before the pool closes: refusals counted
        # since the last interval reach the audit log too.
        stack.push_async_callback(refusals.flush)
        tls = (server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
               if config.tls_cert else None)
        server, health_servicer, port = build_server(config.grpc_port, [rt.auth], tls,
                                                     host=config.bind_host,
                                                     max_receive_bytes=config.grpc_max_receive_bytes)
        names = await spec.setup(rt, server)
        enable_reflection(server, names)
        monitor = HealthMonitor(health_servicer, names, pool, config.kafka_bootstrap_servers)
        await server.start()
        log.info("%s serving gRPC on %s (%s)", spec.name, host_port(config.bind_host, port),
                 "insecure" if tls is None else "mutual TLS" if config.tls_client_ca else "TLS")

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(monitor.run(stop))
                for body in rt.loops:
                    tg.create_task(body(stop))
                tg.create_task(_shutdown_when(stop, server, health_servicer, config))
        finally:
            stop.set()
        log.info("%s stopped", spec.name)


async def _shutdown_when(stop: asyncio.Event, server: grpc.aio.Server,
                         health_servicer: object, config: ServiceConfig) -> None:
    await stop.wait()
    log.info("shutting down: NOT_SERVING, stopping gRPC with %.1fs grace",
             config.shutdown_grace_seconds)
    await health_servicer.enter_graceful_shutdown()  # type: ignore[attr-defined]
    await server.stop(config.shutdown_grace_seconds)
