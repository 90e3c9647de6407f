"""Run the matching service: ``python -m sigverify_matching``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from sigverify.matching.v1 import matching_pb2, matching_pb2_grpc
from sigverify.review.v1 import review_pb2, review_pb2_grpc
from sigverify_common.kafka import BatchConsumer
from sigverify_common.service import Runtime, ServiceSpec, run_service
from sigverify_common.topics import SIGNATURE_MATCHED, SIGNATURE_RECEIVED
from sigverify_common.vocab import Counties
from sigverify_matching import store
from sigverify_matching.config import Config
from sigverify_matching.consumer import Deadlines, MatchHandler
from sigverify_matching.consumer import redrive as consumer_redrive
from sigverify_matching.review import ReviewService
from sigverify_matching.service import MatchingService
from sigverify_matching.versions import RollIndex, build_candidate_index


async def setup(rt: Runtime, server: grpc.aio.Server) -> Sequence[str]:
    assert isinstance(rt.config, Config)
    # This replica's indexes of the roll; the heartbeat loop builds each new version's index
    # in the background and tells loaders which versions this replica holds.
    roll = RollIndex(rt.pool, rt.config.roll.replica_id, build=build_candidate_index,
                     heartbeat_seconds=rt.config.roll.heartbeat_seconds)
    rt.loops.append(roll.run)
    mc = rt.config.model
    models = store.Models(rt.pool, train_min=mc.train_min, train_max=mc.train_max,
                          train_wait=mc.train_wait_seconds)
    consumer = BatchConsumer(
        bootstrap=rt.config.kafka_bootstrap_servers, topic=SIGNATURE_RECEIVED, group="matching",
        handler=MatchHandler(rt.pool, roll, models, rt.outbox, rt.config.match),
        max_records=2000, ahead=True,
    )
    rt.loops.append(consumer.run)
    counties = Counties(rt.config.counties)
    matching_pb2_grpc.add_MatchingServiceServicer_to_server(
        MatchingService(rt.pool, roll, Deadlines(rt.pool), rt.config.match, rt.config.roll,
                        models, mc, counties), server)
    review_pb2_grpc.add_ReviewServiceServicer_to_server(
        ReviewService(rt.pool, rt.outbox, counties), server)
    return [matching_pb2.DESCRIPTOR.services_by_name["MatchingService"].full_name,
            review_pb2.DESCRIPTOR.services_by_name["ReviewService"].full_name]


async def redrive(rt: Runtime) -> int:
    return await consumer_redrive(rt.pool)


SPEC = ServiceSpec(name="matching", schema="matching", migrations_package="sigverify_matching",
                   publishes=True, setup=setup, output_topic=SIGNATURE_MATCHED.name,
                   redrive=redrive)


def main() -> None:
    asyncio.run(run_service(SPEC, Config.from_env()))


if __name__ == "__main__":
    main()
