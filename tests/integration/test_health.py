"""gRPC health tells the truth: NOT_SERVING when Postgres or the broker is unreachable."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sigverify_cli import stack
from sigverify_common.grpc_server import LIVENESS, HealthMonitor, build_server

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _status_becomes(stub: health_pb2_grpc.HealthStub, service: str, want: int) -> None:
    end = time.monotonic() + 15
    while True:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        if reply.status == want:
            return
        assert time.monotonic() < end, f"health of {service!r} stayed {reply.status}, wanted {want}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("broken", [None, "broker", "database"])
async def test_health_follows_the_dependencies(live_stack: stack.StackState,
                                               broken: str | None) -> None:
    pool = await asyncpg.create_pool(live_stack.database_url, min_size=1, max_size=2)
    bootstrap = "127.0.0.1:1" if broken == "broker" else live_stack.kafka_bootstrap_servers
    server, servicer, port = build_server(0)
    monitor = HealthMonitor(servicer, ["test.Service"], pool, bootstrap, interval=0.2)
    await server.start()
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            if broken == "database":
                await _status_becomes(stub, "", SERVING)
                await pool.close()
            want = SERVING if broken is None else NOT_SERVING
            await _status_becomes(stub, "", want)
            await _status_becomes(stub, "test.Service", want)
            await _status_becomes(stub, LIVENESS, SERVING)
            await servicer.enter_graceful_shutdown()
            await _status_becomes(stub, "", NOT_SERVING)
    finally:
        stop.set()
        await task
        await server.stop(0)
        if not pool._closed:
            await pool.close()


async def test_a_new_server_is_not_serving_before_its_first_check() -> None:
    server, _, port = build_server(0)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                               timeout=5)
            assert reply.status == NOT_SERVING
    finally:
        await server.stop(0)


def test_every_service_counts_its_garbage_collectors_time(live_stack: stack.StackState) -> None:
    """Each service tunes the collector at start and settles its start-up heap (a full
    collection, counted): the bench reads the counter beside each process's CPU time."""
    from sigverify_cli.bench import gc_by_process

    seconds = gc_by_process(live_stack)
    assert set(seconds) == set(live_stack.services)
    assert all(s > 0 for s in seconds.values()), seconds
