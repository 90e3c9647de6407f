"""Delivery's pure parts: each topic's checks of a decoded message, the classification of
errors as transient, and the reconciler's gate."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import asyncpg
import pytest
from aiokafka import errors as kafka_errors
from google.protobuf import struct_pb2, type_pb2
from google.protobuf.message import Message

from sigverify.events.v1 import events_pb2
from sigverify_common.errors import NotFound, Unavailable, is_outage, is_transient
from sigverify_common.kafka import RedriveGate
from sigverify_common.topics import (
    SIGNATURE_MATCHED,
    SIGNATURE_RECEIVED,
    SIGNATURE_VERIFIED,
    consumers_of,
    unknown_enums,
)
from sigverify_common.vocab import Decision, Reason, Source
from sigverify_intake.convert import received_event
from sigverify_intake.domain import Signature
from sigverify_matching.convert import matched_event
from sigverify_matching.domain import MatchResult

SID, BID = uuid.uuid4(), uuid.uuid4()


def received() -> events_pb2.SignatureReceived:
    """A SignatureReceived exactly as intake publishes it."""
    s = Signature(line=3, first_name="Ann", middle_name="", last_name="Lee", street="1 Main St",
                  unit="", city="Bakersfield", zip="93301", signed_on=date(2017, 5, 1),
                  birth_date=None, circulator_id="c1", source=Source.PAPER, incomplete=False)
    _, _, value = received_event(SID, BID, "calexit", "Kern", 7, s)
    return SIGNATURE_RECEIVED.decode(value)


def matched() -> events_pb2.SignatureMatched:
    """A SignatureMatched exactly as matching publishes it."""
    r = MatchResult(decision=Decision.MATCH, reason=Reason.MATCHED, voter_id="V1", score=97.0,
                    candidates=())
    _, _, value = matched_event(received(), r)
    return SIGNATURE_MATCHED.decode(value)


def verified() -> events_pb2.SignatureVerified:
    from sigverify_common.convert import reason_to_pb, status_to_pb
    from sigverify_common.vocab import Status
    return events_pb2.SignatureVerified(
        event_id=str(uuid.uuid4()), signature_id=str(SID), petition_id="calexit",
        batch_id=str(BID), county="Kern", line=3, circulator_id="c1",
        status=status_to_pb(Status.INVALID), reason=reason_to_pb(Reason.DUPLICATE),
        voter_id="V1", score=91.0, revision=4)


def test_events_as_the_services_publish_them_pass() -> None:
    assert SIGNATURE_RECEIVED.problem(received()) is None
    assert SIGNATURE_MATCHED.problem(matched()) is None
    assert SIGNATURE_VERIFIED.problem(verified()) is None


@pytest.mark.parametrize("value, reason", [
    (None, "record has no value"),
    (b"", "record value is empty"),
    (b"\xff\xff\xff\xff", "undecodable SignatureReceived: DecodeError"),
])
def test_undecodable_values_are_refused_with_the_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(ValueError) as exc:
        SIGNATURE_RECEIVED.decode(value)
    assert str(exc.value) == reason


def test_each_fault_of_a_decoded_message_is_named_without_its_content() -> None:
    cases: list[tuple[events_pb2.SignatureReceived | events_pb2.SignatureMatched
                      | events_pb2.SignatureVerified, str]] = []
    m = received()
    m.signature_id = "not-a-uuid"
    cases.append((m, "invalid SignatureReceived: signature_id is not a UUID"))
    m = received()
    m.batch_id = str(BID).upper()  # a UUID, not in the canonical text consumers compare
    cases.append((m, "invalid SignatureReceived: batch_id is not a UUID"))
    m = received()
    m.petition_id = ""
    cases.append((m, "invalid SignatureReceived: petition_id is empty"))
    m = received()
    m.signed_on = "31/02/2017"
    cases.append((m, "invalid SignatureReceived: signed_on is not an ISO date"))
    m = received()
    m.source = 42  # type: ignore[assignment]
    cases.append((m, "invalid SignatureReceived: source has a value this version does not know"))
    mm = matched()
    mm.candidates.add(voter_id="V2", score=1.0)
    assert SIGNATURE_MATCHED.problem(mm) is None
    mm.candidates[0].field_scores["last_name"] = 0.5
    assert SIGNATURE_MATCHED.problem(mm) is None
    mm = matched()
    mm.reason = 0  # type: ignore[assignment]
    cases.append((mm, "invalid SignatureMatched: reason is unspecified"))
    mm = matched()
    mm.decision = 17  # type: ignore[assignment]
    cases.append((mm, "invalid SignatureMatched: decision has a value this version does not know"))
    mm = matched()
    mm.county = ""
    cases.append((mm, "invalid SignatureMatched: county is empty"))
    v = verified()
    v.status = 1  # type: ignore[assignment]  # VALID with reason DUPLICATE
    cases.append((v, "invalid SignatureVerified: status VALID does not go with reason DUPLICATE"))
    v = verified()
    v.status = 4  # type: ignore[assignment]  # NOT_SAMPLED is never in an event
    cases.append((v, "invalid SignatureVerified: status NOT_SAMPLED does not go with reason "
                     "DUPLICATE"))
    v = verified()
    v.reason = 99  # type: ignore[assignment]
    cases.append((v, "invalid SignatureVerified: reason has a value this version does not know"))
    topic = {events_pb2.SignatureReceived: SIGNATURE_RECEIVED,
             events_pb2.SignatureMatched: SIGNATURE_MATCHED,
             events_pb2.SignatureVerified: SIGNATURE_VERIFIED}
    for message, reason in cases:
        assert topic[type(message)].problem(message) == reason  # type: ignore[attr-defined]


def test_each_topic_names_the_group_that_reads_it() -> None:
    assert consumers_of(SIGNATURE_RECEIVED.name) == ("matching",)
    assert consumers_of(SIGNATURE_MATCHED.name) == ("dedupe",)
    assert consumers_of(SIGNATURE_VERIFIED.name) == ("tally",)
    assert consumers_of("sigverify.other.v1") == ()


def _pg(cls: type[asyncpg.PostgresError]) -> asyncpg.PostgresError:
    return cls("message quoting a row")


@pytest.mark.parametrize("exc", [
    _pg(asyncpg.exceptions.AdminShutdownError),        # 57P01
    _pg(asyncpg.exceptions.CrashShutdownError),        # 57P02
    _pg(asyncpg.exceptions.CannotConnectNowError),     # 57P03
    _pg(asyncpg.exceptions.IdleSessionTimeoutError),   # 57P05
    _pg(asyncpg.exceptions.TooManyConnectionsError),   # 53300
    _pg(asyncpg.exceptions.ConnectionFailureError),    # 08006
    _pg(asyncpg.exceptions.SerializationError),        # 40001
    _pg(asyncpg.exceptions.DeadlockDetectedError),     # 40P01
    _pg(asyncpg.exceptions.LockNotAvailableError),     # 55P03
    asyncpg.exceptions.InterfaceError("connection is closed"),
    ConnectionResetError(), TimeoutError(), OSError(),
    kafka_errors.KafkaConnectionError(), kafka_errors.NotLeaderForPartitionError(),
    kafka_errors.KafkaTimeoutError(), Unavailable("no roll"),
])
def test_outages_and_recovery_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)
    assert is_outage(exc)


@pytest.mark.parametrize("exc", [
    _pg(asyncpg.exceptions.DataError), _pg(asyncpg.exceptions.UniqueViolationError),
    _pg(asyncpg.exceptions.QueryCanceledError), _pg(asyncpg.exceptions.UndefinedTableError),
    ValueError("bad"), KeyError("k"), NotFound("x"),
])
def test_bugs_and_bad_data_are_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)
    assert not is_outage(exc)


def test_every_kafka_error_is_an_outage_for_a_caller_but_not_all_are_transient() -> None:
    exc = kafka_errors.MessageSizeTooLargeError()
    assert is_outage(exc) and not is_transient(exc)


def test_the_gate_redrives_only_what_stayed_stranded_and_not_again_within_the_cooldown() -> None:
    gate = RedriveGate(age=10, cooldown=100)
    assert not gate.admit(1, now=0)       # first seen
    gate.end_pass(0)
    assert not gate.admit(1, now=5)       # stranded for 5 s only
    assert not gate.admit(2, now=5)
    gate.end_pass(5)
    assert gate.admit(1, now=10)          # stranded for 10 s
    assert not gate.admit(2, now=10)
    gate.end_pass(10)
    assert not gate.admit(1, now=50)      # re-driven 40 s ago
    assert gate.admit(2, now=50)
    gate.end_pass(50)
    # 2 was applied downstream (not seen in this pass): forgotten, so seen again it starts over.
    assert not gate.admit(1, now=60)
    gate.end_pass(60)
    assert not gate.admit(2, now=61)
    assert gate.admit(1, now=111)         # the cooldown is over


class _RebalancedAway:
    """The consumer as it is after the group rebalanced mid-batch: the offset commit fails."""

    def __init__(self) -> None:
        self.commits = 0

    async def commit(self, offsets: object) -> None:
        self.commits += 1
        raise kafka_errors.CommitFailedError("the group has already rebalanced")

    def highwater(self, tp: object) -> None:
        return None

    def seek(self, tp: object, offset: int) -> None:
        raise AssertionError("an applied batch is not rewound")


async def test_a_commit_lost_to_a_rebalance_keeps_the_applied_batch_and_the_consumer() -> None:
    """CommitFailedError after a rebalance: the batch stays applied (Postgres has it; the next
    owner redelivers it, which the idempotent handler ignores), the failure is counted, and the
    consumer goes on (before the fix it raised and the service exited)."""
    import asyncio
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    from sigverify_common import metrics
    from sigverify_common.kafka import BatchConsumer

    applied: list[str] = []

    async def handler(batch: object, dead: object) -> None:
        applied.extend(d.message.signature_id for d in batch)  # type: ignore[attr-defined]

    consumer: BatchConsumer[events_pb2.SignatureReceived] = BatchConsumer(
        bootstrap="unused:9092", topic=SIGNATURE_RECEIVED, group="test-commit-lost",
        handler=handler)
    tp = TopicPartition(SIGNATURE_RECEIVED.name, 0)
    value = received().SerializeToString()
    records = [SimpleNamespace(offset=o, value=value, key=b"k") for o in (5, 6)]
    before = metrics.COMMIT_FAILURES.labels("test-commit-lost")._value.get()
    fake = _RebalancedAway()
    delivered, dead = consumer._split({tp: records})  # type: ignore[dict-item]
    assert await consumer._apply(fake, {tp: records}, delivered, dead,  # type: ignore[arg-type,dict-item]
                                 asyncio.Event())
    assert applied == [str(SID), str(SID)]
    assert fake.commits == 1
    assert metrics.COMMIT_FAILURES.labels("test-commit-lost")._value.get() == before + 1


def _enums_by_walking(message: Message, prefix: str = "") -> list[str]:
    """``unknown_enums`` as it was first written (every set field walked through its
    descriptor), the reference the cached version is held to."""
    out: list[str] = []
    for fd, value in message.ListFields():
        path = f"{prefix}{fd.name}"
        if fd.enum_type is not None:
            values = value if fd.is_repeated else [value]
            if any(v not in fd.enum_type.values_by_number for v in values):
                out.append(path)
        elif fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                entry = fd.message_type.fields_by_name["value"]
                if entry.enum_type is not None:
                    if any(v not in entry.enum_type.values_by_number for v in value.values()):
                        out.append(path)
                    continue
                if entry.message_type is None:
                    continue
                items = value.values()
            else:
                items = value if fd.is_repeated else [value]
            for item in items:
                out += _enums_by_walking(item, f"{path}.")
    return out


def test_unknown_enums_are_found_wherever_they_are() -> None:
    """Enums alone, repeated, in nested and repeated messages and in maps of messages (the
    well-known Type and Struct carry each shape; Struct holds itself through Value): the
    same paths as walking every field."""
    t = type_pb2.Type(name="t", syntax=type_pb2.SYNTAX_PROTO3)
    t.fields.add(name="a", kind=type_pb2.Field.TYPE_STRING)
    t.fields.add(name="b", kind=99)  # type: ignore[arg-type]
    t.fields.add(name="c", cardinality=7)  # type: ignore[arg-type]
    bad_syntax = type_pb2.Type(syntax=5)  # type: ignore[arg-type]
    s = struct_pb2.Struct()
    s.fields["ok"].string_value = "x"
    s.fields["deep"].struct_value.fields["null"].null_value = 3  # type: ignore[assignment]
    good = struct_pb2.Struct()
    good.fields["n"].null_value = struct_pb2.NULL_VALUE
    m = matched()
    m.candidates.add(voter_id="V2", score=1.0)
    m.decision = 17  # type: ignore[assignment]
    for message, expected in [(t, ["fields.kind", "fields.cardinality"]),
                              (bad_syntax, ["syntax"]),
                              (s, ["fields.struct_value.fields.null_value"]),
                              (good, []), (m, ["decision"]), (received(), [])]:
        got = list(unknown_enums(message))
        assert got == _enums_by_walking(message) == expected, (got, expected)


async def test_a_batch_polled_before_its_partitions_were_revoked_is_not_applied() -> None:
    """A batch prepared ahead whose partitions were revoked meanwhile is dropped: not
    applied, not committed, not sought back (its partitions' next owner reads it from the
    committed offsets)."""
    import asyncio
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    from sigverify_common.kafka import BatchConsumer

    applied: list[str] = []

    class Handler:
        async def prepare(self, batch: Any, dead: Any) -> Any:
            return batch

        async def apply(self, batch: Any) -> None:
            applied.extend(d.message.signature_id for d in batch)

        async def __call__(self, batch: Any, dead: Any) -> None:
            await self.apply(await self.prepare(batch, dead))

    class Untouched(_RebalancedAway):
        async def commit(self, offsets: object) -> None:
            raise AssertionError("a dropped batch is not committed")

    handler = Handler()
    consumer: BatchConsumer[events_pb2.SignatureReceived] = BatchConsumer(
        bootstrap="unused:9092", topic=SIGNATURE_RECEIVED, group="test-revoked",
        handler=handler, ahead=True)
    tp = TopicPartition(SIGNATURE_RECEIVED.name, 0)
    value = received().SerializeToString()
    batch = {tp: [SimpleNamespace(offset=o, value=value, key=b"k") for o in (5, 6)]}
    delivered, dead = consumer._split(batch)  # type: ignore[arg-type]
    polled_in = consumer.generation
    consumer.generation += 1  # what revoking the partitions does
    prepared = asyncio.ensure_future(handler.prepare(delivered, dead))
    assert await consumer._apply(Untouched(), batch, delivered, dead,  # type: ignore[arg-type]
                                 asyncio.Event(), prepared=prepared, generation=polled_in)
    assert applied == []
    # In the generation it was polled in, the same batch is applied.
    prepared = asyncio.ensure_future(handler.prepare(delivered, dead))
    fake = _RebalancedAway()
    assert await consumer._apply(fake, batch, delivered, dead,  # type: ignore[arg-type]
                                 asyncio.Event(), prepared=prepared,
                                 generation=consumer.generation)
    assert applied == [str(SID), str(SID)] and fake.commits == 1


def test_a_batch_dropped_behind_an_abandoned_one_is_sought_back_to_its_first_records() -> None:
    """Its partitions go back to its first records, except those the abandoned batch had
    too (sought further back already) when no reassignment came in between; after one,
    that seek was lost with the old assignment, so every partition of the dropped batch is
    sought back (else the records it held would be skipped and later committed past)."""
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    from sigverify_common.kafka import _Ahead, _seek_back

    p0, p1 = (TopicPartition(SIGNATURE_RECEIVED.name, p) for p in (0, 1))

    def polled(generation: int, first: dict[TopicPartition, int]) -> _Ahead[Any]:
        return _Ahead({tp: [SimpleNamespace(offset=o), SimpleNamespace(offset=o + 1)]
                       for tp, o in first.items()}, [], [], generation, None)  # type: ignore[arg-type]

    class Seeks:
        def __init__(self) -> None:
            self.to: dict[TopicPartition, int] = {}

        def seek(self, tp: TopicPartition, offset: int) -> None:
            self.to[tp] = offset

    abandoned = polled(3, {p0: 100})
    same = Seeks()
    _seek_back(same, polled(3, {p0: 200, p1: 50}), abandoned)  # type: ignore[arg-type]
    assert same.to == {p1: 50}
    after_a_rebalance = Seeks()
    _seek_back(after_a_rebalance, polled(4, {p0: 100, p1: 50}), abandoned)  # type: ignore[arg-type]
    assert after_a_rebalance.to == {p0: 100, p1: 50}
