"""The one authentication and authorisation interceptor every service's server runs.

For each RPC outside health and reflection it reads ``authorization: Bearer <token>``,
resolves the token through ``tokens.TokenCache`` (UNAUTHENTICATED when missing, unknown or
revoked), checks the role against ``access.POLICY`` (PERMISSION_DENIED), and makes the
caller available to the servicer for the rest of the call (``caller()``, ``actor()``,
``require_county()``). Every refusal, including a servicer's ``PermissionDenied``, goes to the
audit log: who, which RPC, why; never request content.

Refusals are counted in memory (``RefusalLog``) and written as one audit entry per (reason,
RPC, caller) with the count, the first and last time and the peers seen, every
``REFUSAL_AUDIT_SECONDS`` and at shutdown: a flood of refused calls costs O(1) entries per
interval, not one entry (and one turn of the audit chain's lock, which every stage of the
pipeline takes to append) per call. ``sigverify_access_refusals_total`` counts them at once.

It raises ``Unauthenticated`` / ``PermissionDenied`` and runs inside the error interceptor,
which maps them to their status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc

from sigverify_common import access, audit, metrics
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


#: At most this many peers are named in one aggregated refusal entry (the rest are counted).
MAX_PEERS = 10
#: Distinct (reason, RPC, caller) keys held between flushes; beyond it a flush is due at once,
#: and further callers are counted together under the actor ``SEVERAL`` (memory stays bounded
#: while the database is away).
MAX_KEYS = 1000
SEVERAL = "several"


def _peer_host(peer: str) -> str:
    """``ipv4:10.0.0.7:53412`` -> ``ipv4:10.0.0.7`` (a client's port changes per connection)."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer


@dataclass
class _Tally:
    first_at: datetime
    last_at: datetime
    count: int = 0
    #: Calls per peer, for the first ``MAX_PEERS`` peers; the rest are only counted.
    peers: dict[str, int] = field(default_factory=dict)
    other_peer_calls: int = 0

    def add_peer(self, host: str, calls: int = 1) -> None:
        if host in self.peers or len(self.peers) < MAX_PEERS:
            self.peers[host] = self.peers.get(host, 0) + calls
        else:
            self.other_peer_calls += calls


class RefusalLog:
    """Refused calls, counted per (reason, RPC, caller) and written to the audit log as one
    entry per key every ``interval`` seconds (``run``) and when the service stops (``flush``).

    An entry: actor = the caller's token id or ``anonymous``, action ``access.denied``,
    subject = the RPC, detail = service, reason, count, first_at, last_at, peers (calls per
    address without its port, for at most ``MAX_PEERS`` addresses) and other_peer_calls
    (calls from further addresses). Counts that cannot be written (the database is away) stay
    for the next flush.
    """

    def __init__(self, pool: asyncpg.Pool, service: str, interval: float = 60.0) -> None:
        self._pool = pool
        self._service = service
        self._interval = interval
        self._pending: dict[tuple[str, str, str], _Tally] = {}
        self._due = asyncio.Event()

    @property
    def pending(self) -> int:
        """Refused calls not written to the audit log yet."""
        return sum(t.count for t in self._pending.values())

    def note(self, who: str, method: str, reason: str, peer: str, code: str, kind: str) -> None:
        metrics.ACCESS_REFUSALS.labels(code, kind).inc()
        now = datetime.now(UTC)
        key = (who, method, reason)
        t = self._pending.get(key)
        if t is None and len(self._pending) >= MAX_KEYS:
            self._due.set()
            key = (SEVERAL, method, reason)
            t = self._pending.get(key)
        if t is None:
            # Logged once per key and interval; the flush logs the count.
            log.warning("refused %s to %s: %s", method, who, reason)
            t = self._pending[key] = _Tally(now, now)
            if len(self._pending) >= MAX_KEYS:
                self._due.set()
        t.count += 1
        t.last_at = now
        t.add_peer(_peer_host(peer))

    async def flush(self) -> int:
        """Write what was counted since the last flush (one transaction); returns the number
        of entries written."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                for (who, method, reason), t in batch.items():
                    await audit.record(conn, who, "access.denied", method, {
                        "service": self._service, "reason": reason, "count": t.count,
                        "first_at": t.first_at.isoformat(timespec="microseconds"),
                        "last_at": t.last_at.isoformat(timespec="microseconds"),
                        "peers": dict(sorted(t.peers.items())),
                        "other_peer_calls": t.other_peer_calls})
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self._merge_back(batch)
            log.error("could not audit %d refused call(s): %s; kept for the next attempt",
                      sum(t.count for t in batch.values()), exc.__class__.__name__)
            return 0
        log.info("audited %d refused call(s) in %d entr%s",
                 sum(t.count for t in batch.values()), len(batch), "y" if len(batch) == 1 else "ies")
        return len(batch)

    def _merge_back(self, batch: dict[tuple[str, str, str], _Tally]) -> None:
        for key, old in batch.items():
            new = self._pending.get(key)
            if new is None:
                self._pending[key] = old
                continue
            new.first_at, new.count = old.first_at, new.count + old.count
            new.other_peer_calls += old.other_peer_calls
            for host, calls in old.peers.items():
                new.add_peer(host, calls)

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every ``interval`` seconds (sooner when too many keys pile up) until
        ``stop``; the last flush, after the server has stopped, is the service's to make."""
        while not stop.is_set():
            waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._due.wait())}
            try:
                await asyncio.wait(waits, timeout=self._interval,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            self._due.clear()
            await self.flush()


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, pool: asyncpg.Pool, service: str, cache: TokenCache | None = None,
                 refusals: RefusalLog | None = None) -> None:
        self._pool = pool
        self._service = service
        self.cache = cache or TokenCache(pool)
        self.refusals = refusals or RefusalLog(pool, service)

    def _refuse(self, who: str, method: str, reason: str, context: Context,
                kind: str) -> None:
        code = "PERMISSION_DENIED" if kind in ("role", "scope") else "UNAUTHENTICATED"
        self.refusals.note(who, method, reason, context.peer() or "", code, kind)

    async def _admit(self, method: str, context: Context) -> Identity:
        secret = access.bearer(context.invocation_metadata() or ())
        if secret is None:
            self._refuse("anonymous", method, "no bearer token", context, "no_token")
            raise Unauthenticated("this call needs a bearer token (metadata 'authorization: "
                                  "Bearer <token>'): sigverify --token, or SIGVERIFY_TOKEN")
        found = await self.cache.resolve(secret)
        if found.identity is None:
            self._refuse(found.token_id or "anonymous", method, found.refusal, context,
                         found.refusal.replace(" ", "_"))
            raise Unauthenticated(found.message or found.refusal)
        who = found.identity
        if not access.permits(method, who.role):
            reason = f"role {who.role.value} may not call {method.rsplit('/', 1)[-1]}"
            self._refuse(who.token_id, method, reason, context, "role")
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
                self._refuse(who.token_id, method, str(exc), context, "scope")
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
