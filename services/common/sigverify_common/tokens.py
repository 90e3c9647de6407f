"""Bearer tokens in PostgreSQL (``access.tokens``: hashes only) and a short-lived lookup cache.

Every service migrates the ``access`` and ``audit`` schemas at start (idempotent, under an
advisory lock) and reads tokens; intake's ``AccessService`` and the stack's bootstrap write
them. Creating and revoking a token is audited in the same transaction.

A token stops working at ``expires_at`` (NULL: never; see ``access.expiry_for``). The
database's clock decides, and a cached lookup is never kept past the token's expiry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from sigverify_common import audit
from sigverify_common.access import (
    ExpirySpec,
    Identity,
    Role,
    check_grant,
    expiry_for,
    new_token,
    new_token_id,
    token_hash,
)
from sigverify_common.db import Conn
from sigverify_common.errors import InvalidArgument, NotFound

SCHEMA = "access"
#: The package whose ``migrations/`` create ``access.tokens``.
MIGRATIONS = "sigverify_common.schemas.access"


@dataclass(frozen=True, slots=True)
class TokenRow:
    token_id: str
    role: Role
    county: str
    label: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    #: None: never expires.
    expires_at: datetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC))


def _row(r: asyncpg.Record) -> TokenRow:
    return TokenRow(r["token_id"], Role(r["role"]), r["county"] or "", r["label"], r["created_at"],
                    r["created_by"], r["revoked_at"], r["expires_at"])


def instant(at: datetime) -> str:
    """A timestamp as users read it: UTC, to the second."""
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def create(conn: Conn, role: Role, county: str, label: str, created_by: str,
                 expires: ExpirySpec | None = None) -> tuple[TokenRow, str]:
    """Store a new token's hash (and audit it) in the caller's transaction; returns the row
    and the secret, which exists nowhere else. ``expires`` left out: the role's default
    lifetime (``access.DEFAULT_LIFETIME``)."""
    try:
        county = check_grant(role, county)
        now = await conn.fetchval("SELECT now()")
        expires_at = expiry_for(role, expires, now)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    secret = new_token()
    row = await conn.fetchrow(
        "INSERT INTO access.tokens (token_id, role, county, token_sha256, label, created_by, "
        "expires_at) VALUES ($1, $2, NULLIF($3, ''), $4, $5, $6, $7) RETURNING *",
        new_token_id(), role.value, county, token_hash(secret), label, created_by, expires_at,
    )
    assert row is not None
    made = _row(row)
    await audit.record(conn, created_by, "token.created", made.token_id,
                       {"role": role.value, "county": county, "label": label,
                        "expires_at": instant(expires_at) if expires_at else "never"})
    return made, secret


async def list_all(pool: asyncpg.Pool, include_revoked: bool) -> list[TokenRow]:
    """Tokens in force (neither revoked nor expired); with ``include_revoked``, all of them."""
    rows = await pool.fetch(
        "SELECT * FROM access.tokens WHERE $1 OR (revoked_at IS NULL AND "
        "(expires_at IS NULL OR expires_at > now())) ORDER BY created_at, token_id",
        include_revoked)
    return [_row(r) for r in rows]


async def revoke(pool: asyncpg.Pool, token_id: str, by: str) -> TokenRow:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE access.tokens SET revoked_at = coalesce(revoked_at, now()), "
            "revoked_by = coalesce(revoked_by, $2) WHERE token_id = $1 RETURNING *", token_id, by)
        if row is None:
            raise NotFound(f"no token {token_id!r}")
        await audit.record(conn, by, "token.revoked", token_id, {})
        return _row(row)


async def is_valid(conn: Conn | asyncpg.Pool, secret: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT 1 FROM access.tokens WHERE token_sha256 = $1 AND revoked_at IS NULL "
        "AND (expires_at IS NULL OR expires_at > now())", token_hash(secret)))


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a token's hash resolves to: an identity, or why not."""

    identity: Identity | None
    refusal: str = ""          # "unknown token" | "revoked token" | "expired token"
    token_id: str = ""         # known even when revoked or expired
    #: What the caller is told when refused (the refusal, said for a person).
    message: str = ""


class TokenCache:
    """Resolves token hashes through the database, remembering answers for ``ttl`` seconds,
    so a revocation takes effect everywhere within ``ttl`` while lookups stay cheap. A valid
    token's answer is never remembered past the token's expiry."""

    def __init__(self, pool: asyncpg.Pool, ttl: float = 30.0, max_entries: int = 10_000) -> None:
        self._pool = pool
        self._ttl = ttl
        self._max = max_entries
        self._cache: dict[str, tuple[float, Lookup]] = {}

    async def resolve(self, secret: str) -> Lookup:
        digest = token_hash(secret)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        # The database's clock decides expiry, the same for every service.
        r = await self._pool.fetchrow(
            "SELECT token_id, role, county, revoked_at, expires_at, "
            "extract(epoch FROM expires_at - now())::float8 AS remaining "
            "FROM access.tokens WHERE token_sha256 = $1", digest)
        keep = self._ttl
        if r is None:
            found = Lookup(None, "unknown token", message="unknown token")
        elif r["revoked_at"] is not None:
            found = Lookup(None, "revoked token", r["token_id"], "revoked token")
        elif r["remaining"] is not None and r["remaining"] <= 0:
            found = Lookup(None, "expired token", r["token_id"],
                           f"token {r['token_id']} expired at {instant(r['expires_at'])}: ask "
                           "an admin for a new one (sigverify token create)")
        else:
            found = Lookup(Identity(r["token_id"], Role(r["role"]), r["county"] or ""),
                           token_id=r["token_id"])
            if r["remaining"] is not None:
                keep = min(keep, float(r["remaining"]))
        if len(self._cache) >= self._max:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= self._max:
                self._cache.clear()
        self._cache[digest] = (now + keep, found)
        return found

    def forget(self, token_id: str) -> None:
        """Drop a token from this process's cache at once (after revoking it here)."""
        self._cache = {k: v for k, v in self._cache.items() if v[1].token_id != token_id}
