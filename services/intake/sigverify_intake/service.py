"""IntakeService: the gRPC face of intake."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, date, datetime, time
from typing import Any

import asyncpg
import grpc
from google.protobuf.message import DecodeError

from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify_common import auth, kafka
from sigverify_common.convert import method_from_pb, parse_uuid, policy_from_pb, rules_from_pb
from sigverify_common.errors import InvalidArgument
from sigverify_common.vocab import Counties
from sigverify_intake import convert, domain, filings, repository, upload

log = logging.getLogger(__name__)


#: Batches stored at the same time (each holds a database connection for its upload; the
#: pool has 8); further uploads wait their turn.
MAX_UPLOADS = 4
#: Petition ids, titles, seeds and reasons, in characters.
MAX_TEXT = 200
MAX_TITLE = 1_000


def _text(value: str, name: str, limit: int = MAX_TEXT, required: bool = True) -> str:
    text = domain.check_text(value, name, limit)
    if required and not text:
        raise InvalidArgument(f"{name} is required")
    return text


async def _decoded(stream: AsyncIterator[intake_pb2.SubmitBatchRequest]
                   ) -> AsyncIterator[intake_pb2.SubmitBatchRequest]:
    """The stream's messages; one that does not decode (not protobuf, or a string that is not
    UTF-8) is the caller's error, not ours."""
    while True:
        try:
            msg = await anext(stream)
        except StopAsyncIteration:
            return
        except DecodeError:
            raise InvalidArgument("a message of the batch is not a valid SubmitBatchRequest "
                                  "(strings must be UTF-8): nothing stored") from None
        yield msg


async def _parts(stream: AsyncIterator[intake_pb2.SubmitBatchRequest]
                 ) -> AsyncIterator[upload.Part]:
    """The messages after the header, as rows (read lazily) and the end."""
    async for msg in stream:
        which = msg.WhichOneof("part")
        if which == "rows":
            yield ((r.record, r.values, r.unreadable) for r in msg.rows.rows)
        elif which == "end":
            yield upload.End(msg.end.rows)
        elif which == "header":
            raise InvalidArgument("a batch has exactly one header")
        else:
            raise InvalidArgument("an empty message in the batch's stream")


class IntakeService(intake_pb2_grpc.IntakeServiceServicer):
    def __init__(self, pool: asyncpg.Pool, outbox: kafka.OutboxPublisher | None,
                 counties: Counties | None = None) -> None:
        self._pool = pool
        self._outbox = outbox
        self._counties = counties if counties is not None else Counties()
        self._uploads = asyncio.Semaphore(MAX_UPLOADS)

    def county(self, name: str, field: str = "county") -> str:
        """The canonical name of a configured county; InvalidArgument naming any other."""
        return domain.known_county(self._counties, name, field)

    async def SubmitBatch(
        self, request_iterator: AsyncIterator[intake_pb2.SubmitBatchRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> intake_pb2.BatchReceipt:
        stream = _decoded(aiter(request_iterator))
        first = await anext(stream, None)
        if first is None:
            raise InvalidArgument("empty stream: no batch header")
        if not first.HasField("header"):
            raise InvalidArgument("the first message of a batch must be its header")
        h = first.header
        county = self.county(h.county, "header.county")
        # Refuse another county's batch at its header, before reading its rows.
        auth.require_county(county, "submit a batch for")
        header = upload.Header(
            petition_id=_text(h.petition_id, "header.petition_id"), county=county,
            client_key=_text(h.client_batch_key, "header.client_batch_key",
                             domain.MAX_KEY_CHARS, required=False),
            filename=_text(h.filename, "header.filename", domain.MAX_FILENAME_CHARS,
                           required=False),
            columns=tuple(h.columns))
        domain.check_columns(header.columns)  # a header that cannot be read: refused now
        async with self._uploads, self._pool.acquire() as conn:
            receipt = await upload.receive(conn, header, _parts(stream),
                                           convert.signature_events, auth.actor("system:intake"))
        if self._outbox is not None and not receipt.resubmission:
            self._outbox.wake.set()
        log.info(
            "batch %s petition=%s county=%s rows=%d accepted=%d rejected=%d resubmission=%s",
            receipt.batch_id, header.petition_id, county, receipt.rows_received,
            receipt.signatures_accepted, receipt.rows_rejected, receipt.resubmission,
        )
        return convert.receipt_to_pb(receipt)

    async def GetBatch(
        self, request: intake_pb2.GetBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> intake_pb2.BatchReceipt:
        batch_id = parse_uuid(_text(request.batch_id, "batch_id", 64), "batch_id")
        if request.rejections_offset < 0 or request.rejections_limit < 0:
            raise InvalidArgument("rejections_offset and rejections_limit cannot be negative")
        limit = request.rejections_limit or repository.RECEIPT_REJECTIONS
        receipt = await repository.get_batch(
            self._pool, batch_id, min(request.rejections_offset, 2**31 - 1),
            min(limit, repository.RECEIPT_REJECTIONS))
        auth.require_county(receipt.county, "read a batch of")
        return convert.receipt_to_pb(receipt)

    async def CreatePetition(
        self, request: intake_pb2.CreatePetitionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> intake_pb2.Petition:
        pid = _text(request.petition_id, "petition_id")
        title = _text(request.title, "title", MAX_TITLE, required=False)
        if request.required_signatures <= 0:
            raise InvalidArgument("required_signatures must be positive")
        try:
            deadline = domain.parse_date(_text(request.deadline, "deadline", 20))
        except ValueError:
            deadline = None
        if deadline is None:
            raise InvalidArgument(f"deadline {domain.shown(request.deadline)} is not a date "
                                  "of the form YYYY-MM-DD")
        row = await repository.create_petition(
            self._pool, pid, title or pid, request.required_signatures, deadline,
            actor=auth.actor("system:intake"), policy=policy_from_pb(request.duplicate_policy),
            accept_online=request.accept_online, method=method_from_pb(request.method),
            rules=rules_from_pb(request.sampling),
            filing_closes_at=parse_instant(request.filing_closes_at, "filing_closes_at"),
            counties=expected_counties(self._counties, request.counties),
        )
        return convert.petition_to_pb(row)

    async def SetVerificationMethod(
        self, request: intake_pb2.SetVerificationMethodRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> intake_pb2.Petition:
        reason = _text(request.reason, "reason", MAX_TITLE, required=False)
        if not reason:
            raise InvalidArgument("reason is required: it goes into the audit log")
        row = await filings.set_method(
            self._pool, _text(request.petition_id, "petition_id"), method_from_pb(request.method),
            rules_from_pb(request.sampling), reason, auth.actor("system:intake"))
        if self._outbox is not None:
            self._outbox.wake.set()
        return convert.petition_to_pb(row)

    async def CloseCounty(
        self, request: intake_pb2.CloseCountyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> intake_pb2.CountyFiling:
        pid = _text(request.petition_id, "petition_id")
        county = self.county(request.county)
        auth.require_county(county, "close the filing of")
        filing, closed_now = await filings.close_county(
            self._pool, pid, county, _text(request.seed, "seed", required=False),
            auth.actor("system:intake"))
        if closed_now and self._outbox is not None:
            self._outbox.wake.set()
        return convert.filing_to_pb(filing)

    async def ListCounties(
        self, request: intake_pb2.ListCountiesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> intake_pb2.ListCountiesResponse:
        found = await filings.list_counties(self._pool, _text(request.petition_id, "petition_id"))
        return intake_pb2.ListCountiesResponse(counties=[convert.filing_to_pb(f) for f in found])

    async def ListSample(
        self, request: intake_pb2.ListSampleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[intake_pb2.SampleEntry]:
        pid = _text(request.petition_id, "petition_id")
        county = self.county(request.county)
        async for e in filings.sample_entries(self._pool, pid, county,
                                              request.include_unsampled):
            yield intake_pb2.SampleEntry(signature_id=e.signature_id, batch_id=e.batch_id,
                                         line=e.line, rank=e.rank, sampled=e.sampled,
                                         draw_key=e.draw_key)

    async def GetPetition(
        self, request: intake_pb2.GetPetitionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> intake_pb2.Petition:
        return convert.petition_to_pb(await repository.get_petition(
            self._pool, _text(request.petition_id, "petition_id")))


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
        raise InvalidArgument(f"{field} {domain.shown(text)} is not an ISO date or timestamp"
                              ) from None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def expected_counties(counties: Counties, names: Iterable[str]) -> tuple[str, ...]:
    """Canonical, sorted and without repeats; InvalidArgument for an empty or unknown name."""
    return tuple(sorted({domain.known_county(counties, name, f"counties[{i}]")
                         for i, name in enumerate(names)}))
