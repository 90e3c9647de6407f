"""A broker that forgets everything (tansu keeps nothing across restarts) loses no work:
Postgres is the record of truth and each service re-publishes what the next stage lacks."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import asyncpg
import pytest

from sigverify_cli import stack
from sigverify_cli.synth import SynthOutput
from sigverify_matching.roll import load_roll
from tests.integration import helpers as h

pytestmark = pytest.mark.integration


async def _sibling_database(url: str) -> tuple[str, str, str]:
    """(admin url, name, url) of a new database on the same server as ``url``."""
    server = url.rsplit("/", 1)[0]
    name = f"sigverify_loss_{uuid.uuid4().hex[:8]}"
    await stack.create_database(f"{server}/postgres", name)
    return f"{server}/postgres", name, f"{server}/{name}"


async def test_work_stranded_in_a_lost_broker_is_finished_after_restart(
    live_stack: stack.StackState, synth_data: SynthOutput, tmp_path: Path
) -> None:
    admin, name, url = await _sibling_database(live_stack.database_url)
    env = {**{k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"},
           "DATABASE_URL": url}
    home = tmp_path / "stack"
    state = await asyncio.to_thread(stack.up, home, env, lambda m: None)
    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            await load_roll(pool, synth_data.roll_csv)
        finally:
            await pool.close()
        pid = h.new_petition_id()
        await h.create_petition(state, pid)
        # With dedupe dead, matched signatures pile up in the broker only.
        stack.kill_pid(state.services["dedupe"].pid)
        path, county = synth_data.batches[0]
        receipt = await h.submit(state, path, pid, county)
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            for _ in range(300):
                decided = await pool.fetchval(
                    "SELECT count(*) FROM matching.decisions WHERE petition_id = $1", pid)
                if decided == receipt.signatures_accepted:
                    break
                await asyncio.sleep(0.2)
            assert decided == receipt.signatures_accepted
        finally:
            await pool.close()
        before = await h.tally(state, pid)
        assert before.total.verified == 0
        # Everything stops; the broker's memory is gone. Start again on the same database.
        await asyncio.to_thread(stack.down, home, lambda m: None)
        state = await asyncio.to_thread(stack.up, home, env, lambda m: None)
        after = await h.wait_verified(state, pid, receipt.signatures_accepted, timeout=120)
        assert after.total.received == receipt.signatures_accepted
        assert after.total.verified == receipt.signatures_accepted
    finally:
        await asyncio.to_thread(stack.down, home, lambda m: None)
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
