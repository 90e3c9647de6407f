"""The one authentication and authorisation interceptor every service's server runs.

For each RPC outside health and reflection it reads ``authorization: Bearer <token>``,
resolves the token through ``tokens.TokenCache`` (UNAUTHENTICATED when missing, unknown or
revoked), checks the role against ``access.POLICY`` (PERMISSION_DENIED), and makes the
caller available to the servicer for the rest of the call (``caller()``, ``actor()``,
``require_county()``). Every refusal, including a servicer's ``PermissionDenied``, is written
to the audit log: who, which RPC, why; never request content.

It raises ``Unauthenticated`` / ``PermissionDenied`` and runs inside the error interceptor,
which maps them to their status codes.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc

from sigverify_common import access, audit
from sigverify_common.access import Identity
from sigverify_common.errors import PermissionDenied, Unauthenticated
from sigverify_common.tokens import TokenCache

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

_CALLER: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("sigverify_caller",
                                                                          default=None)


def caller() -> Identity | None:
    """The identity of the current RPC's caller (None outside an authenticated call)."""
    return _CALLER.get()


def actor(default: str) -> str:
    """Who to name in the audit log for the current call: the token id, else ``default``
    (``"system:<service>"``)."""
    who = _CALLER.get()
    return who.token_id if who is not None else default


def require_county(county: str, what: str) -> None:
    """Refuse (PERMISSION_DENIED) a clerk acting on another county's data."""
    refusal = access.county_refusal(_CALLER.get(), county, what)
    if refusal is not None:
        raise PermissionDenied(refusal)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, pool: asyncpg.Pool, service: str, cache: TokenCache | None = None) -> None:
        self._pool = pool
        self._service = service
        self.cache = cache or TokenCache(pool)

    async def _audit_refusal(self, who: str, method: str, reason: str, context: Context) -> None:
        log.warning("refused %s to %s: %s", method, who, reason)
        try:
            await audit.record_now(self._pool, who, "access.denied", method,
                                   {"reason": reason, "service": self._service,
                                    "peer": context.peer()})
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.error("could not audit a refusal of %s: %s", method, exc.__class__.__name__)

    async def _admit(self, method: str, context: Context) -> Identity:
        secret = access.bearer(context.invocation_metadata() or ())
        if secret is None:
            await self._audit_refusal("anonymous", method, "no bearer token", context)
            raise Unauthenticated("this call needs a bearer token (metadata 'authorization: "
                                  "Bearer <token>'): sigverify --token, or SIGVERIFY_TOKEN")
        found = await self.cache.resolve(secret)
        if found.identity is None:
            await self._audit_refusal(found.token_id or "anonymous", method, found.refusal, context)
            raise Unauthenticated(f"{found.refusal}")
        who = found.identity
        if not access.permits(method, who.role):
            reason = f"role {who.role.value} may not call {method.rsplit('/', 1)[-1]}"
            await self._audit_refusal(who.token_id, method, reason, context)
            raise PermissionDenied(reason)
        return who

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        method = str(details.method)
        if handler is None or access.is_open(method):
            return handler
        ser = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }

        @contextlib.asynccontextmanager
        async def admitted(context: Context) -> AsyncIterator[None]:
            who = await self._admit(method, context)
            token = _CALLER.set(who)
            try:
                yield
            except PermissionDenied as exc:
                await self._audit_refusal(who.token_id, method, str(exc), context)
                raise
            finally:
                with contextlib.suppress(ValueError):
                    _CALLER.reset(token)

        if handler.unary_unary:
            uu = handler.unary_unary

            async def unary_unary(request: Any, context: Context) -> Any:
                async with admitted(context):
                    return await uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, **ser)
        if handler.stream_unary:
            su = handler.stream_unary

            async def stream_unary(requests: Any, context: Context) -> Any:
                async with admitted(context):
                    return await su(requests, context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **ser)
        if handler.unary_stream:
            us = handler.unary_stream

            async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                async with admitted(context):
                    async for item in us(request, context):
                        yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, **ser)
        if handler.stream_stream:
            ss = handler.stream_stream

            async def stream_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
                async with admitted(context):
                    async for item in ss(requests, context):
                        yield item

            return grpc.stream_stream_rpc_method_handler(stream_stream, **ser)
        return handler
