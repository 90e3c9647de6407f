"""The event loop's stall watchdog (``sigverify_common.service.LoopWatchdog``): a blocked loop
is logged once with where it is and for how long, again when it runs, and counted."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Iterator

import pytest

from sigverify_common import metrics
from sigverify_common.config import ServiceConfig
from sigverify_common.errors import ConfigError
from sigverify_common.service import LoopWatchdog

THRESHOLD = 0.4
BLOCK = 1.2
CANARY = "Zebulon Quartermaine, 1 Elm St, 1957-03-04"

BASE = {"DATABASE_URL": "postgresql://x/y", "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
        "GRPC_PORT": "1", "METRICS_PORT": "2"}


@pytest.fixture
def watchdog_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="sigverify_common.service")
    yield caplog


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sigverify_common.service"]


def _stalls() -> tuple[float, float]:
    """(count, sum) of sigverify_loop_stall_seconds."""
    samples = {s.name: s.value for m in metrics.LOOP_STALLS.collect() for s in m.samples}
    return samples["sigverify_loop_stall_seconds_count"], samples["sigverify_loop_stall_seconds_sum"]


def _blocked_gauge() -> float:
    return next(s.value for m in metrics.LOOP_BLOCKED.collect() for s in m.samples)


def _hold_the_loop(seconds: float, seen: list[float]) -> None:
    """A long synchronous computation on the loop's thread, with voter data in a local."""
    voter = CANARY
    time.sleep(seconds - 0.2)
    seen.append(_blocked_gauge())  # what /metrics would say now, from the loop's own thread
    time.sleep(0.2)
    assert voter


def _block(seconds: float) -> None:
    time.sleep(seconds)


def _seconds(message: str, pattern: str) -> float:
    match = re.search(pattern, message)
    assert match, message
    return float(match.group(1))


async def test_a_blocked_loop_is_logged_once_with_where_and_how_long_and_once_when_it_runs(
        watchdog_log: pytest.LogCaptureFixture) -> None:
    count, total = _stalls()
    seen: list[float] = []
    with LoopWatchdog(asyncio.get_running_loop(), THRESHOLD, interval=0.05):
        await asyncio.sleep(0.3)
        _hold_the_loop(BLOCK, seen)
        await asyncio.sleep(0.4)
    lines = _lines(watchdog_log)
    assert [r.levelno for r in lines] == [logging.WARNING, logging.WARNING], [
        r.getMessage() for r in lines]
    blocked, recovered = (r.getMessage() for r in lines)
    # The warning: how long so far, the threshold, and the function the loop's thread is in,
    # by module, name and line.
    assert THRESHOLD <= _seconds(blocked, r"event loop blocked for ([\d.]+)s") < BLOCK, blocked
    assert "LOOP_STALL_SECONDS=0.4s" in blocked
    assert re.search(r"in tests\.unit\.test_loop_watchdog:_hold_the_loop line \d+", blocked), blocked
    # The recovery line: the stall's whole length.
    assert BLOCK <= _seconds(recovered, r"running again after ([\d.]+)s blocked") < BLOCK + 1.0, \
        recovered
    # Never a frame's variables.
    assert all(CANARY not in r.getMessage() for r in lines)
    # Counted: one stall of its whole length; the gauge showed it while it lasted.
    after_count, after_total = _stalls()
    assert after_count == count + 1
    assert BLOCK <= after_total - total < BLOCK + 1.0
    assert seen and seen[0] > THRESHOLD
    assert _blocked_gauge() == 0


async def test_a_stall_that_ends_as_the_service_stops_is_still_reported(
        watchdog_log: pytest.LogCaptureFixture) -> None:
    count, _ = _stalls()
    with LoopWatchdog(asyncio.get_running_loop(), THRESHOLD, interval=0.05):
        await asyncio.sleep(0.1)
        _hold_the_loop(BLOCK, [])
    messages = [r.getMessage() for r in _lines(watchdog_log)]
    assert len(messages) == 2, messages
    assert "_hold_the_loop" in messages[0]
    assert BLOCK <= _seconds(messages[1], r"running again after ([\d.]+)s blocked") < BLOCK + 1.0
    assert _stalls()[0] == count + 1


async def test_a_loop_that_keeps_running_logs_nothing(
        watchdog_log: pytest.LogCaptureFixture) -> None:
    count, _ = _stalls()
    with LoopWatchdog(asyncio.get_running_loop(), THRESHOLD, interval=0.05):
        for _ in range(8):  # busy, but never for as long as the threshold
            _block(0.15)
            await asyncio.sleep(0.05)
    assert [r.getMessage() for r in _lines(watchdog_log)] == []
    assert _stalls()[0] == count


async def test_stop_ends_the_thread_and_the_heartbeat(
        watchdog_log: pytest.LogCaptureFixture) -> None:
    dog = LoopWatchdog(asyncio.get_running_loop(), THRESHOLD, interval=0.05)
    dog.start()
    await asyncio.sleep(0.1)
    assert any(t.name == "loop-watchdog" for t in threading.enumerate())
    dog.stop()
    assert not any(t.name == "loop-watchdog" for t in threading.enumerate())
    _block(THRESHOLD + 0.2)  # nothing is watching any more
    await asyncio.sleep(0.1)
    assert [r.getMessage() for r in _lines(watchdog_log)] == []


async def test_a_threshold_of_0_turns_it_off() -> None:
    dog = LoopWatchdog(asyncio.get_running_loop(), 0.0)
    dog.start()
    assert not any(t.name == "loop-watchdog" for t in threading.enumerate())
    dog.stop()


def test_loop_stall_seconds_defaults_to_5_and_must_be_a_number_not_below_0() -> None:
    assert ServiceConfig.from_env(BASE).loop_stall_seconds == 5.0
    assert ServiceConfig.from_env({**BASE, "LOOP_STALL_SECONDS": "0"}).loop_stall_seconds == 0.0
    assert ServiceConfig.from_env({**BASE, "LOOP_STALL_SECONDS": "2.5"}).loop_stall_seconds == 2.5
    with pytest.raises(ConfigError, match="LOOP_STALL_SECONDS must be 0 or more, got -1"):
        ServiceConfig.from_env({**BASE, "LOOP_STALL_SECONDS": "-1"})
    with pytest.raises(ConfigError, match="LOOP_STALL_SECONDS must be a number, got 'soon'"):
        ServiceConfig.from_env({**BASE, "LOOP_STALL_SECONDS": "soon"})
