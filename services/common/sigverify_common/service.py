"""How every service starts, runs and stops.

``run_service`` composes the resources as async context managers (pool, producer, gRPC
server), runs the service's loops in a TaskGroup, and on SIGTERM/SIGINT: reports
NOT_SERVING, stops the gRPC server with a grace period, lets the loops finish their
current batch, drains the outbox, and closes everything in reverse order.

A service that publishes and can re-drive its unfinished work (``ServiceSpec.redrive``)
does so at start when its output topic is empty (a new broker, or one that forgot), and
periodically through the ``Reconciler``: work lost in between (an event deleted, a record
set aside downstream, a broker that dropped part of a topic) is found and re-published.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import asyncpg
import grpc
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from sigverify_common import audit, db, heap, kafka, logs, metrics, tokens, topics
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
    #: the next stage has not applied yet (through ``kafka.republish``). Run at start when
    #: that topic is empty: the broker is new or forgot its data (tansu keeps nothing across
    #: restarts), while Postgres, the record of truth, still knows which work is unfinished;
    #: and periodically by the ``Reconciler``, gated so that it re-drives only what is lost.
    output_topic: str = ""
    redrive: Callable[[Runtime], Awaitable[int]] | None = None


class Reconciler:
    """Re-drives work stranded downstream, every ``interval`` seconds, without flooding a
    pipeline that is merely slow.

    A pass runs only when the next stage has caught up: the service's outbox holds nothing
    for its output topic and every consumer group of that topic (``Topic.consumers``) has
    committed every record of it (lag 0, ``kafka.caught_up``). Then ``spec.redrive`` lists what the next
    stage still lacks, and only items that were already stranded in such a pass at least
    ``age`` seconds earlier, and not re-driven within ``cooldown`` seconds, are re-published
    (``kafka.RedriveGate``): an item in flight is either in the outbox or behind the
    consumer's committed offset, so it is never taken for lost. Replicas take turns through
    a Postgres advisory lock. Counted in ``sigverify_redriven_total{service}``.
    """

    def __init__(self, spec: ServiceSpec, rt: Runtime) -> None:
        assert spec.redrive is not None
        self._spec = spec
        self._redrive = spec.redrive
        self._rt = rt
        cfg = rt.config
        self._interval = cfg.reconcile_interval_seconds
        self._gate = kafka.RedriveGate(cfg.reconcile_age_seconds, cfg.reconcile_cooldown_seconds)
        self._groups = topics.consumers_of(spec.output_topic)
        self._lock_key = zlib.crc32(f"sigverify-reconcile-{spec.schema}".encode())

    async def caught_up(self) -> bool:
        """Nothing of the output topic waits in the outbox or behind a consumer group."""
        waiting = await self._rt.pool.fetchval(
            f'SELECT EXISTS (SELECT 1 FROM "{self._spec.schema}".outbox WHERE topic = $1)',  # noqa: S608
            self._spec.output_topic)
        if waiting:
            return False
        for group in self._groups:
            if not await kafka.caught_up(self._rt.config.kafka_bootstrap_servers, group,
                                         self._spec.output_topic):
                return False
        return True

    async def once(self) -> int:
        """One pass; returns how many events it re-published."""
        async with self._rt.pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._lock_key):
                return 0  # another replica is reconciling
            try:
                if not await self.caught_up():
                    return 0
                with kafka.gated(self._gate):
                    redriven = await self._redrive(self._rt)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", self._lock_key)
        if redriven:
            log.warning("re-drove %d event(s) to %s: stranded for over %.0fs while %s had "
                        "caught up", redriven, self._spec.output_topic, self._gate.age,
                        ", ".join(self._groups) or "its consumers")
            if self._rt.outbox is not None:
                self._rt.outbox.wake.set()
        return redriven

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self._interval)
                return
            except TimeoutError:
                pass
            try:
                await self.once()
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    KafkaError) as exc:
                log.warning("reconciliation pass failed (%s); next in %.0fs",
                            exc.__class__.__name__, self._interval)


class LoopWatchdog:
    """Says in the log when the event loop stops running, and why it looks stuck.

    A blocked loop (a long synchronous computation in a consumer, a blocking call) answers
    no gRPC call, the health check included: the orchestrator sees NOT_SERVING or a timeout.
    The loop updates a heartbeat every ``interval`` seconds (``loop.call_later``); a thread,
    not a coroutine (a blocked loop runs none), looks at it as often. When the heartbeat is
    older than ``threshold`` (``LOOP_STALL_SECONDS``) it logs ONE warning with how long and
    where the loop's thread is, and when the loop runs again one line with the stall's whole
    length (from the last heartbeat before it to the first after). Where: the innermost
    function and, when that is not the services' own code, the innermost ``sigverify``
    function under it, each as module, function and line: never a frame's variables, which
    may hold voter data. A stall no check saw while it lasted (code that holds the GIL keeps
    the thread from running) is logged once, when it is over.

    Counted in ``sigverify_loop_stall_seconds`` (a histogram of whole stalls) and, while one
    lasts, shown in ``sigverify_loop_blocked_seconds`` (both set from the thread; /metrics
    answers from its own thread). ``start`` and ``stop`` are called on the loop's thread;
    a threshold of 0 turns it off.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold: float,
                 interval: float = 0.5) -> None:
        self._loop = loop
        self.threshold = threshold
        #: A heartbeat at least four times within the threshold (0.5 s at the default 5 s).
        self.interval = min(interval, threshold / 4)
        self._lock = threading.Lock()
        self._last = 0.0    # when the loop last ran the heartbeat (time.monotonic)
        self._worst = 0.0   # the longest gap between heartbeats since the thread last looked
        self._handle: asyncio.TimerHandle | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread = 0

    def __enter__(self) -> LoopWatchdog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.threshold <= 0 or self._thread is not None:
            return
        self._loop_thread = threading.get_ident()
        self._done.clear()
        self._last, self._worst = time.monotonic(), 0.0
        self._handle = self._loop.call_later(self.interval, self._beat)
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._thread is not None:
            # The loop runs (this is its thread): a stall that has just ended is reported
            # by the thread's last look.
            self._mark()
            self._done.set()
            self._thread.join(timeout=5.0)
            self._thread = None
        metrics.LOOP_BLOCKED.set(0)

    def _mark(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._worst = max(self._worst, now - self._last)
            self._last = now

    def _beat(self) -> None:
        self._mark()
        if not self._done.is_set():
            self._handle = self._loop.call_later(self.interval, self._beat)

    def _watch(self) -> None:
        warned = False  # about the stall in progress
        while True:
            done = self._done.wait(self.interval)
            warned = self._look(warned)
            if done:
                return

    def _look(self, warned: bool) -> bool:
        """One look at the heartbeat; returns whether the stall in progress was warned of."""
        with self._lock:
            last, worst = self._last, self._worst
            self._worst = 0.0
        if worst > self.threshold:  # a stall ended since the last look
            metrics.LOOP_STALLS.observe(worst)
            metrics.LOOP_BLOCKED.set(0)
            if warned:
                log.warning("event loop running again after %.1fs blocked", worst)
            else:
                log.warning("event loop was blocked for %.1fs (over LOOP_STALL_SECONDS=%gs; "
                            "seen only once it ran again)", worst, self.threshold)
            warned = False
        blocked = time.monotonic() - last
        if blocked > self.threshold:
            metrics.LOOP_BLOCKED.set(blocked)
            if not warned:
                warned = True
                log.warning("event loop blocked for %.1fs (over LOOP_STALL_SECONDS=%gs; "
                            "gRPC calls and health checks wait), in %s",
                            blocked, self.threshold, self.where())
        return warned

    def where(self) -> str:
        """Where the loop's thread is now: module:function line, innermost first."""
        current = getattr(sys, "_current_frames", None)
        frame: FrameType | None = current().get(self._loop_thread) if current else None
        own: FrameType | None = frame
        try:
            if frame is None:
                return "an unknown place"
            places = [_place(frame)]
            while own is not None and not _module(own).startswith("sigverify"):
                own = own.f_back
            if own is not None and own is not frame:
                places.append(_place(own))
            return ", called from ".join(places)
        finally:
            del frame, own


def _module(frame: FrameType) -> str:
    name = frame.f_globals.get("__name__")
    return name if isinstance(name, str) else "?"


def _place(frame: FrameType) -> str:
    code = frame.f_code
    return f"{_module(frame)}:{getattr(code, 'co_qualname', code.co_name)} line {frame.f_lineno}"


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
    heap.tune()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics.serve(config.metrics_port, config.bind_host)

    async with AsyncExitStack() as stack:
        # First in, so last out: start-up and shutdown stalls are reported too.
        stack.enter_context(LoopWatchdog(loop, config.loop_stall_seconds))
        pool = await _connect(config.database_url, stop)
        stack.push_async_callback(pool.close)
        await db.migrate(pool, spec.schema, spec.migrations_package)
        # Shared by every service: tokens (read by all) and the audit log (appended by all).
        await db.migrate(pool, tokens.SCHEMA, tokens.MIGRATIONS)
        await db.migrate(pool, audit.SCHEMA, audit.MIGRATIONS)
        # Says once when the broker is gone and when it is back; stops after the producer.
        await stack.enter_async_context(kafka.watch_broker(config.kafka_bootstrap_servers,
                                                           spec.name))
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
            if spec.redrive is not None and config.reconcile_interval_seconds > 0:
                rt.loops.append(Reconciler(spec, rt).run)

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
        monitor = HealthMonitor(health_servicer, names, pool, config.kafka_bootstrap_servers,
                                problems=[rt.outbox.problem] if rt.outbox is not None else [])
        # What start-up made lives as long as the process: out of the collector's walks.
        heap.settle()
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
