"""A service killed mid-batch and restarted ends in the same tally as an undisturbed run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sigverify_cli import stack
from sigverify_cli.synth import SynthOutput
from tests.integration import helpers as h

pytestmark = pytest.mark.integration

Outcome = tuple[dict[str, int], dict[tuple[str, int], tuple[str, str, str]]]


async def _run(state: stack.StackState, data: SynthOutput, kill: str | None) -> Outcome:
    """Submit three batches; with ``kill``, SIGKILL that service mid-pipeline and restart it."""
    pid = h.new_petition_id()
    await h.create_petition(state, pid)
    total = 0
    file_of: dict[str, str] = {}
    for i, (path, county) in enumerate(data.batches[:3]):
        receipt = await h.submit(state, path, pid, county)
        total += receipt.signatures_accepted
        file_of[receipt.batch_id] = path.name
        if kill and i == 0:
            await asyncio.sleep(0.2)
            stack.kill_pid(state.services[kill].pid)
    if kill:
        mid = await h.tally(state, pid)
        assert mid.total.pending > 0, "the kill should have happened mid-pipeline"
        stack.spawn_service(state, kill, ports=state.services[kill])
        await asyncio.to_thread(stack.wait_healthy, state, (kill,))
    t = await h.wait_verified(state, pid, total, timeout=240)
    rows = {(file_of[b], line): v for (b, line), v in (await h.results_by_batch(state, pid)).items()}
    assert len(rows) == total
    return h.reason_counts(t), rows


@pytest.mark.parametrize("victim", ["matching", "dedupe"])
async def test_killed_service_restarted_gives_the_same_tally(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput, victim: str
) -> None:
    calm_counts, calm_rows = await _run(live_stack, synth_data, kill=None)
    crash_counts, crash_rows = await _run(live_stack, synth_data, kill=victim)
    assert crash_counts == calm_counts
    assert crash_rows == calm_rows


def test_stack_records_a_restarted_service_so_down_stops_it(live_stack: stack.StackState) -> None:
    recorded = stack.StackState.load(Path(live_stack.home))
    assert recorded is not None
    for name, proc in live_stack.services.items():
        assert recorded.services[name].pid == proc.pid, name
        assert stack.pid_alive(proc.pid), name
