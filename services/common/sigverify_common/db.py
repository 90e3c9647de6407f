"""PostgreSQL access: pools and per-schema migrations applied at start.

Each service owns one schema and its migrations live in ``<package>/migrations/NNNN_verb_noun.sql``.
Migrations run under an advisory lock, once each, recorded in ``<schema>.schema_migrations``.
"""

from __future__ import annotations

import importlib.resources
import logging
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import asyncpg.pool

log = logging.getLogger(__name__)

#: A connection, whether acquired from a pool or opened directly.
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@asynccontextmanager
async def open_pool(url: str, *, min_size: int = 1, max_size: int = 8) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, command_timeout=60)
    try:
        yield pool
    finally:
        await pool.close()


def migration_files(package: str) -> list[tuple[str, str]]:
    root = importlib.resources.files(package).joinpath("migrations")
    files = sorted((p.name, p.read_text(encoding="utf-8")) for p in root.iterdir() if p.name.endswith(".sql"))
    return files


#: Tables every service schema has: the outbox its publisher drains, the outbox rows that can
#: never be sent (too large, or refused by the broker for good: kept with the reason for an
#: operator), and the dead letters its consumers set aside (records that could not be decoded,
#: failed the topic's checks, made the handler fail on their own, or refer to what does not
#: exist; ``kind`` says which).
COMMON_TABLES = """
CREATE TABLE IF NOT EXISTS "{schema}".outbox (
    id     bigserial PRIMARY KEY,
    topic  text NOT NULL,
    key    bytea NOT NULL,
    value  bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS "{schema}".dead_letters (
    topic      text NOT NULL,
    partition  integer NOT NULL,
    "offset"   bigint NOT NULL,
    reason     text NOT NULL,
    payload    bytea NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
ALTER TABLE "{schema}".dead_letters ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'undecodable';
CREATE TABLE IF NOT EXISTS "{schema}".outbox_quarantine (
    id      bigint PRIMARY KEY,
    topic   text NOT NULL,
    key     bytea NOT NULL,
    value   bytea NOT NULL,
    reason  text NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
"""


#: How long one migration may run (seconds): building indexes on a filled table.
MIGRATION_TIMEOUT = 6 * 3600.0


async def migrate(pool: asyncpg.Pool, schema: str, package: str) -> int:
    """Apply the package's migrations not yet applied to ``schema``; returns how many ran.

    The schema's common tables (outbox, its quarantine, dead letters) are created first.
    """
    applied = 0
    lock_key = zlib.crc32(f"sigverify-migrate-{schema}".encode())
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations '
            "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute(COMMON_TABLES.format(schema=schema))
        done = {r["name"] for r in await conn.fetch(f'SELECT name FROM "{schema}".schema_migrations')}
        for name, sql in migration_files(package):
            if name in done:
                continue
            log.info("applying migration %s.%s", schema, name)
            started = time.monotonic()
            # Not the pool's command timeout (60 s): a migration building an index on a
            # filled table (dedupe's 0003: ~5 s per million signatures) may take longer,
            # and cut off it would roll back and fail every start after.
            await conn.execute(sql, timeout=MIGRATION_TIMEOUT)
            log.info("applied migration %s.%s in %.1fs", schema, name, time.monotonic() - started)
            await conn.execute(f'INSERT INTO "{schema}".schema_migrations (name) VALUES ($1)', name)
            applied += 1
    return applied


async def table_exists(conn: Conn | asyncpg.Pool, qualified: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", qualified))
