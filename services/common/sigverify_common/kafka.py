"""Kafka plumbing: topics, the producer, at-least-once consumers and the outbox publisher.

Delivery is at-least-once everywhere. A consumer applies a polled batch in one Postgres
transaction (idempotent through unique keys), and only after that commit does it commit
``{tp: last.offset + 1}`` to Kafka. What a service must publish is written to its
``<schema>.outbox`` table in the same transaction as the state that caused it; the
``OutboxPublisher`` sends those rows and deletes them once the broker has acknowledged.
No Kafka transactions or idempotent producer are used (tansu supports neither).

A consumer whose handler is ``Staged`` may prepare (read and compute) the next batch while
the one before is written and committed (``BatchConsumer(ahead=True)``); writes and offset
commits still happen one batch at a time, in the order polled.

Nothing one record does stops the others:

- ``BatchConsumer`` sets aside (dead letters, with the reason and a ``kind``) a record that
  cannot be decoded or fails its topic's checks (``Topic.problem``) before the handler sees
  it. When the handler fails for a batch with a non-retriable error, the batch is applied
  again in halves, down to single records, and only a record that fails on its own is set
  aside (kind ``poison``, the reason being the exception's class: never its text, which may
  quote data); the rest is applied and the consumer goes on. Retriable errors (the database
  or the broker down or restarting: ``errors.is_transient``) are retried with back-off.
  A handler may also return dead letters of its own (kind ``rejected``: a record about
  something that does not exist), written in its transaction.
- A rebalance waits for the batch being applied, so its offsets are committed before the
  partitions move (a batch stuck retrying gives up and is left to the next owner); a commit
  that still fails because the group moved on only means the batch is redelivered, which
  changes nothing.
- ``OutboxPublisher`` deletes every row the broker acknowledged even when another row of
  the same round failed; a row that can never be sent (too large, or refused for good) is
  moved to ``<schema>.outbox_quarantine`` with the reason and counted; retriable failures
  back off, and the time spent failing is exported and reported to health.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
)
from google.protobuf.message import Message

from sigverify_common import metrics
from sigverify_common.db import Conn
from sigverify_common.errors import is_transient
from sigverify_common.partitions import partitions
from sigverify_common.topics import ALL_TOPICS, Topic

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)
T = TypeVar("T")


def is_retriable(exc: BaseException) -> bool:
    """Errors after which the same batch may succeed later (database or broker trouble)."""
    return is_transient(exc)


def frames(exc: BaseException) -> str:
    """Where ``exc`` was raised: the traceback's frames without the exception's message (a
    message may quote the data being processed; frames show only code)."""
    return "".join(traceback.format_tb(exc.__traceback__)).rstrip()


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


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def topic_is_empty(bootstrap: str, topic: str) -> bool:
    """True when no record was ever written to ``topic`` (a new broker, or one that forgot)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        await consumer.start()
        ends = await consumer.end_offsets(await _partitions(consumer, topic))
        return all(offset == 0 for offset in ends.values())
    finally:
        await consumer.stop()


async def caught_up(bootstrap: str, group: str, topic: str, wait_ms: int = 1500) -> bool:
    """True when consumer group ``group`` has committed every record of ``topic``: reading
    each partition from the group's committed offset (its start when the group never
    committed there) finds nothing. Reads records rather than comparing end offsets, which
    tansu under-reports (the last batch's base offset + 1). Does not join the group."""
    members = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                               enable_auto_commit=False)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                              fetch_max_wait_ms=200, max_partition_fetch_bytes=64 * 1024)
    try:
        # Stopped also when starting failed (the broker is gone), or asyncio complains of
        # an unclosed consumer at each reconciliation pass.
        await members.start()
        await reader.start()
        tps = await _partitions(members, topic)
        if not tps:
            return True
        committed = {tp: await members.committed(tp) for tp in tps}
        reader.assign(tps)
        for tp, offset in committed.items():
            if offset is None:
                await reader.seek_to_beginning(tp)
            else:
                reader.seek(tp, offset)
        end = asyncio.get_running_loop().time() + wait_ms / 1000
        while (left := end - asyncio.get_running_loop().time()) > 0:
            got = await reader.getmany(timeout_ms=int(left * 1000), max_records=1)
            if any(got.values()):
                return False
        return True
    finally:
        await reader.stop()
        await members.stop()


#: How long stopping waits for what needs the broker (an outbox round in flight, the last
#: drain, the producer's flush, the consumer's leaving its group): the broker reachable, or
#: known unreachable (``BrokerWatch``). Nothing is lost by not waiting: PostgreSQL is the
#: record of truth, an outbox row is deleted only once acknowledged (the next start sends
#: what is left), and a batch is committed to Kafka only after its transaction (the next
#: start reads it again).
CLOSING_SECONDS = 5.0
CLOSING_SECONDS_UNREACHABLE = 1.0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class BrokerWatch:
    """Whether the broker answers, and the one place that says so in the log.

    ``run`` asks for the cluster's metadata every ``interval`` seconds (within ``timeout``).
    When the broker stops answering it logs ONE warning (the service, the bootstrap address,
    since when), then a reminder every ``remind`` seconds with how long it has lasted, and
    one line when it answers again; aiokafka's own reconnect errors meanwhile are held back
    by ``logs.RepeatFilter``. ``sigverify_broker_reachable`` is 1 or 0 (0 until the first
    check). The watch a service runs is ``current()``: shutdown waits less for a broker
    known to be unreachable (``closing_seconds``).
    """

    def __init__(self, bootstrap: str, service: str, interval: float = 2.0,
                 timeout: float = 3.0, remind: float = 60.0) -> None:
        self.bootstrap = bootstrap
        self.service = service
        self.interval = interval
        self.timeout = timeout
        self.remind = remind
        #: None until the first check.
        self.reachable: bool | None = None
        self.down_since = 0.0     # time.monotonic() of the first failed check of the outage
        self._down_wall = ""      # the same as a wall-clock time, for the log
        self._reminded = 0.0
        metrics.BROKER_REACHABLE.set(0)

    def unreachable_seconds(self, now: float | None = None) -> float:
        if self.reachable is not False:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self.down_since)

    def observe(self, ok: bool, now: float | None = None) -> None:
        """Take one check's outcome: log a change of state, or a reminder when it is due."""
        now = time.monotonic() if now is None else now
        metrics.BROKER_REACHABLE.set(1 if ok else 0)
        if ok:
            if self.reachable is False:
                log.warning("%s: broker at %s reachable again after %s unreachable",
                            self.service, self.bootstrap, _duration(now - self.down_since))
            self.reachable = True
            return
        if self.reachable is not False:
            self.reachable = False
            self.down_since = self._reminded = now
            self._down_wall = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %z")
            log.warning("%s: broker at %s unreachable since %s; its clients keep retrying "
                        "(their connection errors are held back to one a minute each), a "
                        "reminder every %.0fs", self.service, self.bootstrap,
                        self._down_wall, self.remind)
        elif now - self._reminded >= self.remind:
            self._reminded = now
            log.warning("%s: broker at %s still unreachable, for %s (since %s)", self.service,
                        self.bootstrap, _duration(now - self.down_since), self._down_wall)

    async def check(self, client: AIOKafkaClient) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                await client.fetch_all_metadata()
            return True
        except Exception:  # noqa: BLE001 - any failure to reach the broker is unreachable
            return False

    async def run(self, stop: asyncio.Event) -> None:
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        try:
            with contextlib.suppress(Exception):
                await client.bootstrap()
            while not stop.is_set():
                self.observe(await self.check(client))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
        finally:
            await client.close()


_WATCH: BrokerWatch | None = None


def current() -> BrokerWatch | None:
    """The broker watch this process runs (``watch_broker``), if any."""
    return _WATCH


def closing_seconds() -> float:
    """How long stopping waits for what needs the broker (see ``CLOSING_SECONDS``)."""
    watch = _WATCH
    if watch is not None and watch.reachable is False:
        return CLOSING_SECONDS_UNREACHABLE
    return CLOSING_SECONDS


@asynccontextmanager
async def watch_broker(bootstrap: str, service: str) -> AsyncIterator[BrokerWatch]:
    """Run a ``BrokerWatch`` as the process's ``current()`` for the block's duration."""
    global _WATCH
    watch = BrokerWatch(bootstrap, service)
    stop = asyncio.Event()
    task = asyncio.create_task(watch.run(stop), name="broker-watch")
    previous, _WATCH = _WATCH, watch
    try:
        yield watch
    finally:
        _WATCH = previous
        stop.set()
        await bounded(task, CLOSING_SECONDS, "the broker watch")


async def bounded(aw: Awaitable[Any], seconds: float, what: str) -> bool:
    """Await ``aw`` (closing something that talks to the broker) for at most ``seconds``;
    then cancel it and say so. True when it finished in time. Its errors are logged, not
    raised: it is part of stopping. A cancellation from inside it is taken as its end
    (aiokafka's consumer lets one escape from ``stop`` when a fetch was backing off)."""
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        log.warning("stopping: %s did not finish within %.0fs (the broker is %s); going on "
                    "without it", what, seconds,
                    "unreachable" if closing_seconds() < CLOSING_SECONDS
                    else "slow or unreachable")
        return False
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("stopping: %s failed (%s)", what, exc.__class__.__name__)
    return True


class GaveUp(Exception):
    """The service stops and what needed the broker did not finish within ``closing_seconds``."""


async def until_stopped(aw: Awaitable[T], stop: asyncio.Event) -> T:
    """``await aw``; once ``stop`` is set, for at most ``closing_seconds()`` more. Then it is
    cancelled (a transaction inside rolls back) and ``GaveUp`` is raised."""
    task = asyncio.ensure_future(aw)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.wait({task}, timeout=closing_seconds())
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        stopping.cancel()
    if not task.done():
        task.cancel()
        # Let it unwind (roll back) before going on, within bounds too.
        await asyncio.wait({task}, timeout=CLOSING_SECONDS_UNREACHABLE)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise GaveUp
    return task.result()


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
        # stop() flushes what is pending, each batch waiting up to request_timeout_ms (15 s)
        # for a broker that is gone; what is not acknowledged stays in the outbox.
        if not await bounded(producer.stop(), closing_seconds(), "the producer's flush"):
            await bounded(producer.client.close(), CLOSING_SECONDS_UNREACHABLE,
                          "the producer's connections")


#: Kinds of dead letter (the ``reason`` label of ``sigverify_dead_letters_total``).
UNDECODABLE, INVALID, POISON, REJECTED = "undecodable", "invalid", "poison", "rejected"


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    reason: str
    payload: bytes
    kind: str = UNDECODABLE


@dataclass(frozen=True)
class Delivered(Generic[M]):
    """One decoded record, with where it came from (for dead letters and logs)."""

    message: M
    topic: str
    partition: int
    offset: int
    #: The record's value as received (kept in a dead letter when the record is set aside).
    value: bytes = b""

    def reject(self, reason: str, kind: str = REJECTED) -> DeadLetter:
        """This record as a dead letter (``reason`` must name ids and fields, never data)."""
        return DeadLetter(self.topic, self.partition, self.offset, reason, self.value, kind)


#: Applies a batch and the dead letters in one transaction; may return dead letters of its
#: own (records it refused), which it has written in that transaction.
Handler = Callable[[Sequence[Delivered[M]], Sequence[DeadLetter]],
                   Awaitable[Sequence[DeadLetter] | None]]


@runtime_checkable
class Staged(Protocol[M]):
    """A handler in two steps, so that a consumer can prepare the next batch while the one
    before is written: ``prepare`` reads and computes and writes nothing; ``apply`` writes
    what it prepared in one transaction (and must hold, inside it, whatever ``prepare``
    assumed that may have changed meanwhile, raising a retriable error if it has: the batch
    is then prepared again). ``handler(batch, dead)`` must equal
    ``apply(await prepare(batch, dead))``."""

    async def prepare(self, batch: Sequence[Delivered[M]], dead: Sequence[DeadLetter]
                      ) -> Any: ...

    async def apply(self, prepared: Any) -> Sequence[DeadLetter] | None: ...

    async def __call__(self, batch: Sequence[Delivered[M]], dead: Sequence[DeadLetter]
                       ) -> Sequence[DeadLetter] | None: ...


class _Abandoned(Exception):
    """The batch is left uncommitted: the service stops, or its partitions are moving."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Lets the batch being applied finish and commit before the partitions move."""

    def __init__(self, owner: BatchConsumer[Any]) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        owner = self._owner
        owner.generation += 1  # a batch polled before this is not applied (see _pipeline)
        owner.revoking.set()  # a batch stuck retrying gives up and is left to the next owner
        try:
            async with owner.applying:
                pass
        finally:
            owner.revoking.clear()
        log.info("group %s: %d partition(s) revoked", owner.group, len(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        metrics.REBALANCES.labels(self._owner.group).inc()
        log.info("group %s: assigned partitions %s", self._owner.group,
                 ",".join(str(tp.partition) for tp in sorted(assigned)) or "(none)")


@dataclass(frozen=True)
class _Ahead(Generic[M]):
    """A polled batch whose preparation has started."""

    batch: dict[TopicPartition, list[Any]]
    delivered: list[Delivered[M]]
    dead: list[DeadLetter]
    generation: int
    prepared: asyncio.Task[Any]


def _forget(task: asyncio.Task[Any]) -> None:
    """Cancel a preparation whose batch will not be applied (its error is not news)."""
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _seek_back(consumer: AIOKafkaConsumer, dropped: _Ahead[Any], before: _Ahead[Any]) -> None:
    """Seek the partitions of a batch dropped behind an abandoned one back to its first
    records. A partition the abandoned batch also had was sought further back already,
    unless the partitions were reassigned in between (the batches' generations differ):
    then that seek was lost with the old assignment, and the dropped batch, polled after the
    reassignment, starts where the partition now resumes."""
    keep = set(before.batch) if before.generation == dropped.generation else set()
    for tp, records in dropped.batch.items():
        if tp not in keep:
            with contextlib.suppress(KafkaError, AssertionError):
                consumer.seek(tp, records[0].offset)


class BatchConsumer(Generic[M]):
    """Polls a topic in batches, hands each batch to ``handler``, commits offsets afterwards.

    ``handler`` must apply the whole batch in one database transaction (recording dead
    letters too) and be idempotent: a batch is redelivered when the service dies between
    the database commit and the Kafka commit, or when a rebalance makes the commit fail.
    See the module's docstring for what happens when the handler raises.

    With ``ahead`` and a ``Staged`` handler, the next batch is polled and prepared while
    the one before is applied and committed (one batch ahead, never more): batches are
    still applied and committed one at a time, in the order polled. A batch prepared ahead
    is dropped, never applied, when the one before it was abandoned (its partitions are
    sought back to it) or when the partitions were revoked after it was polled (their next
    owner reads it from the committed offsets).
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
        ahead: bool = False,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self.group = group
        self._handler = handler
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._staged: Staged[M] | None = (handler if ahead and isinstance(handler, Staged)
                                          else None)
        self._consumer: AIOKafkaConsumer | None = None
        self.last_batch_at: float = 0.0
        #: Held while a batch is applied and committed (a rebalance waits for it).
        self.applying = asyncio.Lock()
        #: Set while partitions are being revoked.
        self.revoking = asyncio.Event()
        #: Counts revocations: a batch polled in an earlier generation is not applied.
        self.generation = 0

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=300_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._consumer = consumer
        await consumer.start()
        consumer.subscribe([self._topic.name], listener=_Rebalance(self))
        log.info("consuming %s as group %s", self._topic.name, self.group)
        try:
            if self._staged is not None:
                await self._pipeline(consumer, self._staged, stop)
                return
            while not stop.is_set():
                batch = await self._poll(consumer, stop)
                if batch:
                    delivered, dead = self._split(batch)
                    await self._apply(consumer, batch, delivered, dead, stop)
        finally:
            self._consumer = None
            # Leaving the group asks the broker; when it is gone, aiokafka would wait for it.
            await bounded(consumer.stop(), closing_seconds(), f"group {self.group}'s consumer")

    async def _poll(self, consumer: AIOKafkaConsumer, stop: asyncio.Event
                    ) -> dict[TopicPartition, list[Any]]:
        """The next batch ({} when there is none, or the service stops). getmany's timeout
        does not bound a poll made while the group is (re)joining: it waits for an
        assignment, for ever while the broker is gone, so the poll is given up when
        ``stop`` is set (what it would have returned is read again after a restart)."""
        poll = asyncio.ensure_future(consumer.getmany(timeout_ms=self._poll_timeout_ms,
                                                      max_records=self._max_records))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({poll, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not poll.done():
                poll.cancel()
                with contextlib.suppress(asyncio.CancelledError, KafkaError):
                    await poll
        if poll.cancelled():
            return {}
        try:
            batch: dict[TopicPartition, list[Any]] = poll.result()
            return batch
        except KafkaError as exc:
            log.warning("group %s: polling failed (%s); retrying", self.group,
                        exc.__class__.__name__)
            await asyncio.sleep(1.0)
            return {}

    async def _pipeline(self, consumer: AIOKafkaConsumer, staged: Staged[M],
                        stop: asyncio.Event) -> None:
        """Poll and prepare batch n+1 while batch n is applied and committed."""
        applying: tuple[_Ahead[M], asyncio.Task[bool]] | None = None
        ahead: _Ahead[M] | None = None
        try:
            while not stop.is_set():
                batch = await self._poll(consumer, stop)
                if not batch:
                    if applying is not None and applying[1].done():
                        # An error of the last batch's apply stops the consumer now, not
                        # when the next record comes; an abandoned batch was sought back.
                        _, task = applying
                        applying = None
                        await task
                    continue
                delivered, dead = self._split(batch)
                ahead = _Ahead(batch, delivered, dead, self.generation,
                               asyncio.create_task(staged.prepare(delivered, dead)))
                await asyncio.wait({ahead.prepared})
                if applying is not None:
                    (before, task), applying = applying, None
                    if not await task:
                        # The batch before was abandoned: this one goes too.
                        _forget(ahead.prepared)
                        _seek_back(consumer, ahead, before)
                        ahead = None
                        continue
                if stop.is_set():
                    break  # prepared, not applied: read again after a restart
                polled, ahead = ahead, None
                applying = (polled, asyncio.create_task(self._apply(
                    consumer, polled.batch, polled.delivered, polled.dead, stop,
                    prepared=polled.prepared, generation=polled.generation)))
        except asyncio.CancelledError:
            # Cancelled (the service's other loops failed): the batch being applied is
            # cancelled too (its transaction rolls back; it is read again after a restart)
            # instead of being waited for, which a batch retrying against a database that
            # is down would make for ever.
            if applying is not None:
                applying[1].cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await applying[1]
                applying = None
            raise
        finally:
            if ahead is not None:  # stopping: left uncommitted, read again after a restart
                _forget(ahead.prepared)
            if applying is not None:
                await applying[1]

    def _split(self, batch: dict[TopicPartition, list[Any]]
               ) -> tuple[list[Delivered[M]], list[DeadLetter]]:
        delivered: list[Delivered[M]] = []
        dead: list[DeadLetter] = []
        for tp, records in batch.items():
            for rec in records:
                value = rec.value or b""
                try:
                    msg = self._topic.decode(rec.value)
                except ValueError as exc:
                    dead.append(DeadLetter(tp.topic, tp.partition, rec.offset, str(exc), value,
                                           UNDECODABLE))
                    continue
                fault = self._topic.problem(msg)
                if fault is not None:
                    dead.append(DeadLetter(tp.topic, tp.partition, rec.offset, fault, value,
                                           INVALID))
                    continue
                delivered.append(Delivered(msg, tp.topic, tp.partition, rec.offset, value))
        return delivered, dead

    async def _apply(
        self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[Any]],
        delivered: list[Delivered[M]], dead: list[DeadLetter], stop: asyncio.Event,
        prepared: asyncio.Task[Any] | None = None, generation: int | None = None,
    ) -> bool:
        """Apply and commit one batch; False when it was abandoned (sought back, uncommitted)."""
        async with self.applying:
            if generation is not None and generation != self.generation:
                # Polled before the partitions were revoked: their owner now reads it again
                # from the committed offsets.
                if prepared is not None:
                    _forget(prepared)
                return True
            try:
                written = await self._isolate(delivered, dead, stop, prepared)
            except _Abandoned:
                # Left uncommitted: redelivered after restart, or to the partitions' next owner.
                for tp, records in batch.items():
                    with contextlib.suppress(KafkaError, AssertionError):
                        consumer.seek(tp, records[0].offset)
                return False
            offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
            try:
                # Retried by aiokafka for as long as the broker is gone: bounded at stop.
                await until_stopped(consumer.commit(offsets), stop)
            except GaveUp:
                log.warning("group %s: stopping before %d record(s) could be committed to the "
                            "broker; applied, they will be redelivered at the next start, which "
                            "changes nothing", self.group, len(delivered) + len(dead))
            except KafkaError as exc:
                # CommitFailedError / IllegalStateError: the group rebalanced and the
                # partitions may belong to another member now. The effects are in Postgres
                # and idempotent: whoever owns the partitions redelivers the batch.
                metrics.COMMIT_FAILURES.labels(self.group).inc()
                log.warning("group %s: committing %d record(s) failed (%s); they will be "
                            "redelivered, which changes nothing", self.group,
                            len(delivered) + len(dead), exc.__class__.__name__)
        metrics.CONSUMED.labels(self.group, self._topic.name).inc(len(delivered) + len(dead))
        for d in written:
            metrics.DEAD_LETTERS.labels(self.group, d.kind).inc()
        self.last_batch_at = asyncio.get_running_loop().time()
        self._observe_lag(consumer, offsets)
        return True

    async def _isolate(self, delivered: Sequence[Delivered[M]], dead: Sequence[DeadLetter],
                       stop: asyncio.Event, prepared: asyncio.Task[Any] | None = None
                       ) -> list[DeadLetter]:
        """Apply ``delivered`` and ``dead``; when that fails for good, apply halves, down to
        single records, and set aside the records that fail alone. Returns every dead letter
        written. ``prepared``, the batch prepared ahead, is used by the first attempt only."""
        try:
            return await self._attempt(delivered, dead, stop, prepared)
        except _Abandoned:
            raise
        except Exception as exc:
            if not delivered:
                raise  # the dead letters themselves cannot be written: a bug, not a record
            if len(delivered) == 1:
                d = delivered[0]
                reason = f"the handler failed on this record alone: {exc.__class__.__name__}"
                log.error("group %s: setting aside %s[%d]@%d (%s); where:\n%s", self.group,
                          d.topic, d.partition, d.offset, exc.__class__.__name__, frames(exc))
                return await self._attempt([], [*dead, d.reject(reason, POISON)], stop)
            log.warning("group %s: applying %d record(s) failed (%s); applying them in halves "
                        "to set aside only the records that fail", self.group, len(delivered),
                        exc.__class__.__name__)
            mid = len(delivered) // 2
            first = await self._isolate(delivered[:mid], dead, stop)
            return [*first, *await self._isolate(delivered[mid:], [], stop)]

    async def _attempt(self, delivered: Sequence[Delivered[M]], dead: Sequence[DeadLetter],
                       stop: asyncio.Event, prepared: asyncio.Task[Any] | None = None
                       ) -> list[DeadLetter]:
        attempt = 0
        while True:
            try:
                if prepared is not None and self._staged is not None:
                    # An error of the preparation is met here, as the handler's would be;
                    # every later attempt prepares the batch again.
                    ready, prepared = prepared, None
                    refused = await self._staged.apply(await ready)
                else:
                    refused = await self._handler(delivered, dead)
                return [*dead, *(refused or ())]
            except Exception as exc:
                if not is_retriable(exc):
                    raise
                attempt += 1
                metrics.HANDLER_RETRIES.labels(self.group).inc()
                log.warning(
                    "group %s: applying %d records failed (%s), attempt %d; retrying",
                    self.group, len(delivered), exc.__class__.__name__, attempt,
                )
                if not await self._pause(min(5.0, 0.2 * 2**attempt), stop):
                    raise _Abandoned from exc

    async def _pause(self, seconds: float, stop: asyncio.Event) -> bool:
        """Sleep ``seconds``; False as soon as the service stops or partitions are revoked."""
        end = asyncio.get_running_loop().time() + seconds
        while not (stop.is_set() or self.revoking.is_set()):
            left = end - asyncio.get_running_loop().time()
            if left <= 0:
                return True
            await asyncio.sleep(min(0.1, left))
        return False

    def _observe_lag(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        for tp, pos in offsets.items():
            end = consumer.highwater(tp)
            if end is not None:
                metrics.CONSUMER_LAG.labels(self.group, tp.topic, str(tp.partition)).set(max(0, end - pos))


async def write_dead_letters(conn: Conn, schema: str, dead: Sequence[DeadLetter]) -> None:
    if not dead:
        return
    await conn.executemany(
        f'INSERT INTO "{schema}".dead_letters (topic, partition, "offset", reason, payload, kind) '
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        [(d.topic, d.partition, d.offset, d.reason, d.payload, d.kind) for d in dead],
    )
    for d in dead:
        log.error("dead letter (%s) %s[%d]@%d: %s", d.kind, d.topic, d.partition, d.offset, d.reason)


async def enqueue(
    conn: Conn, schema: str, rows: Sequence[tuple[str, bytes, bytes]]
) -> None:
    """Write (topic, key, value) rows to the schema's outbox, inside the caller's transaction."""
    if rows:
        await conn.copy_records_to_table(
            "outbox", schema_name=schema, columns=("topic", "key", "value"), records=rows
        )


@dataclass
class RedriveGate:
    """Which stranded items a periodic reconciliation pass re-drives.

    An item (identified by the value of the redrive query's cursor column) is re-driven when
    it has been seen stranded for at least ``age`` seconds and was not re-driven in the last
    ``cooldown`` seconds. Items no longer stranded are forgotten after each pass.
    """

    age: float
    cooldown: float
    first_seen: dict[Any, float] = field(default_factory=dict)
    last_sent: dict[Any, float] = field(default_factory=dict)
    _seen: set[Any] = field(default_factory=set)

    def admit(self, item: Any, now: float) -> bool:
        self._seen.add(item)
        if now - self.first_seen.setdefault(item, now) < self.age:
            return False
        sent = self.last_sent.get(item)
        if sent is not None and now - sent < self.cooldown:
            return False
        self.last_sent[item] = now
        return True

    def end_pass(self, now: float) -> None:
        self.first_seen = {k: t for k, t in self.first_seen.items() if k in self._seen}
        self.last_sent = {k: t for k, t in self.last_sent.items()
                          if k in self._seen and now - t < self.cooldown}
        self._seen = set()


_GATE: contextvars.ContextVar[RedriveGate | None] = contextvars.ContextVar("redrive_gate",
                                                                           default=None)


@contextlib.contextmanager
def gated(gate: RedriveGate) -> Iterator[None]:
    """Within this block, ``republish`` re-drives only what ``gate`` admits."""
    token = _GATE.set(gate)
    try:
        yield
    finally:
        _GATE.reset(token)


async def republish(
    pool: asyncpg.Pool, schema: str, page: Callable[[int], Awaitable[list[asyncpg.Record]]],
    cursor: str, encode: Callable[[Any], tuple[str, bytes, bytes]],
) -> int:
    """Enqueue ``encode(row)`` for every row ``page(after)`` yields, page by page.

    ``page(after)`` returns the next rows whose ``cursor`` column is above ``after``, in
    that column's order. Used to redrive unfinished work from Postgres: every row at start
    when the topic is empty, and inside ``gated`` (the periodic reconciler) only the rows its
    gate admits. Counted in ``sigverify_redriven_total{service=<schema>}``.
    """
    gate = _GATE.get()
    now = time.monotonic()
    total, after = 0, 0
    while rows := await page(after):
        chosen = rows if gate is None else [r for r in rows if gate.admit(r[cursor], now)]
        if chosen:
            async with pool.acquire() as conn, conn.transaction():
                await enqueue(conn, schema, [encode(r) for r in chosen])
        total += len(chosen)
        after = rows[-1][cursor]
    if gate is not None:
        gate.end_pass(now)
    if total:
        metrics.REDRIVEN.labels(schema).inc(total)
    return total


#: Producer errors that are about the row itself: it can never be sent as it is.
ROW_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError,
              InvalidTopicError, CorruptRecordException)


class PublishIncomplete(Exception):
    """Some outbox rows of a round were neither acknowledged nor quarantined (retriable)."""

    def __init__(self, left: int, cause: str) -> None:
        super().__init__(f"{left} row(s) not sent ({cause})")
        self.cause = cause


class OutboxPublisher:
    """Sends a schema's outbox rows to Kafka in id order and deletes them once acknowledged.

    Rows are locked with ``FOR UPDATE SKIP LOCKED`` while they are sent, so replicas of a
    service share the outbox without sending a row twice in the normal case; after a crash
    between send and delete a row is sent again, which consumers tolerate.

    Each row's outcome is its own: acknowledged rows are deleted even when others of the
    round failed; a row refused for good (``ROW_ERRORS``, or another non-retriable error
    while other rows of the round went through) moves to ``<schema>.outbox_quarantine``;
    the others stay and the publisher backs off (0.5 s doubling to 30 s). While it fails,
    ``sigverify_outbox_failing_seconds`` grows and, past ``failing_after`` seconds,
    ``problem()`` makes the service's health NOT_SERVING.
    """

    def __init__(self, pool: asyncpg.Pool, producer: AIOKafkaProducer, schema: str,
                 batch: int = 2000, failing_after: float = 30.0, send_timeout: float = 30.0):
        self._pool = pool
        self._producer = producer
        self._schema = schema
        self._batch = batch
        self._failing_after = failing_after
        self._send_timeout = send_timeout
        self.wake = asyncio.Event()
        self.failing_since: float | None = None
        self.last_failure = ""
        metrics.OUTBOX_FAILING.labels(schema).set_function(self.failing_seconds)

    def failing_seconds(self) -> float:
        since = self.failing_since
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    def problem(self) -> str | None:
        """Why health should say NOT_SERVING: the publisher has failed for too long."""
        seconds = self.failing_seconds()
        if seconds > self._failing_after:
            return f"outbox publisher failing for {seconds:.0f}s ({self.last_failure})"
        return None

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.0
        while not stop.is_set():
            try:
                # A round waits up to request_timeout_ms for a broker that is gone: at stop
                # it is given up (rolled back: its rows stay for the next start).
                handled = await until_stopped(self.publish_once(), stop)
                self.failing_since = None
                backoff = 0.0
            except GaveUp:
                log.warning("stopping: an outbox round was given up unfinished; its rows stay in "
                            "%s.outbox for the next start", self._schema)
                return
            except (PublishIncomplete, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    OSError, KafkaError) as exc:
                cause = exc.cause if isinstance(exc, PublishIncomplete) else exc.__class__.__name__
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                self.last_failure = cause
                metrics.OUTBOX_FAILURES.labels(self._schema).inc()
                backoff = min(30.0, max(0.5, backoff * 2))
                log.warning("outbox publish failed (%s); retrying in %.1fs", cause, backoff)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                continue
            if handled == 0:
                self.wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=0.25)
        # Drain what is committed before stopping, so a graceful stop leaves no backlog;
        # not when the broker is failing, and for a few seconds at most: what is left is
        # sent at the next start (the outbox is read from its first row).
        watch = current()
        if self.failing_since is not None or (watch is not None and watch.reachable is False):
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(closing_seconds()):
                while await self.publish_once():
                    pass

    async def _send_all(self, rows: Sequence[asyncpg.Record]) -> list[BaseException | None]:
        """Each row's outcome: None when acknowledged, else the error."""
        outcome: list[BaseException | None] = [None] * len(rows)
        pending: dict[asyncio.Future[Any], int] = {}
        # Each keyed record's partition, Kafka's default partitioner's, computed for the
        # round at once (aiokafka would hash each key in pure Python).
        chosen: list[int | None] = [None] * len(rows)
        for topic in {r["topic"] for r in rows}:
            at = [i for i, r in enumerate(rows) if r["topic"] == topic]
            try:
                ids = await self._producer.partitions_for(topic)
            except KafkaError:
                continue  # each send below meets the error, row by row
            for i, p in zip(at, partitions([rows[i]["key"] for i in at], ids), strict=True):
                chosen[i] = p
        for i, r in enumerate(rows):
            try:
                fut = await self._producer.send(r["topic"], key=r["key"], value=r["value"],
                                                partition=chosen[i])
            except Exception as exc:  # noqa: BLE001 - each row's error is judged below
                outcome[i] = exc
                continue
            pending[fut] = i
        if pending:
            try:
                done, not_done = await asyncio.wait(pending, timeout=self._send_timeout)
            except asyncio.CancelledError:
                for fut in pending:
                    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
                raise
            for fut in done:
                outcome[pending[fut]] = (TimeoutError("send cancelled") if fut.cancelled()
                                         else fut.exception())
            for fut in not_done:
                outcome[pending[fut]] = TimeoutError("not acknowledged in time")
                fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        return outcome

    @staticmethod
    def _hopeless(exc: BaseException, any_sent: bool) -> bool:
        """A row that can never be sent: refused for its own sake (too large, bad topic), or
        refused for good (not transient) while other rows of the round went through, which
        shows the producer and the broker work."""
        return isinstance(exc, ROW_ERRORS) or (any_sent and not is_transient(exc))

    async def publish_once(self) -> int:
        """One round; returns how many rows left the outbox (sent or quarantined). Raises
        ``PublishIncomplete`` after committing when some rows must be tried again."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f'SELECT id, topic, key, value FROM "{self._schema}".outbox '
                "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch,
            )
            if not rows:
                return 0
            outcome = await self._send_all(rows)
            sent = [r["id"] for r, e in zip(rows, outcome, strict=True) if e is None]
            failed = [(r, e) for r, e in zip(rows, outcome, strict=True) if e is not None]
            hopeless = [(r, e) for r, e in failed if self._hopeless(e, any_sent=bool(sent))]
            if sent:
                await conn.execute(
                    f'DELETE FROM "{self._schema}".outbox WHERE id = ANY($1::bigint[])', sent)
            if hopeless:
                await conn.executemany(
                    f'INSERT INTO "{self._schema}".outbox_quarantine (id, topic, key, value, reason) '
                    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                    [(r["id"], r["topic"], r["key"], r["value"],
                      f"{e.__class__.__name__}: {len(r['value'])} bytes") for r, e in hopeless])
                await conn.execute(
                    f'DELETE FROM "{self._schema}".outbox WHERE id = ANY($1::bigint[])',
                    [r["id"] for r, _ in hopeless])
        for r, e in hopeless:
            metrics.OUTBOX_QUARANTINED.labels(self._schema, e.__class__.__name__).inc()
            log.error("outbox row %d for %s (%d bytes) can never be sent (%s): moved to "
                      "%s.outbox_quarantine", r["id"], r["topic"], len(r["value"]),
                      e.__class__.__name__, self._schema)
        metrics.PUBLISHED.labels(self._schema).inc(len(sent))
        left = len(failed) - len(hopeless)
        if left:
            causes = sorted({e.__class__.__name__ for _, e in failed
                             if not self._hopeless(e, any_sent=bool(sent))})
            raise PublishIncomplete(left, ", ".join(causes))
        return len(sent) + len(hopeless)
