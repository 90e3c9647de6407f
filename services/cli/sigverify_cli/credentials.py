"""How the CLI proves who it is: the bearer token it sends and the TLS it speaks.

The token comes from ``--token``, else ``SIGVERIFY_TOKEN``, else the local admin token that
``sigverify stack up`` wrote to ``<home>/admin-token`` (mode 0600). Every channel adds
``authorization: Bearer <token>`` to each call through a client interceptor (call
credentials would need TLS, and the embedded stack runs without it).

TLS: ``SIGVERIFY_TLS_CA`` (the CA that signed the services' certificates) turns it on;
``SIGVERIFY_TLS_CERT`` and ``SIGVERIFY_TLS_KEY`` add a client certificate for mutual TLS.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from sigverify_cli.stack import write_private
from sigverify_common import audit, db, tokens
from sigverify_common.access import NEVER, ExpirySpec, Role
from sigverify_common.tokens import TokenRow

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a file name


def local_admin_token(home: Path) -> str:
    path = home / ADMIN_TOKEN_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def resolve_token(explicit: str | None, home: Path, env: Mapping[str, str] | None = None) -> str:
    e = os.environ if env is None else env
    return (explicit or e.get("SIGVERIFY_TOKEN", "")).strip() or local_admin_token(home)


async def migrate_shared(pool: asyncpg.Pool) -> None:
    await db.migrate(pool, tokens.SCHEMA, tokens.MIGRATIONS)
    await db.migrate(pool, audit.SCHEMA, audit.MIGRATIONS)


async def bootstrap_admin(database_url: str, existing: str, actor: str, label: str,
                          expires: ExpirySpec | None = None) -> tuple[str, TokenRow | None]:
    """``existing`` when it is a valid (unrevoked, unexpired) token in that database, else a
    new admin token created directly in the database (the first admin token cannot come
    through an RPC that needs one), expiring as ``expires`` says (None: the admin default).
    Returns the secret and the new token's row (None when ``existing`` was kept)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await migrate_shared(pool)
        if existing and await tokens.is_valid(pool, existing):
            return existing, None
        async with pool.acquire() as conn, conn.transaction():
            row, secret = await tokens.create(conn, Role.ADMIN, "", label, actor, expires)
        return secret, row
    finally:
        await pool.close()


def write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` readable by its owner only (created 0600, never world-readable)."""
    write_private(path, secret + "\n")


async def ensure_local_admin(home: Path, database_url: str) -> str:
    """The stack's local admin token: kept in ``<home>/admin-token`` while the database
    knows it, made anew otherwise.

    It never expires: whoever can read that file (mode 0600, in a 0700 directory) can also
    read ``stack.json`` with the database's URL, which is more than any token gives, and
    ``stack up`` replaces it whenever the database no longer knows it.
    """
    existing = local_admin_token(home)
    secret, _ = await bootstrap_admin(database_url, existing, "system:stack",
                                      f"local admin ({os.environ.get('USER', 'stack up')})", NEVER)
    if secret != existing:
        write_secret(home / ADMIN_TOKEN_FILE, secret)
    return secret


# -- channels ----------------------------------------------------------------------------------

def _with_token(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add("authorization", f"Bearer {token}")
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata,
                                      details.credentials, details.wait_for_ready)


class _BearerUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: grpc.aio.ClientCallDetails,
                                    request: Any) -> Any:
        return await continuation(_with_token(details, self._token), request)


class _BearerUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_stream(self, continuation: Any, details: grpc.aio.ClientCallDetails,
                                     request: Any) -> Any:
        return await continuation(_with_token(details, self._token), request)


class _BearerStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_unary(self, continuation: Any, details: grpc.aio.ClientCallDetails,
                                     request_iterator: Any) -> Any:
        return await continuation(_with_token(details, self._token), request_iterator)


class _BearerStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_stream(self, continuation: Any, details: grpc.aio.ClientCallDetails,
                                      request_iterator: Any) -> Any:
        return await continuation(_with_token(details, self._token), request_iterator)


def tls_from_env(env: Mapping[str, str] | None = None) -> grpc.ChannelCredentials | None:
    e = os.environ if env is None else env
    ca = e.get("SIGVERIFY_TLS_CA", "").strip()
    cert = e.get("SIGVERIFY_TLS_CERT", "").strip()
    key = e.get("SIGVERIFY_TLS_KEY", "").strip()
    if not ca:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=Path(key).read_bytes() if key else None,
        certificate_chain=Path(cert).read_bytes() if cert else None)


def open_channel(addr: str, token: str, tls: grpc.ChannelCredentials | None = None,
                 options: list[tuple[str, Any]] | None = None) -> grpc.aio.Channel:
    """An aio channel to ``addr`` whose every call carries ``token`` (none when empty); TLS
    when ``tls`` is given."""
    interceptors: list[grpc.aio.ClientInterceptor] = []
    if token:
        interceptors = [_BearerUnaryUnary(token), _BearerUnaryStream(token),
                        _BearerStreamUnary(token), _BearerStreamStream(token)]
    if tls is not None:
        return grpc.aio.secure_channel(addr, tls, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(addr, options=options, interceptors=interceptors)
