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
        # As an ops engineer does (`sigverify stack restart NAME`): the dead process is
        # started again on its ports and the call returns once it serves.
        said: list[str] = []
        await asyncio.to_thread(stack.restart, state, kill, said.append)
        assert said == [f"starting {kill}"]  # it was dead: nothing to stop
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


def test_stack_restart_stops_a_running_service_and_records_the_new_one(
        live_stack: stack.StackState) -> None:
    """``sigverify stack restart tally``: the running process is stopped, a new one serves
    on the same ports, and stack.json records it (so ``stack down`` stops it)."""
    old = live_stack.services["tally"]
    said: list[str] = []
    new = stack.restart(live_stack, "tally", said.append)
    assert said == ["stopping tally", "starting tally"]
    assert new.pid != old.pid and not stack.pid_alive(old.pid)
    assert (new.grpc_port, new.metrics_port) == (old.grpc_port, old.metrics_port)
    assert stack.healthy(live_stack.addr("tally"))
    recorded = stack.StackState.load(Path(live_stack.home))
    assert recorded is not None and recorded.services["tally"].pid == new.pid
