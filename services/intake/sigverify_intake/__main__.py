"""Run the intake service: ``python -m sigverify_intake``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify_common.service import Runtime, ServiceSpec, run_service
from sigverify_common.topics import SIGNATURE_RECEIVED
from sigverify_intake import convert, repository
from sigverify_intake.config import Config
from sigverify_intake.service import IntakeService


async def setup(rt: Runtime, server: grpc.aio.Server) -> Sequence[str]:
    intake_pb2_grpc.add_IntakeServiceServicer_to_server(IntakeService(rt.pool, rt.outbox), server)
    return [intake_pb2.DESCRIPTOR.services_by_name["IntakeService"].full_name]


async def redrive(rt: Runtime) -> int:
    """Re-publish SignatureReceived for every stored signature matching has not decided."""
    total, after = 0, 0
    while rows := await repository.unfinished(rt.pool, 5000, after):
        await repository.enqueue_rows(rt.pool, [
            convert.received_event(r["signature_id"], r["batch_id"], r["petition_id"],
                                   r["county"], r["received_seq"], repository.signature_of(r))
            for r in rows])
        total += len(rows)
        after = rows[-1]["received_seq"]
    return total


SPEC = ServiceSpec(name="intake", schema="intake", migrations_package="sigverify_intake",
                   publishes=True, setup=setup, output_topic=SIGNATURE_RECEIVED.name,
                   redrive=redrive)


def main() -> None:
    asyncio.run(run_service(SPEC, Config.from_env()))


if __name__ == "__main__":
    main()
