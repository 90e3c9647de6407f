from __future__ import annotations

import pytest

from sigverify.common.v1 import common_pb2
from sigverify.events.v1 import events_pb2
from sigverify_common import convert
from sigverify_common.config import ServiceConfig
from sigverify_common.errors import ConfigError
from sigverify_common.topics import SIGNATURE_RECEIVED
from sigverify_common.vocab import Decision, Reason, Source, Status, canonical_county, status_for

ENV = {"DATABASE_URL": "postgresql://x/y", "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
       "GRPC_PORT": "50051", "METRICS_PORT": "9101"}


def test_every_reason_status_decision_and_source_maps_both_ways() -> None:
    for r in Reason:
        assert convert.reason_from_pb(convert.reason_to_pb(r)) is r
    for s in Status:
        assert convert.status_from_pb(convert.status_to_pb(s)) is s
    for d in Decision:
        assert convert.decision_from_pb(convert.decision_to_pb(d)) is d
    for src in Source:
        assert convert.source_from_pb(convert.source_to_pb(src)) is src
    assert len(Reason) == len(common_pb2.Reason.keys()) - 1
    # the numbers as the protobuf enums name them, not only consistent with each other
    assert convert.reason_to_pb(Reason.MATCHED) == common_pb2.REASON_MATCHED
    assert convert.status_to_pb(Status.REVIEW) == common_pb2.SIGNATURE_STATUS_REVIEW
    assert convert.source_to_pb(Source.ONLINE) == common_pb2.SIGNATURE_SOURCE_ONLINE
    assert convert.decision_from_pb(common_pb2.MATCH_DECISION_NO_MATCH) is Decision.NO_MATCH


def test_unknown_or_unspecified_enum_numbers_are_refused() -> None:
    for from_pb in (convert.reason_from_pb, convert.status_from_pb, convert.decision_from_pb):
        for number in (0, 999, -1):
            with pytest.raises(ValueError):
                from_pb(number)
    with pytest.raises(ValueError):
        convert.source_from_pb(999)
    # a source left unspecified is paper (older producers did not set it)
    assert convert.source_from_pb(common_pb2.SIGNATURE_SOURCE_UNSPECIFIED) is Source.PAPER


def test_status_for_reason() -> None:
    assert status_for(Reason.MATCHED) is Status.VALID
    assert status_for(Reason.PENDING_REVIEW) is Status.REVIEW
    assert status_for(Reason.DUPLICATE) is Status.INVALID


def test_config_reads_env_and_names_what_is_missing() -> None:
    c = ServiceConfig.from_env(ENV)
    assert (c.grpc_port, c.metrics_port) == (50051, 9101)
    for name in ServiceConfig.REQUIRED_ENV:
        with pytest.raises(ConfigError, match=name):
            ServiceConfig.from_env({k: v for k, v in ENV.items() if k != name})
    with pytest.raises(ConfigError, match="GRPC_PORT"):
        ServiceConfig.from_env({**ENV, "GRPC_PORT": "high"})


def test_topic_decoding_refuses_garbage() -> None:
    msg = events_pb2.SignatureReceived(signature_id="s1", line=3)
    assert SIGNATURE_RECEIVED.decode(SIGNATURE_RECEIVED.encode(msg)) == msg
    with pytest.raises(ValueError, match="undecodable"):
        SIGNATURE_RECEIVED.decode(b"\xff\xff\xff")
    with pytest.raises(ValueError):
        SIGNATURE_RECEIVED.decode(None)


def test_county_names_have_one_spelling() -> None:
    assert canonical_county("  los   ANGELES ") == "Los Angeles"


def test_stored_ids_are_time_ordered_uuid7_and_event_ids_random_uuid4() -> None:
    import re
    import time
    import uuid

    from sigverify_common import ids

    canonical = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    before = int(time.time() * 1000)
    first = ids.new_id()
    time.sleep(0.003)
    made = [ids.new_id() for _ in range(1000)]
    after = int(time.time() * 1000)
    events = [ids.event_id() for _ in range(1000)]
    for text in [first, *made, *events]:
        assert canonical.fullmatch(text), text
    assert {uuid.UUID(t).version for t in [first, *made]} == {7}
    assert {uuid.UUID(t).version for t in events} == {4}
    # The first 48 bits are the time made, in milliseconds: a later id sorts after.
    assert before <= int(first.replace("-", "")[:12], 16) <= after
    assert all(first < t for t in made)
    assert len(set(made)) == len(made) and len(set(events)) == len(events)


def test_a_long_value_that_is_not_a_uuid_is_quoted_cut() -> None:
    """The error travels in gRPC's trailing metadata (16 KiB at most): a 20,000-character
    id quoted whole made the client get RESOURCE_EXHAUSTED instead of the error."""
    from sigverify_common.convert import parse_uuid
    from sigverify_common.errors import InvalidArgument

    with pytest.raises(InvalidArgument) as e:
        parse_uuid("x" * 150, "voter_id")
    assert str(e.value) == "voter_id 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' is not a UUID"
    with pytest.raises(InvalidArgument) as e:
        parse_uuid("x" * 20_000, "voter_id")
    assert str(e.value) == "voter_id is 20,000 characters long; at most 200"
