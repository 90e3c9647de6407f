"""A roll loaded in the middle of a filing, with two matcher replicas deciding: the version
becomes active only once both serve it, and no decision is recorded against a version that
was not active at that instant (each decision's ``roll_version`` against the recorded
activation windows)."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest

from sigverify_cli import stack
from sigverify_cli.synth import SynthOutput
from tests.integration import helpers as h
from tests.integration.test_roll_load import active_version, cli, database, roll_list

pytestmark = pytest.mark.integration


def _gauges(metrics_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {name: float(value) for name, value in
            (line.split(" ", 1) for line in text.splitlines()
             if line.startswith(("sigverify_roll_version_serving ", "sigverify_roll_voters ")))}


async def test_a_roll_loaded_mid_filing_decides_nothing_against_the_old_version_after_it(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    await asyncio.to_thread(stack.spawn_service, live_stack, "matching", None, None, "matching-2")
    try:
        await asyncio.to_thread(stack.wait_healthy, live_stack, ["matching-2"])
        async with database(live_stack) as pool:
            before = await active_version(pool)
            for _ in range(100):  # both replicas heartbeat and hold the active version
                live = [r for r in (await roll_list(live_stack))["replicas"] if r["live"]]
                if len(live) == 2 and all(before in r["built_versions"] for r in live):
                    break
                await asyncio.sleep(0.3)
            else:
                raise AssertionError(f"the second replica did not come up: {live}")

            # Petitions are filed one after another until the new version is active, and one
            # more after, so that both replicas are deciding when the switch happens.
            loaded = asyncio.Event()
            filed: dict[str, int] = {}
            after_switch: list[str] = []

            async def file_until_loaded() -> None:
                # A petition about every second (the filing must not race ahead of matching):
                # until the switch, then one more, filed wholly after it.
                for _ in range(300):
                    last = loaded.is_set()
                    pid = h.new_petition_id()
                    await h.create_petition(live_stack, pid)
                    filed[pid] = 0
                    for path, county in synth_data.batches:
                        filed[pid] += (await h.submit(live_stack, path, pid, county)
                                       ).signatures_accepted
                    if last:
                        after_switch.append(pid)
                        return
                    await asyncio.sleep(1.0)

            filing = asyncio.create_task(file_until_loaded())
            for _ in range(1200):  # matching is under way with the old version
                if filed and await pool.fetchval("SELECT count(*) FROM matching.decisions "
                                                 "WHERE petition_id = ANY($1)", list(filed)):
                    break
                await asyncio.sleep(0.05)
            else:  # (it fell through after 10 s once, in a full suite: the load then came
                # before any decision, and the test could not see what it checks)
                raise AssertionError("no decision within 60 s of the first petition")
            rc, _out, err = await cli(live_stack, "roll", "load", str(synth_data.roll_csv))
            loaded.set()
            assert rc == 0, err
            after = await active_version(pool)
            assert after > before
            # The switch waited for both replicas to hold the new index.
            assert "2 of 2 live matcher replica(s) ready" in err
            await filing
            assert after_switch, "the filing ended before the switch"
            late = after_switch[0]  # filed after the switch
            for pid, n in filed.items():
                await h.wait_verified(live_stack, pid, n)

            mine = list(filed)
            used = {r["roll_version"]: r["n"] for r in await pool.fetch(
                "SELECT roll_version, count(*) AS n FROM matching.decisions "
                "WHERE petition_id = ANY($1) GROUP BY roll_version", mine)}
            assert set(used) == {before, after}, used
            # Every decision's version was the active one when the decision was written.
            outside = await pool.fetchval(
                "SELECT count(*) FROM matching.decisions d WHERE petition_id = ANY($1) AND NOT "
                "EXISTS (SELECT 1 FROM matching.roll_activations a WHERE a.version = "
                "d.roll_version AND d.decided_at >= a.activated_at AND (a.deactivated_at IS NULL "
                "OR d.decided_at < a.deactivated_at))", mine)
            assert outside == 0
            activated = await pool.fetchval(
                "SELECT activated_at FROM matching.roll_activations WHERE version = $1", after)
            assert await pool.fetchval(
                "SELECT count(*) FROM matching.decisions WHERE petition_id = ANY($1) AND "
                "roll_version <> $2 AND decided_at >= $3", mine, after, activated) == 0
            assert await pool.fetchval(
                "SELECT count(*) FROM matching.decisions WHERE petition_id = $1 AND "
                "roll_version = $2", late, after) == filed[late]

            # Each replica says which version it serves, and how many voters are in it.
            for _ in range(50):
                gauges = [_gauges(live_stack.services[name].metrics_port)
                          for name in ("matching", "matching-2")]
                if all(g.get("sigverify_roll_version_serving") == after for g in gauges):
                    break
                await asyncio.sleep(0.2)
            assert gauges == [{"sigverify_roll_version_serving": after,
                               "sigverify_roll_voters": loaded_roll}] * 2
    finally:
        proc = live_stack.services.pop("matching-2", None)
        if proc is not None:
            await asyncio.to_thread(stack.stop_pid, proc.pid)
            live_stack.save()
