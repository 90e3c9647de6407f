"""IntakeService: the gRPC face of intake."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import asyncpg
import grpc
from google.protobuf.message import DecodeError

from sigverify.common.v1 import common_pb2
from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify_common import auth, kafka
from sigverify_common.convert import method_from_pb, parse_uuid, policy_from_pb, rules_from_pb
from sigverify_common.errors import InvalidArgument
from sigverify_common.fields import check_text, shown
from sigverify_common.sampling import Method, SamplingRules
from sigverify_common.vocab import Counties, DuplicatePolicy
from sigverify_intake import convert, domain, filings, repository, upload

log = logging.getLogger(__name__)


#: Batches stored at the same time (each holds a database connection for its upload; the
#: pool has 8); further uploads wait their turn.
MAX_UPLOADS = 4
#: Petition ids, titles, seeds and reasons, in characters.
MAX_TEXT = 200
MAX_TITLE = 1_000


def _text(value: str, name: str, limit: int = MAX_TEXT, required: bool = True) -> str:
    text = check_text(value, name, limit)
    if required and not text:
        raise InvalidArgument(f"{name} is required")
    return text


#: A petition's dates (deadline, filing_closes_at): a date outside these years is a typo
#: (0001-01-01 and 1900-01-01 were accepted).
FIRST_YEAR, LAST_YEAR = 2000, 2100
#: ``sampling.minimum_sample``: a PostgreSQL integer (2^63-1 was an INTERNAL error).
MAX_MINIMUM_SAMPLE = 2**31 - 1
#: The sampling percentages (request field: SamplingRules attribute): their texts, in
#: characters; their decimal places and highest value (PostgreSQL's numeric holds neither
#: 1e-99999 nor 1e99999: they were INTERNAL errors).
PERCENTS = {"sample_percent": "percent", "fail_below_percent": "fail_below",
            "qualify_above_percent": "qualify_above"}
MAX_PERCENT_CHARS = 40
MAX_PERCENT_PLACES = 6
MAX_PERCENT = Decimal(1_000_000)


def new_petition_id(value: str) -> str:
    """A new petition's id: InvalidArgument naming ``petition_id`` when it is empty, too long,
    has white space at either end (it was stripped without a word) or holds a character that
    is not printable (a newline, a tab, a NUL, a Unicode line separator) or a '/' (the id is
    shown in terminals, logs and reports and goes into metric labels)."""
    pid = check_text(value, "petition_id", MAX_TEXT)
    if not pid:
        raise InvalidArgument("petition_id is required")
    if pid != value:
        raise InvalidArgument(f"petition_id {shown(value)} begins or ends with white space")
    bad = next((c for c in pid if c == "/" or not c.isprintable()), None)
    if bad is not None:
        raise InvalidArgument(
            f"petition_id {shown(value)} contains {bad!r} (U+{ord(bad):04X}); a petition id "
            "is printable characters other than '/': letters, digits, punctuation, and spaces "
            "inside it")
    return pid


def _enum(value: int, enum: Any, field: str, parse: Any) -> Any:
    """``parse(value)``; InvalidArgument naming ``field`` and the values allowed when
    ``value`` is not one of ``enum``'s numbers (it was an INTERNAL error)."""
    try:
        return parse(value)
    except (ValueError, KeyError):
        allowed = ", ".join(f"{number} ({name})" for name, number in enum.items())
        raise InvalidArgument(f"{field} {value} is not one of {allowed}") from None


def _policy(value: int) -> DuplicatePolicy:
    return _enum(value, common_pb2.DuplicatePolicy, "duplicate_policy",  # type: ignore[no-any-return]
                 policy_from_pb)


def _method(value: int) -> Method:
    return _enum(value, common_pb2.VerificationMethod, "method",  # type: ignore[no-any-return]
                 method_from_pb)


def _rules(pb: common_pb2.SamplingRules) -> SamplingRules:
    """The sampling rules asked for; InvalidArgument naming a field out of range."""
    if not 0 <= pb.minimum_sample <= MAX_MINIMUM_SAMPLE:
        raise InvalidArgument(f"sampling.minimum_sample {pb.minimum_sample:,} is out of range: "
                              f"1 to {MAX_MINIMUM_SAMPLE:,} (0 for California's "
                              "default)")
    for name in PERCENTS:
        check_text(getattr(pb, name), f"sampling.{name}", MAX_PERCENT_CHARS)
    rules = rules_from_pb(pb)
    for name, attr in PERCENTS.items():
        value: Decimal = getattr(rules, attr)
        exponent = value.normalize().as_tuple().exponent
        if isinstance(exponent, int) and exponent < -MAX_PERCENT_PLACES:
            raise InvalidArgument(f"sampling.{name} {shown(getattr(pb, name).strip())} has more "
                                  f"than {MAX_PERCENT_PLACES} decimal places")
        if value > MAX_PERCENT:
            raise InvalidArgument(f"sampling.{name} {shown(getattr(pb, name).strip())} is over "
                                  f"{MAX_PERCENT:,}")
    return rules


def _in_years(day: date, field: str, text: str) -> None:
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise InvalidArgument(f"{field} {shown(text.strip())} is not between "
                              f"{FIRST_YEAR}-01-01 and {LAST_YEAR}-12-31")


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
        pid = new_petition_id(request.petition_id)
        title = _text(request.title, "title", MAX_TITLE, required=False)
        if request.required_signatures <= 0:
            raise InvalidArgument("required_signatures must be positive")
        try:
            deadline = domain.parse_date(_text(request.deadline, "deadline", 20))
        except ValueError:
            deadline = None
        if deadline is None:
            raise InvalidArgument(f"deadline {shown(request.deadline)} is not a date "
                                  "of the form YYYY-MM-DD")
        _in_years(deadline, "deadline", request.deadline)
        policy, method, rules = (_policy(request.duplicate_policy), _method(request.method),
                                 _rules(request.sampling))
        closes = parse_instant(request.filing_closes_at, "filing_closes_at")
        if closes is not None:
            _in_years(closes.date(), "filing_closes_at", request.filing_closes_at)
        row = await repository.create_petition(
            self._pool, pid, title or pid, request.required_signatures, deadline,
            actor=auth.actor("system:intake"), policy=policy,
            accept_online=request.accept_online, method=method, rules=rules,
            filing_closes_at=closes,
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
            self._pool, _text(request.petition_id, "petition_id"), _method(request.method),
            _rules(request.sampling), reason, auth.actor("system:intake"))
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
        raise InvalidArgument(f"{field} {shown(text)} is not an ISO date or timestamp"
                              ) from None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def expected_counties(counties: Counties, names: Iterable[str]) -> tuple[str, ...]:
    """Canonical, sorted and without repeats; InvalidArgument for an empty or unknown name."""
    return tuple(sorted({domain.known_county(counties, name, f"counties[{i}]")
                         for i, name in enumerate(names)}))
