"""The error interceptor on a real ``grpc.aio`` server on 127.0.0.1:0: a database or broker
outage answers UNAVAILABLE (clients retry), any other unexpected exception INTERNAL; both
with a generic message and a reference that the service log carries with the exception's
class, never the exception's text; for unary and streaming handlers alike, and for the
token lookup of the auth interceptor behind it."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import grpc
import pytest
from aiokafka import errors as kafka_errors

from sigverify_common.auth import AuthInterceptor
from sigverify_common.errors import NotFound
from sigverify_common.grpc_server import ErrorInterceptor

SECRET = "Jane Q Voter 1 Main St"  # what an exception's text might quote

Raiser = Callable[[], BaseException]

CASES: list[tuple[str, Raiser, grpc.StatusCode]] = [
    ("postgres-connection", lambda: asyncpg.exceptions.ConnectionFailureError(SECRET),
     grpc.StatusCode.UNAVAILABLE),
    ("postgres-admin-shutdown", lambda: asyncpg.exceptions.AdminShutdownError(SECRET),
     grpc.StatusCode.UNAVAILABLE),
    ("postgres-recovery", lambda: asyncpg.exceptions.CannotConnectNowError(SECRET),
     grpc.StatusCode.UNAVAILABLE),
    ("asyncpg-interface", lambda: asyncpg.exceptions.InterfaceError(SECRET),
     grpc.StatusCode.UNAVAILABLE),
    ("oserror", lambda: ConnectionRefusedError(111, SECRET), grpc.StatusCode.UNAVAILABLE),
    ("timeout", lambda: TimeoutError(SECRET), grpc.StatusCode.UNAVAILABLE),
    ("kafka", lambda: kafka_errors.KafkaConnectionError(SECRET), grpc.StatusCode.UNAVAILABLE),
    ("kafka-not-retriable", lambda: kafka_errors.MessageSizeTooLargeError(SECRET),
     grpc.StatusCode.UNAVAILABLE),
    ("bug", lambda: RuntimeError(SECRET), grpc.StatusCode.INTERNAL),
    ("bad-data", lambda: asyncpg.exceptions.DataError(SECRET), grpc.StatusCode.INTERNAL),
    ("key", lambda: KeyError(SECRET), grpc.StatusCode.INTERNAL),
]
RAISERS = {name: raiser for name, raiser, _ in CASES}


def _handlers() -> grpc.GenericRpcHandler:
    """test.Svc with one method of each kind per case, raising that case's exception (the
    streaming ones after one item). Raw bytes in and out."""

    def unary(name: str) -> Callable[[bytes, Any], Any]:
        async def fn(request: bytes, context: Any) -> bytes:
            if name == "notfound":
                raise NotFound("no petition 'x'")
            raise RAISERS[name]()
        return fn

    def server_stream(name: str) -> Callable[[bytes, Any], AsyncIterator[bytes]]:
        async def fn(request: bytes, context: Any) -> AsyncIterator[bytes]:
            yield b"first"
            raise RAISERS[name]()
        return fn

    def client_stream(name: str) -> Callable[[Any, Any], Any]:
        async def fn(requests: Any, context: Any) -> bytes:
            async for _ in requests:
                pass
            raise RAISERS[name]()
        return fn

    def bidi(name: str) -> Callable[[Any, Any], AsyncIterator[bytes]]:
        async def fn(requests: Any, context: Any) -> AsyncIterator[bytes]:
            async for r in requests:
                yield r
            raise RAISERS[name]()
        return fn

    methods: dict[str, grpc.RpcMethodHandler] = {
        "notfound.uu": grpc.unary_unary_rpc_method_handler(unary("notfound"))}
    for name in RAISERS:
        methods[f"{name}.uu"] = grpc.unary_unary_rpc_method_handler(unary(name))
        methods[f"{name}.us"] = grpc.unary_stream_rpc_method_handler(server_stream(name))
        methods[f"{name}.su"] = grpc.stream_unary_rpc_method_handler(client_stream(name))
        methods[f"{name}.ss"] = grpc.stream_stream_rpc_method_handler(bidi(name))
    return grpc.method_handlers_generic_handler("test.Svc", methods)


async def _requests() -> AsyncIterator[bytes]:
    yield b"a"
    yield b"b"


async def _call(ch: grpc.aio.Channel, method: str) -> grpc.aio.AioRpcError:
    path = f"/test.Svc/{method}"
    kind = method.rsplit(".", 1)[1]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        if kind == "uu":
            await ch.unary_unary(path)(b"req", timeout=10)
        elif kind == "su":
            await ch.stream_unary(path)(_requests(), timeout=10)
        else:
            call = (ch.unary_stream(path)(b"req", timeout=10) if kind == "us"
                    else ch.stream_stream(path)(_requests(), timeout=10))
            got = [item async for item in call]
            pytest.fail(f"{method} ended without an error after {got}")
    return exc.value


@pytest.mark.parametrize("kind", ["uu", "us", "su", "ss"])
async def test_unexpected_errors_answer_a_code_and_a_reference_never_their_text(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    server.add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    caplog.set_level(logging.INFO)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            for name, _, code in CASES:
                caplog.clear()
                err = await _call(ch, f"{name}.{kind}")
                assert err.code() == code, (name, err.code(), err.details())
                details = err.details() or ""
                assert SECRET not in details and "Voter" not in details, (name, details)
                ref = re.search(r"\(ref ([0-9a-f]{8})\)", details)
                assert ref is not None, (name, details)
                logged = caplog.text
                assert ref.group(1) in logged, name
                assert SECRET not in logged, name
                assert RAISERS[name]().__class__.__name__ in logged, name
            if kind == "uu":
                err = await _call(ch, "notfound.uu")
                assert err.code() == grpc.StatusCode.NOT_FOUND
                assert err.details() == "no petition 'x'"
    finally:
        await server.stop(None)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_token_lookup_without_the_database_is_unavailable_not_unknown() -> None:
    # A pool of a database nobody listens on: the auth interceptor's token lookup fails with
    # a connection error, inside the error interceptor, which maps it.
    pool = await asyncpg.create_pool(f"postgresql://x@127.0.0.1:{_closed_port()}/x", min_size=0,
                                     max_size=1)
    server = grpc.aio.server(interceptors=[ErrorInterceptor(),
                                           AuthInterceptor(pool, "test")])
    server.add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            for kind in ("uu", "us"):
                path = f"/test.Svc/bug.{kind}"
                with pytest.raises(grpc.aio.AioRpcError) as exc:
                    md = (("authorization", "Bearer sv_sometoken"),)
                    if kind == "uu":
                        await ch.unary_unary(path)(b"req", timeout=20, metadata=md)
                    else:
                        async for _ in ch.unary_stream(path)(b"req", timeout=20, metadata=md):
                            pass
                assert exc.value.code() == grpc.StatusCode.UNAVAILABLE, exc.value.details()
                assert "ref" in (exc.value.details() or "")
    finally:
        await server.stop(None)
        await pool.close()
