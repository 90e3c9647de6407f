"""A service stops within seconds when its broker is gone (killed, as in a hostile trial):
the consumer's poll, its offset commit and its leaving the group, and the producer's flush
of what it had not sent, all wait for a broker that is not coming back. They are bounded at
stop: nothing is lost (an unacknowledged outbox row stays in the outbox, an uncommitted batch
is read again at the next start). Took 15 s (the producer's flush) and for ever (a poll made
while the group was joining) before."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from sigverify_cli import stack
from sigverify_common import kafka
from sigverify_common.topics import SIGNATURE_VERIFIED

pytestmark = pytest.mark.integration

#: A hang detector, not a benchmark: each took 15 s or more before.
BOUND = 10.0


async def _nothing(batch: Sequence[kafka.Delivered[object]],
                   dead: Sequence[kafka.DeadLetter]) -> None:
    return None


async def test_consumer_and_producer_stop_within_seconds_when_the_broker_is_killed(
        tmp_path: Path) -> None:
    bootstrap, pid = await asyncio.to_thread(stack.start_broker, tmp_path)
    try:
        await kafka.ensure_topics(bootstrap, 2)
        stop = asyncio.Event()
        consumer = kafka.BatchConsumer(bootstrap=bootstrap, topic=SIGNATURE_VERIFIED,
                                       group="broker-gone", handler=_nothing)
        consuming = asyncio.create_task(consumer.run(stop))
        async with kafka.open_producer(bootstrap) as producer:
            await producer.partitions_for(SIGNATURE_VERIFIED.name)  # metadata cached
            await asyncio.sleep(1.0)  # the group is joining
            await asyncio.to_thread(stack.kill_pid, pid)
            await asyncio.sleep(2.0)
            # Sent after the broker died: pending until request_timeout_ms (15 s).
            sent = [await producer.send(SIGNATURE_VERIFIED.name, key=b"k%d" % i, value=b"v")
                    for i in range(10)]
            stop.set()
            began = time.monotonic()
            await asyncio.wait({consuming}, timeout=BOUND + 20)
            consumer_took = time.monotonic() - began
            assert consuming.done(), "the consumer did not stop"
            began = time.monotonic()
        producer_took = time.monotonic() - began
        assert consumer_took < BOUND, consumer_took
        assert producer_took < BOUND, producer_took
        # Not acknowledged: an outbox would have kept these rows.
        assert not any(f.done() and not f.cancelled() and f.exception() is None for f in sent)
    finally:
        await asyncio.to_thread(stack.kill_pid, pid)
