"""A roll load or activation whose matching service is killed (SIGKILL) part way leaves no
version ``loading`` or ``building`` for ever: the restarted service settles it.

Found in a hostile trial: ``sigverify roll load`` waiting for the index to be built (or
``roll rollback``), matching killed and restarted, and the version stayed ``building``: the
restarted replica even held its index, and nothing activated it or timed it out until the
next load or activation. Now every replica settles, at each heartbeat, a version left
``building`` (it becomes ``ready``, its rows kept, with a note saying why; ``roll activate
N`` activates it) or ``loading`` (``discarded``, its rows deleted) when no load or activation
holds the roll lifecycle's lock, and leaves alone one whose operation is alive.

The replica is held back from activating by a second, fake replica that heartbeats but never
builds the index (as in ``test_roll_load``), so the load waits in ``building`` for as long
as the test wants.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from sigverify.matching.v1 import matching_pb2, matching_pb2_grpc
from sigverify_cli import stack
from sigverify_cli.synth import SynthOutput
from sigverify_matching.roll import CHUNK
from tests.conftest import SERVICE_ENV
from tests.integration import helpers as h
from tests.integration.test_roll_load import active_version, cli, database, roll_list, serving, write_roll

pytestmark = pytest.mark.integration


def respawn_matching(state: stack.StackState) -> None:
    """Start matching again on its ports with the session's settings (as tests/faults do)."""
    stack.spawn_service(state, "matching", SERVICE_ENV.get("matching", {}),
                        ports=state.services["matching"])
    stack.wait_healthy(state, ("matching",))


async def until(what: str, check: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    end = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.2)


async def state_of(pool: asyncpg.Pool, version: int) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT state, note, rows FROM matching.roll_versions WHERE version = $1", version)
    assert row is not None
    return row


async def newest_in(pool: asyncpg.Pool, after: int, state: str) -> int | None:
    v = await pool.fetchval("SELECT max(version) FROM matching.roll_versions WHERE version > $1 "
                            "AND state = $2", after, state)
    return int(v) if v is not None else None


async def _kill_and_restart_while(live_stack: stack.StackState, pool: asyncpg.Pool,
                                  version: int, state: str) -> None:
    """The version is ``state`` under a live operation: it stays so (the replica's heartbeat
    leaves a version alone while its operation holds the lock); then matching is killed
    (SIGKILL) and started again."""
    await asyncio.sleep(2.5)  # two heartbeats and more
    assert (await state_of(pool, version))["state"] == state
    stack.kill_pid(live_stack.services["matching"].pid)
    await asyncio.to_thread(respawn_matching, live_stack)


async def test_a_load_whose_matcher_is_killed_while_building_leaves_the_version_ready(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    async with database(live_stack) as pool:
        before = await active_version(pool)
        newest = int(await pool.fetchval("SELECT max(version) FROM matching.roll_versions"))
        async with h.slow_replica(pool, before):
            load = asyncio.create_task(cli(live_stack, "roll", "load", str(synth_data.roll_csv),
                                           "--timeout", "600"))
            version = await until("the load to be building",
                                  lambda: newest_in(pool, newest, "building"), 120)
            await _kill_and_restart_while(live_stack, pool, version, "building")
            rc, out, err = await asyncio.wait_for(load, 60)
            assert rc != 0 and "Traceback" not in err + out, err

        # Settled by the restarted replica, without a further load or activation: kept, not
        # activated, and said why.
        async def settled() -> asyncpg.Record | None:
            row = await state_of(pool, version)
            return row if row["state"] != "building" else None
        row = await until(f"roll version {version} to leave 'building'", settled)
        assert row["state"] == "ready", dict(row)
        assert "its activation was interrupted" in row["note"]
        assert f"'sigverify roll activate {version}' activates it" in row["note"]
        assert await active_version(pool) == before
        assert await pool.fetchval("SELECT count(*) FROM matching.voters WHERE version = $1",
                                   version) == loaded_roll
        entry = await pool.fetchrow(
            "SELECT actor, detail FROM audit.entries WHERE action = 'roll.interrupted' AND "
            "subject = $1", f"roll-version-{version}")
        assert entry is not None and entry["actor"] == "system:matching"
        await serving(live_stack, before)
        listed = {v["version"]: v for v in (await roll_list(live_stack))["versions"]}
        assert listed[version]["state"] == "ready"

        # The registrar decides: the kept version activates, and its note goes.
        rc, out, err = await cli(live_stack, "roll", "activate", str(version))
        assert rc == 0, err
        assert await active_version(pool) == version
        assert (await state_of(pool, version))["note"] == ""
        await serving(live_stack, version)


async def test_a_rollback_whose_matcher_is_killed_leaves_the_previous_version_ready(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    async with database(live_stack) as pool:
        rc, _, err = await cli(live_stack, "roll", "load", str(synth_data.roll_csv))
        assert rc == 0, err
        active = await active_version(pool)
        await serving(live_stack, active)
        previous = int(await pool.fetchval(
            "SELECT previous FROM matching.roll_activations WHERE version = $1 "
            "AND deactivated_at IS NULL", active))
        assert (await state_of(pool, previous))["state"] == "ready"
        async with h.slow_replica(pool, active):
            back = asyncio.create_task(cli(live_stack, "roll", "rollback", "--timeout", "600"))

            async def building() -> bool:
                return bool((await state_of(pool, previous))["state"] == "building")
            await until("the rollback to be building", building, 60)
            await _kill_and_restart_while(live_stack, pool, previous, "building")
            rc, out, err = await asyncio.wait_for(back, 60)
            assert rc != 0 and "Traceback" not in err + out, err

        async def settled() -> asyncpg.Record | None:
            row = await state_of(pool, previous)
            return row if row["state"] != "building" else None
        row = await until(f"roll version {previous} to leave 'building'", settled)
        assert row["state"] == "ready" and "its activation was interrupted" in row["note"]
        assert await active_version(pool) == active
        await serving(live_stack, active)
        # The rollback can be asked for again.
        rc, _, err = await cli(live_stack, "roll", "rollback")
        assert rc == 0, err
        assert await active_version(pool) == previous
        await serving(live_stack, previous)


async def test_a_load_whose_matcher_is_killed_while_loading_is_discarded(
    live_stack: stack.StackState, loaded_roll: int, tmp_path: Path
) -> None:
    """An upload half sent when matching is killed: the version is discarded and its rows
    deleted by the restarted replica (before, only at the next load or activation)."""
    path = write_roll(tmp_path / "half.csv", CHUNK * 3)
    data = path.read_bytes()
    hold = asyncio.Event()

    async def requests() -> AsyncIterator[matching_pb2.LoadRollRequest]:
        yield matching_pb2.LoadRollRequest(header=matching_pb2.RollHeader(source=path.name))
        yield matching_pb2.LoadRollRequest(data=data[: len(data) // 2])
        await hold.wait()  # never the rest, nor the end

    async with database(live_stack) as pool:
        before = await active_version(pool)
        newest = int(await pool.fetchval("SELECT max(version) FROM matching.roll_versions"))

        async def upload() -> None:
            async with h.channel(live_stack, "matching") as ch:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    async for _ in matching_pb2_grpc.MatchingServiceStub(ch).LoadRoll(
                            requests(), timeout=300):
                        pass

        up = asyncio.create_task(upload())
        try:
            async def copied() -> int | None:
                v = await newest_in(pool, newest, "loading")
                if v is not None and await pool.fetchval(
                        "SELECT count(*) > 0 FROM matching.voters WHERE version = $1", v):
                    return v
                return None
            version = await until("rows to be copied", copied, 60)
            await _kill_and_restart_while(live_stack, pool, version, "loading")
        finally:
            hold.set()
            up.cancel()
            await asyncio.gather(up, return_exceptions=True)

        async def settled() -> asyncpg.Record | None:
            row = await state_of(pool, version)
            return row if row["state"] != "loading" else None
        row = await until(f"roll version {version} to leave 'loading'", settled)
        assert row["state"] == "discarded" and "the load was interrupted" in row["note"]
        assert await pool.fetchval("SELECT count(*) FROM matching.voters WHERE version = $1",
                                   version) == 0
        assert await active_version(pool) == before
        await serving(live_stack, before)
