"""While the broker is gone: aiokafka's reconnect errors are held back to one of each kind
a minute (``logs.RepeatFilter``), and the broker's state is said once, reminded every
minute and said again when it is back (``kafka.BrokerWatch``), with
``sigverify_broker_reachable``."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from sigverify_common import kafka, metrics
from sigverify_common.logs import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable() -> float:
    return next(s.value for m in metrics.BROKER_REACHABLE.collect() for s in m.samples)


@pytest.fixture
def filtered(caplog: pytest.LogCaptureFixture):  # type: ignore[no-untyped-def]
    clock = Clock()
    filt = RepeatFilter(clock=clock)
    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(filt)
    yield caplog, clock
    caplog.handler.removeFilter(filt)


def test_repeated_aiokafka_errors_pass_once_a_minute_with_a_count(filtered) -> None:  # type: ignore[no-untyped-def]
    caplog, clock = filtered
    node = logging.getLogger("aiokafka")
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    for _ in range(400):  # ~10 s of a broker gone, as the services logged it
        node.error("Unable connect to node with id %s: %s", 111, "[Errno 111] refused")
        coordinator.error("Group Coordinator Request failed: %s", "NodeNotReadyError")
        clock.now += 0.025
    assert [r.getMessage() for r in caplog.records] == [
        "Unable connect to node with id 111: [Errno 111] refused",
        "Group Coordinator Request failed: NodeNotReadyError",
    ]
    # A kind of error not seen before is not held back, nor are other loggers' records.
    coordinator.warning("Marking the coordinator dead (node %s)for group %s.", 111, "g")
    logging.getLogger("sigverify_common.kafka").warning("outbox publish failed (%s)", "X")
    logging.getLogger("sigverify_common.kafka").warning("outbox publish failed (%s)", "X")
    assert len(caplog.records) == 5
    clock.now += 60
    node.error("Unable connect to node with id %s: %s", 111, "[Errno 111] refused")
    last = caplog.records[-1].getMessage()
    assert last.startswith("Unable connect to node with id 111: [Errno 111] refused [399 more")
    assert "in the last 70s]" in last
    # The count starts again.
    clock.now += 61
    node.error("Unable connect to node with id %s: %s", 111, "[Errno 111] refused")
    assert caplog.records[-1].getMessage() == (
        "Unable connect to node with id 111: [Errno 111] refused")


def test_the_watch_says_once_reminds_each_minute_and_says_when_back(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sigverify_common.kafka")
    watch = kafka.BrokerWatch("127.0.0.1:9", "dedupe")
    said = lambda: [r.getMessage() for r in caplog.records  # noqa: E731
                    if r.name == "sigverify_common.kafka"]
    watch.observe(True, now=0.0)
    assert said() == [] and _reachable() == 1
    t = 10.0
    while t < 10.0 + 150:  # two and a half minutes down, checked every 2 s
        watch.observe(False, now=t)
        t += 2.0
    lines = said()
    assert len(lines) == 3, lines
    assert lines[0].startswith("dedupe: broker at 127.0.0.1:9 unreachable since ")
    assert lines[1].startswith("dedupe: broker at 127.0.0.1:9 still unreachable, for 1m00s")
    assert lines[2].startswith("dedupe: broker at 127.0.0.1:9 still unreachable, for 2m00s")
    assert _reachable() == 0
    assert kafka.closing_seconds() == kafka.CLOSING_SECONDS  # not this process's watch
    watch.observe(True, now=t)
    assert said()[-1] == "dedupe: broker at 127.0.0.1:9 reachable again after 2m30s unreachable"
    assert _reachable() == 1


async def test_the_watch_finds_a_broker_that_is_not_there_and_stopping_waits_less() -> None:
    async with kafka.watch_broker(f"127.0.0.1:{_closed_port()}", "tally") as watch:
        assert kafka.current() is watch
        for _ in range(50):
            if watch.reachable is not None:
                break
            await asyncio.sleep(0.1)
        assert watch.reachable is False
        assert _reachable() == 0
        assert kafka.closing_seconds() == kafka.CLOSING_SECONDS_UNREACHABLE
    assert kafka.current() is None
