"""IntakeService: the gRPC face of intake."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import asyncpg
import grpc

from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify_common import auth, kafka
from sigverify_common.convert import parse_uuid, policy_from_pb
from sigverify_common.errors import InvalidArgument
from sigverify_common.vocab import canonical_county
from sigverify_intake import convert, domain, repository

log = logging.getLogger(__name__)


class IntakeService(intake_pb2_grpc.IntakeServiceServicer):
    def __init__(self, pool: asyncpg.Pool, outbox: kafka.OutboxPublisher | None) -> None:
        self._pool = pool
        self._outbox = outbox

    async def SubmitBatch(
        self, request_iterator: AsyncIterator[intake_pb2.SubmitBatchRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> intake_pb2.BatchReceipt:
        header: intake_pb2.BatchHeader | None = None
        rows: list[tuple[int, list[str]]] = []
        async for part in request_iterator:
            if part.HasField("header"):
                if header is not None:
                    raise InvalidArgument("a batch has exactly one header")
                header = part.header
                # Refuse another county's batch at its header, before reading its rows.
                auth.require_county(header.county, "submit a batch for")
            elif header is None:
                raise InvalidArgument("the first message of a batch must be its header")
            else:
                rows.extend((r.record, list(r.values)) for r in part.rows.rows)
        if header is None:
            raise InvalidArgument("empty stream: no batch header")
        petition_id = header.petition_id.strip()
        county = canonical_county(header.county)
        if not petition_id:
            raise InvalidArgument("header.petition_id is required")
        if not county:
            raise InvalidArgument("header.county is required")
        columns = domain.check_columns(header.columns)
        digest = domain.content_digest(petition_id, county, columns, rows)
        validated = domain.validate(columns, rows)
        receipt = await repository.store_batch(
            self._pool, petition_id=petition_id, county=county,
            client_key=header.client_batch_key.strip(), filename=header.filename,
            digest=digest, validated=validated, encode_events=convert.signature_events,
            actor=auth.actor("system:intake"),
        )
        if self._outbox is not None and not receipt.resubmission:
            self._outbox.wake.set()
        log.info(
            "batch %s petition=%s county=%s rows=%d accepted=%d rejected=%d resubmission=%s",
            receipt.batch_id, petition_id, county, receipt.rows_received,
            receipt.signatures_accepted, len(receipt.rejected), receipt.resubmission,
        )
        return convert.receipt_to_pb(receipt)

    async def GetBatch(
        self, request: intake_pb2.GetBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> intake_pb2.BatchReceipt:
        batch_id = parse_uuid(request.batch_id, "batch_id")
        receipt = await repository.get_batch(self._pool, batch_id)
        auth.require_county(receipt.county, "read a batch of")
        return convert.receipt_to_pb(receipt)

    async def CreatePetition(
        self, request: intake_pb2.CreatePetitionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> intake_pb2.Petition:
        pid = request.petition_id.strip()
        if not pid:
            raise InvalidArgument("petition_id is required")
        if request.required_signatures <= 0:
            raise InvalidArgument("required_signatures must be positive")
        try:
            deadline = date.fromisoformat(request.deadline)
        except ValueError:
            raise InvalidArgument(f"deadline {request.deadline!r} is not an ISO date") from None
        row = await repository.create_petition(
            self._pool, pid, request.title.strip() or pid, request.required_signatures, deadline,
            actor=auth.actor("system:intake"), policy=policy_from_pb(request.duplicate_policy),
            accept_online=request.accept_online,
        )
        return convert.petition_to_pb(row)

    async def GetPetition(
        self, request: intake_pb2.GetPetitionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> intake_pb2.Petition:
        return convert.petition_to_pb(await repository.get_petition(self._pool, request.petition_id))
