"""Run the tally service: ``python -m sigverify_tally``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from sigverify.tally.v1 import tally_pb2, tally_pb2_grpc
from sigverify_common.kafka import BatchConsumer
from sigverify_common.service import Runtime, ServiceSpec, run_service
from sigverify_common.topics import SIGNATURE_VERIFIED
from sigverify_tally.config import Config
from sigverify_tally.service import (
    Decider,
    InvariantChecker,
    MetricsRefresher,
    TallyHandler,
    TallyService,
)


async def setup(rt: Runtime, server: grpc.aio.Server) -> Sequence[str]:
    decider = Decider(rt.pool)
    consumer = BatchConsumer(
        bootstrap=rt.config.kafka_bootstrap_servers, topic=SIGNATURE_VERIFIED, group="tally",
        handler=TallyHandler(rt.pool, decider), max_records=2000,
    )
    rt.loops.append(consumer.run)
    rt.loops.append(decider.run)
    rt.loops.append(MetricsRefresher(rt.pool).run)
    interval = rt.config.invariant_interval_seconds if isinstance(rt.config, Config) else 60.0
    if interval > 0:
        rt.loops.append(InvariantChecker(rt.pool, interval).run)
    tally_pb2_grpc.add_TallyServiceServicer_to_server(TallyService(rt.pool, rt.stop), server)
    return [tally_pb2.DESCRIPTOR.services_by_name["TallyService"].full_name]


SPEC = ServiceSpec(name="tally", schema="tally", migrations_package="sigverify_tally",
                   publishes=False, setup=setup)


def main() -> None:
    asyncio.run(run_service(SPEC, Config.from_env()))


if __name__ == "__main__":
    main()
