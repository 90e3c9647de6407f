"""Run the intake service: ``python -m sigverify_intake``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify_common.service import Runtime, ServiceSpec, run_service
from sigverify_intake.config import Config
from sigverify_intake.service import IntakeService


async def setup(rt: Runtime, server: grpc.aio.Server) -> Sequence[str]:
    intake_pb2_grpc.add_IntakeServiceServicer_to_server(IntakeService(rt.pool, rt.outbox), server)
    return [intake_pb2.DESCRIPTOR.services_by_name["IntakeService"].full_name]


SPEC = ServiceSpec(name="intake", schema="intake", migrations_package="sigverify_intake",
                   publishes=True, setup=setup)


def main() -> None:
    asyncio.run(run_service(SPEC, Config.from_env()))


if __name__ == "__main__":
    main()
