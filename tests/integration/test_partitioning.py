"""Every record the services published sits on the partition Kafka's default partitioner
gives its key (the outbox computes it for a round at once; consumers' per-key order rests
on it). Read back from the real broker."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from sigverify_cli import stack
from sigverify_common.topics import ALL_TOPICS

pytestmark = pytest.mark.integration

#: The petition the ``loaded_roll`` fixture files.
FILING = "model-training"


async def test_published_records_are_on_their_keys_partitions(live_stack: stack.StackState,
                                                               loaded_roll: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=live_stack.kafka_bootstrap_servers,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer.topics()  # the cluster's metadata, every topic's partitions
        every = {t.name: sorted(consumer.partitions_for_topic(t.name) or []) for t in ALL_TOPICS}
        checked = 0
        for topic in ALL_TOPICS:
            ids = every[topic.name]
            assert ids, topic.name
            tps = [TopicPartition(topic.name, p) for p in ids]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            seen = {tp: 0 for tp in tps}
            for _ in range(60):
                positions = [await consumer.position(tp) for tp in tps]
                if all(at >= ends[tp] for at, tp in zip(positions, tps, strict=True)):
                    break
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    for rec in records:
                        # The services' records of the session's filing (fault tests write
                        # records of their own to chosen partitions).
                        try:
                            msg = topic.decode(rec.value)
                        except ValueError:
                            continue
                        if rec.key is not None and msg.petition_id == FILING:
                            assert rec.partition == DefaultPartitioner()(rec.key, ids, ids), (
                                topic.name, rec.key)
                            seen[tp] += 1
            checked += sum(seen.values())
        assert checked > 0
    finally:
        await asyncio.wait_for(consumer.stop(), 30)
