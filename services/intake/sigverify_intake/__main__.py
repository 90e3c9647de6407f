"""Run the intake service: ``python -m sigverify_intake``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from sigverify.access.v1 import access_pb2, access_pb2_grpc
from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify_common import kafka
from sigverify_common.service import Runtime, ServiceSpec, run_service
from sigverify_common.topics import SIGNATURE_RECEIVED
from sigverify_common.vocab import CALIFORNIA_COUNTIES, Counties
from sigverify_intake import convert, filings, repository
from sigverify_intake.access_service import AccessService
from sigverify_intake.config import Config
from sigverify_intake.service import IntakeService


async def setup(rt: Runtime, server: grpc.aio.Server) -> Sequence[str]:
    config = rt.config if isinstance(rt.config, Config) else None
    counties = Counties(config.counties if config else CALIFORNIA_COUNTIES)
    intake_pb2_grpc.add_IntakeServiceServicer_to_server(
        IntakeService(rt.pool, rt.outbox, counties), server)
    in_flight = config.full_count_in_flight if config else filings.IN_FLIGHT
    rt.loops.append(filings.Releaser(rt.pool, rt.outbox, in_flight=in_flight,
                                     chunk=min(filings.CHUNK, in_flight)).run)
    access_pb2_grpc.add_AccessServiceServicer_to_server(
        AccessService(rt.pool, rt.auth.cache if rt.auth else None, counties), server)
    return [intake_pb2.DESCRIPTOR.services_by_name["IntakeService"].full_name,
            access_pb2.DESCRIPTOR.services_by_name["AccessService"].full_name]


async def redrive(rt: Runtime) -> int:
    """Re-publish SignatureReceived for every stored signature matching has not decided."""
    return await kafka.republish(
        rt.pool, repository.SCHEMA, lambda after: repository.unfinished(rt.pool, 5000, after),
        "received_seq", convert.received_event_of_row)


SPEC = ServiceSpec(name="intake", schema="intake", migrations_package="sigverify_intake",
                   publishes=True, setup=setup, output_topic=SIGNATURE_RECEIVED.name,
                   redrive=redrive)


def main() -> None:
    asyncio.run(run_service(SPEC, Config.from_env()))


if __name__ == "__main__":
    main()
