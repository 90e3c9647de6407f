"""IntakeService: the gRPC face of intake."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, date, datetime, time
from typing import Any

import asyncpg
import grpc

from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify_common import auth, kafka
from sigverify_common.convert import method_from_pb, parse_uuid, policy_from_pb, rules_from_pb
from sigverify_common.errors import InvalidArgument
from sigverify_common.vocab import canonical_county
from sigverify_intake import convert, domain, filings, repository

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
            accept_online=request.accept_online, method=method_from_pb(request.method),
            rules=rules_from_pb(request.sampling),
            filing_closes_at=parse_instant(request.filing_closes_at, "filing_closes_at"),
            counties=expected_counties(request.counties),
        )
        return convert.petition_to_pb(row)

    async def SetVerificationMethod(
        self, request: intake_pb2.SetVerificationMethodRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> intake_pb2.Petition:
        if not request.reason.strip():
            raise InvalidArgument("reason is required: it goes into the audit log")
        row = await filings.set_method(
            self._pool, request.petition_id.strip(), method_from_pb(request.method),
            rules_from_pb(request.sampling), request.reason.strip(), auth.actor("system:intake"))
        if self._outbox is not None:
            self._outbox.wake.set()
        return convert.petition_to_pb(row)

    async def CloseCounty(
        self, request: intake_pb2.CloseCountyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> intake_pb2.CountyFiling:
        county = canonical_county(request.county)
        if not request.petition_id.strip():
            raise InvalidArgument("petition_id is required")
        if not county:
            raise InvalidArgument("county is required")
        auth.require_county(county, "close the filing of")
        filing, closed_now = await filings.close_county(
            self._pool, request.petition_id.strip(), county, request.seed.strip(),
            auth.actor("system:intake"))
        if closed_now and self._outbox is not None:
            self._outbox.wake.set()
        return convert.filing_to_pb(filing)

    async def ListCounties(
        self, request: intake_pb2.ListCountiesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> intake_pb2.ListCountiesResponse:
        found = await filings.list_counties(self._pool, request.petition_id.strip())
        return intake_pb2.ListCountiesResponse(counties=[convert.filing_to_pb(f) for f in found])

    async def ListSample(
        self, request: intake_pb2.ListSampleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[intake_pb2.SampleEntry]:
        county = canonical_county(request.county)
        if not county:
            raise InvalidArgument("county is required")
        async for e in filings.sample_entries(self._pool, request.petition_id.strip(), county,
                                              request.include_unsampled):
            yield intake_pb2.SampleEntry(signature_id=e.signature_id, batch_id=e.batch_id,
                                         line=e.line, rank=e.rank, sampled=e.sampled,
                                         draw_key=e.draw_key)

    async def GetPetition(
        self, request: intake_pb2.GetPetitionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> intake_pb2.Petition:
        return convert.petition_to_pb(await repository.get_petition(self._pool, request.petition_id))


def parse_instant(text: str, field: str) -> datetime | None:
    """An ISO timestamp (UTC when it has no zone) or date (its end, UTC); "" is None."""
    text = text.strip()
    if not text:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time.max, UTC)
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"{field} {text!r} is not an ISO date or timestamp") from None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def expected_counties(names: Iterable[str]) -> tuple[str, ...]:
    """Canonical, sorted and without repeats; InvalidArgument for an empty name."""
    out = set()
    for i, name in enumerate(names):
        county = canonical_county(name)
        if not county:
            raise InvalidArgument(f"counties[{i}] is empty")
        out.add(county)
    return tuple(sorted(out))
