"""gRPC serving: one error interceptor, truthful health, reflection, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from aiokafka.client import AIOKafkaClient
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sigverify_common import metrics
from sigverify_common.config import host_port
from sigverify_common.errors import SigVerifyError

log = logging.getLogger(__name__)


def _status(exc: SigVerifyError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, exc.grpc_status, grpc.StatusCode.INTERNAL)


Context = grpc.aio.ServicerContext[Any, Any]


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps ``SigVerifyError`` subclasses to their declared status; records latency."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = str(details.method).rsplit("/", 1)[-1]
        ser = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary or handler.stream_unary:
            # Both take (request or request iterator, context) and return one response.
            fn = handler.unary_unary or handler.stream_unary

            async def single_response(request: Any, context: Context) -> Any:
                start = time.perf_counter()
                try:
                    return await fn(request, context)
                except SigVerifyError as exc:
                    await context.abort(_status(exc), str(exc))
                finally:
                    metrics.RPC_LATENCY.labels(method).observe(time.perf_counter() - start)

            make = (grpc.unary_unary_rpc_method_handler if handler.unary_unary
                    else grpc.stream_unary_rpc_method_handler)
            return make(single_response, **ser)
        if handler.unary_stream:
            ufn = handler.unary_stream

            async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                try:
                    async for item in ufn(request, context):
                        yield item
                except SigVerifyError as exc:
                    await context.abort(_status(exc), str(exc))

            return grpc.unary_stream_rpc_method_handler(unary_stream, **ser)
        if handler.stream_stream:
            sfn = handler.stream_stream

            async def stream_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
                try:
                    async for item in sfn(requests, context):
                        yield item
                except SigVerifyError as exc:
                    await context.abort(_status(exc), str(exc))

            return grpc.stream_stream_rpc_method_handler(stream_stream, **ser)
        return handler


#: Health service name that reports SERVING while the process runs, whatever its dependencies:
#: for liveness probes, so an outage of Postgres or Kafka makes pods unready, not restarted.
LIVENESS = "liveness"


class HealthMonitor:
    """Sets gRPC health from real checks of Postgres and the broker, every few seconds.

    The overall name "" and each service's name report readiness (NOT_SERVING when either
    dependency is unreachable, and during shutdown).
    """

    def __init__(self, servicer: health.aio.HealthServicer, services: Sequence[str],
                 pool: asyncpg.Pool, bootstrap: str, interval: float = 2.0) -> None:
        self._servicer = servicer
        self._services = ["", *services]
        self._pool = pool
        self._bootstrap = bootstrap
        self._interval = interval
        self.serving = False
        # Every name answers NOT_SERVING (not NOT_FOUND) until the first check has run.
        for name in self._services:
            servicer._server_status.setdefault(
                name, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def _check_db(self) -> bool:
        try:
            async with asyncio.timeout(3):
                await self._pool.fetchval("SELECT 1")
            return True
        except (TimeoutError, asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
            return False

    async def _check_kafka(self, client: AIOKafkaClient) -> bool:
        try:
            async with asyncio.timeout(3):
                await client.fetch_all_metadata()
            return True
        except Exception:  # noqa: BLE001 - any failure to reach the broker means not serving
            return False

    async def set_all(self, status: int) -> None:
        for name in self._services:
            await self._servicer.set(name, status)

    async def run(self, stop: asyncio.Event) -> None:
        client = AIOKafkaClient(bootstrap_servers=self._bootstrap, request_timeout_ms=5000)
        try:
            with contextlib.suppress(Exception):
                await client.bootstrap()
            while not stop.is_set():
                ok = await self._check_db() and await self._check_kafka(client)
                if ok != self.serving:
                    log.info("health: %s", "SERVING" if ok else "NOT_SERVING")
                self.serving = ok
                metrics.HEALTHY.set(1 if ok else 0)
                await self.set_all(
                    health_pb2.HealthCheckResponse.SERVING if ok
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._interval)
        finally:
            await client.close()


def server_credentials(cert: str, key: str, client_ca: str = "") -> grpc.ServerCredentials:
    """TLS from PEM files; with ``client_ca``, mutual TLS (a client certificate is required)."""
    ca = Path(client_ca).read_bytes() if client_ca else None
    return grpc.ssl_server_credentials([(Path(key).read_bytes(), Path(cert).read_bytes())],
                                       root_certificates=ca, require_client_auth=ca is not None)


def build_server(port: int, interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
                 credentials: grpc.ServerCredentials | None = None,
                 host: str = "0.0.0.0",  # noqa: S104 - BIND_HOST, default for containers
                 max_receive_bytes: int = 64 * 1024 * 1024,
                 ) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    """A server with the error interceptor (outermost, then ``interceptors``, e.g. auth) and
    health (every service starts NOT_SERVING); TLS when ``credentials`` are given; listening
    on ``host`` (BIND_HOST: 127.0.0.1 for this machine only). A message larger than
    ``max_receive_bytes`` fails its call with RESOURCE_EXHAUSTED."""
    server = grpc.aio.server(
        interceptors=[ErrorInterceptor(), *interceptors],
        options=[("grpc.max_receive_message_length", max_receive_bytes)],
    )
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    # The servicer starts out answering SERVING for ""; until the first real check it must
    # not. No watcher exists yet, so setting the initial statuses directly is safe.
    initial = servicer._server_status
    initial[""] = health_pb2.HealthCheckResponse.NOT_SERVING
    initial[LIVENESS] = health_pb2.HealthCheckResponse.SERVING
    address = host_port(host, port)
    bound = (server.add_secure_port(address, credentials) if credentials is not None
             else server.add_insecure_port(address))
    return server, servicer, bound


def enable_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection(
        [*service_names, health_name, reflection.SERVICE_NAME], server
    )
