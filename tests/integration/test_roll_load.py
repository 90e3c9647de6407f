"""Loading voter rolls into a scratch database on the stack's server: versions replace one
another, and a load that fails half-way leaves nothing behind."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from sigverify_cli import stack
from sigverify_common import audit, db
from sigverify_matching.roll import CHUNK, ROLL_COLUMNS, load_roll

pytestmark = pytest.mark.integration


@pytest.fixture
async def scratch(live_stack: stack.StackState) -> AsyncIterator[asyncpg.Pool]:
    name = f"rolls_{uuid.uuid4().hex[:8]}"
    base = live_stack.database_url.rsplit("/", 1)[0]
    admin = await asyncpg.connect(f"{base}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    pool = await asyncpg.create_pool(f"{base}/{name}", min_size=1, max_size=2)
    try:
        await db.migrate(pool, "matching", "sigverify_matching")
        await db.migrate(pool, audit.SCHEMA, audit.MIGRATIONS)
        yield pool
    finally:
        await pool.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def write_roll(path: Path, n: int, prefix: str = "V") -> Path:
    with path.open("w", encoding="utf-8") as f:
        f.write(",".join(ROLL_COLUMNS) + "\n")
        for i in range(n):
            f.write(f"{prefix}{i},Ana,,Lopez,,1980-01-01,{i} Main St,,Fresno,93701,fresno,ACTIVE,"
                    "2010-01-01\n")
        f.write("broken,row\n")
    return path


async def test_versions_replace_each_other_and_a_failed_load_leaves_nothing(
    scratch: asyncpg.Pool, tmp_path: Path
) -> None:
    n = CHUNK * 2 + 123  # several COPY chunks
    first = await load_roll(scratch, write_roll(tmp_path / "a.csv", n))
    assert first.rows == n and first.errors == [(n + 2, "(row)", f"expected {len(ROLL_COLUMNS)} "
                                                "fields, found 2")]
    second = await load_roll(scratch, write_roll(tmp_path / "b.csv", n, "W"))
    versions = {r["version"]: (r["state"], r["rows"]) for r in
                await scratch.fetch("SELECT * FROM matching.roll_versions")}
    assert versions == {first.version: ("retired", n), second.version: ("active", n)}
    assert await scratch.fetchval("SELECT count(*) FROM matching.voters") == n
    assert await scratch.fetchval("SELECT count(*) FROM matching.voters WHERE version = $1 "
                                  "AND voter_id LIKE 'W%' AND county = 'Fresno'", second.version) == n

    def fail_after_first_chunk(rows: int) -> None:
        raise RuntimeError(f"disk full after {rows} rows")

    with pytest.raises(RuntimeError, match="disk full"):
        await load_roll(scratch, write_roll(tmp_path / "c.csv", n, "X"), fail_after_first_chunk)
    assert await scratch.fetchval("SELECT count(*) FROM matching.voters") == n
    assert await scratch.fetchval("SELECT count(*) FROM matching.voters WHERE voter_id LIKE 'X%'") == 0
    assert await scratch.fetchval("SELECT max(version) FROM matching.roll_versions "
                                  "WHERE state = 'active'") == second.version
    assert await scratch.fetchval("SELECT count(*) FROM matching.roll_versions") == 2
