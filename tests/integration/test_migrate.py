"""Migrations on the real PostgreSQL: one that runs longer than the pool's command timeout
(an index built on a filled table at an upgrade) is applied, not cut off and rolled back."""

from __future__ import annotations

import sys
from pathlib import Path

import asyncpg
import pytest

from sigverify_cli import stack
from sigverify_common import db
from tests.integration import helpers as h

pytestmark = pytest.mark.integration


async def test_a_migration_longer_than_the_command_timeout_is_applied(
        live_stack: stack.StackState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "sigverify_slowmig"
    (package / "migrations").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "migrations" / "0001_slow.sql").write_text(
        "CREATE TABLE slowmig.t (x int);\nSELECT pg_sleep(2.5);\n"
        "CREATE INDEX t_x ON slowmig.t (x);\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    async with h.scratch_database(live_stack, "sigverify_migrate", ()) as url:
        # The services' pools cut any statement off after 60 s; this one after 1 s.
        pool = await asyncpg.create_pool(url, min_size=1, max_size=1, command_timeout=1)
        try:
            with pytest.raises(TimeoutError):
                await pool.execute("SELECT pg_sleep(2.5)")  # the timeout is real
            assert await db.migrate(pool, "slowmig", "sigverify_slowmig") == 1
            assert await pool.fetchval("SELECT count(*) FROM slowmig.schema_migrations") == 1
            assert await db.table_exists(pool, "slowmig.t")
            assert await db.migrate(pool, "slowmig", "sigverify_slowmig") == 0
        finally:
            await pool.close()
            sys.modules.pop("sigverify_slowmig", None)
