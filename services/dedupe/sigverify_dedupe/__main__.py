"""Run the dedupe service: ``python -m sigverify_dedupe``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from sigverify_common.kafka import BatchConsumer
from sigverify_common.service import Runtime, ServiceSpec, run_service
from sigverify_common.topics import SIGNATURE_MATCHED, SIGNATURE_VERIFIED
from sigverify_dedupe.config import Config
from sigverify_dedupe.consumer import DedupeHandler
from sigverify_dedupe.consumer import redrive as consumer_redrive


async def setup(rt: Runtime, server: grpc.aio.Server) -> Sequence[str]:
    consumer = BatchConsumer(
        bootstrap=rt.config.kafka_bootstrap_servers, topic=SIGNATURE_MATCHED, group="dedupe",
        handler=DedupeHandler(rt.pool, rt.outbox), max_records=1000,
    )
    rt.loops.append(consumer.run)
    return []  # dedupe serves only health and reflection


async def redrive(rt: Runtime) -> int:
    return await consumer_redrive(rt.pool)


SPEC = ServiceSpec(name="dedupe", schema="dedupe", migrations_package="sigverify_dedupe",
                   publishes=True, setup=setup, output_topic=SIGNATURE_VERIFIED.name,
                   redrive=redrive)


def main() -> None:
    asyncio.run(run_service(SPEC, Config.from_env()))


if __name__ == "__main__":
    main()
