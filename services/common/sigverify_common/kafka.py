"""Kafka plumbing: topics, the producer, at-least-once consumers and the outbox publisher.

Delivery is at-least-once everywhere. A consumer applies a polled batch in one Postgres
transaction (idempotent through unique keys), and only after that commit does it commit
``{tp: last.offset + 1}`` to Kafka. What a service must publish is written to its
``<schema>.outbox`` table in the same transaction as the state that caused it; the
``OutboxPublisher`` sends those rows and deletes them once the broker has acknowledged.
No Kafka transactions or idempotent producer are used (tansu supports neither).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from google.protobuf.message import Message

from sigverify_common import metrics
from sigverify_common.db import Conn
from sigverify_common.errors import SigVerifyError
from sigverify_common.topics import ALL_TOPICS, Topic

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)


def is_retriable(exc: BaseException) -> bool:
    """Errors after which the same batch may succeed later (database or broker trouble)."""
    if isinstance(exc, SigVerifyError):
        return exc.retriable
    return isinstance(
        exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError | OSError | asyncio.TimeoutError
        | asyncpg.exceptions.SerializationError | asyncpg.exceptions.DeadlockDetectedError
    )


async def ensure_topics(bootstrap: str, partitions: int, replication: int = 1,
                        timeout: float = 60.0) -> None:
    """Create the pipeline's topics if they do not exist (idempotent, retried until the broker answers)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(t.name, num_partitions=partitions, replication_factor=replication)
                for t in ALL_TOPICS
                if t.name not in existing
            ]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(missing)
            return
        except KafkaError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("broker not ready for topic creation (%s); retrying", exc.__class__.__name__)
            await asyncio.sleep(1.0)
        finally:
            await admin.close()


async def topic_is_empty(bootstrap: str, topic: str) -> bool:
    """True when no record was ever written to ``topic`` (a new broker, or one that forgot)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return all(offset == 0 for offset in ends.values())
    finally:
        await consumer.stop()


@asynccontextmanager
async def open_producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        max_batch_size=256 * 1024,
        request_timeout_ms=15_000,
    )
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


@dataclass(frozen=True)
class Delivered(Generic[M]):
    """One decoded record, with where it came from (for dead letters and logs)."""

    message: M
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    reason: str
    payload: bytes


Handler = Callable[[Sequence[Delivered[M]], Sequence[DeadLetter]], Awaitable[None]]


class BatchConsumer(Generic[M]):
    """Polls a topic in batches, hands each batch to ``handler``, commits offsets afterwards.

    ``handler`` must apply the whole batch in one database transaction (recording dead
    letters too) and be idempotent: a batch is redelivered when the service dies between
    the database commit and the Kafka commit. When the handler raises, the batch is not
    committed; the consumer seeks back and retries after a pause.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: Topic[M],
        group: str,
        handler: Handler[M],
        max_records: int = 500,
        poll_timeout_ms: int = 200,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._group = group
        self._handler = handler
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._consumer: AIOKafkaConsumer | None = None
        self.last_batch_at: float = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            self._topic.name,
            bootstrap_servers=self._bootstrap,
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=300_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._consumer = consumer
        await consumer.start()
        log.info("consuming %s as group %s", self._topic.name, self._group)
        try:
            while not stop.is_set():
                batch = await consumer.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_records
                )
                if batch:
                    await self._apply(consumer, batch, stop)
        finally:
            self._consumer = None
            await consumer.stop()

    async def _apply(
        self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[Any]], stop: asyncio.Event
    ) -> None:
        delivered: list[Delivered[M]] = []
        dead: list[DeadLetter] = []
        for tp, records in batch.items():
            for rec in records:
                try:
                    msg = self._topic.decode(rec.value)
                except ValueError as exc:
                    dead.append(DeadLetter(tp.topic, tp.partition, rec.offset, str(exc), rec.value or b""))
                    continue
                delivered.append(Delivered(msg, tp.topic, tp.partition, rec.offset))
        attempt = 0
        while True:
            try:
                await self._handler(delivered, dead)
                break
            except Exception as exc:
                if not is_retriable(exc):
                    raise
                attempt += 1
                metrics.HANDLER_RETRIES.labels(self._group).inc()
                log.warning(
                    "applying %d records failed (%s), attempt %d; retrying",
                    len(delivered), exc.__class__.__name__, attempt,
                )
                if stop.is_set():
                    # Leave the batch uncommitted: it is redelivered after restart.
                    for tp, records in batch.items():
                        consumer.seek(tp, records[0].offset)
                    return
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        await consumer.commit(offsets)
        metrics.CONSUMED.labels(self._group, self._topic.name).inc(len(delivered) + len(dead))
        if dead:
            metrics.DEAD_LETTERS.labels(self._group).inc(len(dead))
        self.last_batch_at = asyncio.get_running_loop().time()
        await self._observe_lag(consumer, offsets)

    async def _observe_lag(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        for tp, pos in offsets.items():
            end = consumer.highwater(tp)
            if end is not None:
                metrics.CONSUMER_LAG.labels(self._group, tp.topic, str(tp.partition)).set(max(0, end - pos))


async def write_dead_letters(conn: Conn, schema: str, dead: Sequence[DeadLetter]) -> None:
    if not dead:
        return
    await conn.executemany(
        f'INSERT INTO "{schema}".dead_letters (topic, partition, "offset", reason, payload) '
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        [(d.topic, d.partition, d.offset, d.reason, d.payload) for d in dead],
    )
    for d in dead:
        log.error("dead letter %s[%d]@%d: %s", d.topic, d.partition, d.offset, d.reason)


async def enqueue(
    conn: Conn, schema: str, rows: Sequence[tuple[str, bytes, bytes]]
) -> None:
    """Write (topic, key, value) rows to the schema's outbox, inside the caller's transaction."""
    if rows:
        await conn.copy_records_to_table(
            "outbox", schema_name=schema, columns=("topic", "key", "value"), records=rows
        )


async def republish(
    pool: asyncpg.Pool, schema: str, page: Callable[[int], Awaitable[list[asyncpg.Record]]],
    cursor: str, encode: Callable[[Any], tuple[str, bytes, bytes]],
) -> int:
    """Enqueue ``encode(row)`` for every row ``page(after)`` yields, page by page.

    ``page(after)`` returns the next rows whose ``cursor`` column is above ``after``, in
    that column's order. Used to redrive unfinished work from Postgres.
    """
    total, after = 0, 0
    while rows := await page(after):
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, schema, [encode(r) for r in rows])
        total += len(rows)
        after = rows[-1][cursor]
    return total


class OutboxPublisher:
    """Sends a schema's outbox rows to Kafka in id order and deletes them once acknowledged.

    Rows are locked with ``FOR UPDATE SKIP LOCKED`` while they are sent, so replicas of a
    service share the outbox without sending a row twice in the normal case; after a crash
    between send and delete a row is sent again, which consumers tolerate.
    """

    def __init__(self, pool: asyncpg.Pool, producer: AIOKafkaProducer, schema: str, batch: int = 2000):
        self._pool = pool
        self._producer = producer
        self._schema = schema
        self._batch = batch
        self.wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sent = await self.publish_once()
            except (TimeoutError, asyncpg.PostgresError, OSError, KafkaError) as exc:
                log.warning("outbox publish failed (%s); retrying", exc.__class__.__name__)
                sent = 0
                await asyncio.sleep(1.0)
            if sent == 0:
                self.wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=0.25)
        # Drain what is committed before stopping, so a graceful stop leaves no backlog.
        with contextlib.suppress(Exception):
            while await self.publish_once():
                pass

    async def publish_once(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f'SELECT id, topic, key, value FROM "{self._schema}".outbox '
                "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch,
            )
            if not rows:
                return 0
            futures = [
                await self._producer.send(r["topic"], key=r["key"], value=r["value"]) for r in rows
            ]
            await asyncio.wait_for(asyncio.gather(*futures), timeout=30)
            await conn.execute(
                f'DELETE FROM "{self._schema}".outbox WHERE id = ANY($1::bigint[])',
                [r["id"] for r in rows],
            )
        metrics.PUBLISHED.labels(self._schema).inc(len(rows))
        return len(rows)
