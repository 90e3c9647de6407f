"""The outbox's partitions for keyed records are Kafka's default partitioner's."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from sigverify_common import partitions


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=40))
def test_murmur2_is_kafkas_for_every_length(keys: list[bytes]) -> None:
    assert partitions.murmur2(keys).tolist() == [murmur2(k) for k in keys]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=48),
                          st.uuids().map(lambda u: str(u).encode())), max_size=60),
       st.sets(st.integers(0, 40), min_size=1, max_size=12))
def test_partitions_are_the_default_partitioners(keys: list[bytes | None],
                                                 ids: set[int]) -> None:
    ordered = sorted(ids)
    want = [None if k is None else DefaultPartitioner()(k, ordered, ordered) for k in keys]
    assert partitions.partitions(keys, ids) == want  # type: ignore[arg-type]


def test_known_values() -> None:
    # Kafka's own test vectors (org.apache.kafka.common.utils.UtilsTest.testMurmur2).
    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string":
               -985981536, b"a-little-bit-longer-string": -1486304829,
               b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}
    got = partitions.murmur2(list(vectors)).astype("int32").tolist()
    assert got == list(vectors.values())
