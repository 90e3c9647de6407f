"""AccessService (served by intake): tokens and the audit log's check. Admins only
(``sigverify_common.access.POLICY`` lists it for no other role)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import grpc

from sigverify.access.v1 import access_pb2, access_pb2_grpc
from sigverify_common import audit, auth, tokens
from sigverify_common.access import NEVER, ExpirySpec, Role, parse_instant
from sigverify_common.errors import InvalidArgument
from sigverify_common.fields import check_text, shown
from sigverify_common.tokens import TokenCache, TokenRow
from sigverify_common.vocab import Counties
from sigverify_intake.domain import known_county

Context = grpc.aio.ServicerContext[Any, Any]
ACTOR = "system:intake"
MAX_SECONDS = 100 * 365 * 86400
#: ``expires_at``, in characters (an ISO timestamp with microseconds and offset is 32).
MAX_INSTANT_CHARS = 64


def role_to_pb(role: Role) -> access_pb2.Role.ValueType:
    return access_pb2.Role.Value(f"ROLE_{role.name}")


def role_from_pb(value: int) -> Role:
    try:
        name = access_pb2.Role.Name(value).removeprefix("ROLE_")  # type: ignore[arg-type]
        return Role[name]
    except (ValueError, KeyError):
        raise InvalidArgument("role is required: clerk, reviewer, ops or admin") from None


def token_to_pb(t: TokenRow) -> access_pb2.TokenInfo:
    return access_pb2.TokenInfo(
        token_id=t.token_id, role=role_to_pb(t.role), county=t.county, label=t.label,
        created_at=t.created_at.isoformat(), created_by=t.created_by,
        revoked_at=t.revoked_at.isoformat() if t.revoked_at else "",
        expires_at=t.expires_at.isoformat() if t.expires_at else "")


def expiry_from_pb(request: access_pb2.CreateTokenRequest) -> ExpirySpec | None:
    """The requested expiry (None: the role's default)."""
    which = request.WhichOneof("expiry")
    if which == "never_expires":
        return NEVER if request.never_expires else None
    if which == "expires_in_seconds":
        if not 0 < request.expires_in_seconds <= MAX_SECONDS:
            raise InvalidArgument("expires_in_seconds must be between 1 and "
                                  f"{MAX_SECONDS} (100 years)")
        return timedelta(seconds=request.expires_in_seconds)
    if which == "expires_at":
        text = check_text(request.expires_at, "expires_at", MAX_INSTANT_CHARS)
        try:
            return parse_instant(text)
        except ValueError:
            raise InvalidArgument(f"expires_at {shown(text)} is not an ISO date or timestamp"
                                  ) from None
    return None


class AccessService(access_pb2_grpc.AccessServiceServicer):
    def __init__(self, pool: asyncpg.Pool, cache: TokenCache | None,
                 counties: Counties | None = None) -> None:
        self._pool = pool
        self._cache = cache
        self._counties = counties if counties is not None else Counties()

    async def CreateToken(self, request: access_pb2.CreateTokenRequest, context: Context
                          ) -> access_pb2.CreateTokenResponse:
        role = role_from_pb(request.role)
        county = request.county
        if county.strip():
            county = known_county(self._counties, county)
        label = check_text(request.label, "label", 200)
        async with self._pool.acquire() as conn, conn.transaction():
            row, secret = await tokens.create(conn, role, county, label, auth.actor(ACTOR),
                                              expiry_from_pb(request))
        return access_pb2.CreateTokenResponse(info=token_to_pb(row), token=secret)

    async def ListTokens(self, request: access_pb2.ListTokensRequest, context: Context
                         ) -> access_pb2.ListTokensResponse:
        rows = await tokens.list_all(self._pool, request.include_revoked)
        return access_pb2.ListTokensResponse(tokens=[token_to_pb(t) for t in rows])

    async def RevokeToken(self, request: access_pb2.RevokeTokenRequest, context: Context
                          ) -> access_pb2.TokenInfo:
        token_id = check_text(request.token_id, "token_id", 100)
        if not token_id:
            raise InvalidArgument("token_id is required")
        row = await tokens.revoke(self._pool, token_id, auth.actor(ACTOR))
        if self._cache is not None:
            self._cache.forget(row.token_id)
        return token_to_pb(row)

    async def VerifyAuditLog(self, request: access_pb2.VerifyAuditLogRequest, context: Context
                             ) -> access_pb2.VerifyAuditLogResponse:
        r = await audit.verify(self._pool)
        return access_pb2.VerifyAuditLogResponse(ok=r.ok, entries=r.entries,
                                                 first_broken_id=r.first_broken_id,
                                                 problem=r.problem, head_hash=r.head_hash)
