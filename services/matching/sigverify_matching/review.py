"""ReviewService: the human review queue, served by matching (it owns decisions and the roll).

A resolution replaces the matcher's decision in ``matching.decisions`` with a higher
``match_revision`` and publishes a new SignatureMatched through the outbox, so duplicates
and the tally follow exactly as for an automatic decision. Every claim and resolution is
written to the audit log; no voter data goes to the log.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import asyncpg
import grpc

from sigverify.common.v1 import common_pb2
from sigverify.events.v1 import events_pb2
from sigverify.review.v1 import review_pb2, review_pb2_grpc
from sigverify_common import audit, auth, kafka
from sigverify_common.config import counties_var
from sigverify_common.convert import (
    date_text,
    parse_uuid,
    reason_from_pb,
    reason_to_pb,
    source_to_pb,
)
from sigverify_common.errors import FailedPrecondition, InvalidArgument, NotFound
from sigverify_common.fields import MAX_ID_CHARS, check_text, shown
from sigverify_common.vocab import (
    REVIEW_REJECTIONS,
    Counties,
    Decision,
    Reason,
    Source,
    canonical_county,
)
from sigverify_matching import convert
from sigverify_matching.domain import MatchResult, SignatureInput, VoterRecord, eligibility

log = logging.getLogger(__name__)

#: A claim older than this may be taken over by another reviewer.
CLAIM_MINUTES = 30
#: How many items one ListPending answers at most, and when the request names no limit.
MAX_LISTED, DEFAULT_LISTED = 10_000, 50
#: The longest reviewer's note (a 5 MB note was stored, and every later GetReview of the
#: item then broke gRPC's 4 MiB message limit: the item could no longer be viewed).
MAX_NOTE_CHARS = 2_000
#: A reviewer's name as a request gives it (used only when a call carries no token).
MAX_REVIEWER_CHARS = 200
#: How many candidates' voter ids an error names at most.
NAMED_CANDIDATES = 5

_ITEM_SQL = (
    "SELECT r.*, d.score, d.candidates, d.match_revision, s.batch_id, s.county, s.line, "
    "s.circulator_id, s.source, s.received_seq, s.first_name, s.middle_name, s.last_name, "
    "s.street, s.unit, s.city, s.zip, s.signed_on, s.birth_date, p.deadline "
    "FROM matching.reviews r JOIN matching.decisions d USING (signature_id) "
    "JOIN intake.signatures s USING (signature_id) "
    "JOIN intake.petitions p ON p.petition_id = r.petition_id "
)
_STATES = {"pending": review_pb2.REVIEW_STATE_PENDING, "claimed": review_pb2.REVIEW_STATE_CLAIMED,
           "resolved": review_pb2.REVIEW_STATE_RESOLVED}


def _ts(value: Any) -> str:
    return value.isoformat() if value is not None else ""


def item_to_pb(r: asyncpg.Record) -> review_pb2.ReviewItem:
    return review_pb2.ReviewItem(
        signature_id=str(r["signature_id"]), petition_id=r["petition_id"],
        batch_id=str(r["batch_id"]), county=r["county"], line=r["line"],
        circulator_id=r["circulator_id"],
        printed=common_pb2.PrintedSignature(
            first_name=r["first_name"], middle_name=r["middle_name"], last_name=r["last_name"],
            street=r["street"], unit=r["unit"], city=r["city"], zip=r["zip"], county=r["county"],
            signed_on=date_text(r["signed_on"]), birth_date=date_text(r["birth_date"])),
        score=r["score"],
        candidates=[convert.candidate_to_pb(c) for c in convert.candidates_from_json(r["candidates"])],
        state=_STATES[r["state"]], claimed_by=r["claimed_by"] or "", claimed_at=_ts(r["claimed_at"]),
        resolved_by=r["resolved_by"] or "", resolved_at=_ts(r["resolved_at"]),
        voter_id=r["voter_id"] or "",
        reason=reason_to_pb(Reason(r["reason"])) if r["reason"] else common_pb2.REASON_UNSPECIFIED,
        note=r["note"],
    )


def unknown_county(counties: Counties, text: str) -> InvalidArgument:
    """The error for a county that is not one of ``counties`` (as intake words it)."""
    hint = counties.suggest(text)
    return InvalidArgument(
        f"county: unknown county {shown(text)}, not one of the {len(counties)} configured counties"
        + (f" (did you mean {hint!r}?)" if hint else ""))


def resolution_reason(voter: VoterRecord, county: str, sig: SignatureInput) -> Reason:
    """What a signature resolved to ``voter`` counts as: the matcher's eligibility rules,
    and the section's county (a reviewer may name a voter of another county)."""
    if canonical_county(voter.county) != canonical_county(county):
        return Reason.WRONG_COUNTY
    return eligibility(voter, sig)


def parse_signature_id(text: str) -> uuid.UUID:
    """A request's signature id: its length checked before it is parsed (an error quoting a
    20,000-character id whole broke gRPC's 16 KiB limit on trailing metadata)."""
    if not text.strip():
        raise InvalidArgument("signature_id is required")
    return parse_uuid(text, "signature_id")


def caller(reviewer: str) -> str:
    """Who acts: the token's id. The request's ``reviewer`` is documented (review.proto, and
    the CLI's --reviewer) as informational, used only by a call without a token; it is checked
    all the same, so that nothing unreadable is ever stored."""
    return auth.actor(check_text(reviewer, "reviewer", MAX_REVIEWER_CHARS) or "local")


def rejection_reason(number: int) -> Reason:
    """The reason of a resolution as invalid: INVALID_ARGUMENT naming the field and the
    reasons a reviewer may give for a number outside the enum or a reason that is not one."""
    allowed = ", ".join(sorted(r.value for r in REVIEW_REJECTIONS))
    try:
        reason = reason_from_pb(number)
    except ValueError:
        reason = None
    if reason is None or reason not in REVIEW_REJECTIONS:
        given = (reason.value if reason is not None else
                 "unset (0)" if number == common_pb2.REASON_UNSPECIFIED else
                 f"{number}, not a known reason,")
        raise InvalidArgument(f"invalid_reason {given} is not a reason a reviewer may give; "
                              f"use one of {allowed}")
    return reason


class ReviewService(review_pb2_grpc.ReviewServiceServicer):
    def __init__(self, pool: asyncpg.Pool, outbox: kafka.OutboxPublisher | None,
                 counties: Counties | None = None) -> None:
        self._pool = pool
        self._outbox = outbox
        self._counties = (counties if counties is not None
                          else Counties(counties_var(os.environ)))

    async def _listed_county(self, petition_id: str, text: str) -> str:
        """The county a list is narrowed to ("" for all): NOT_FOUND for a petition that does
        not exist, INVALID_ARGUMENT for a county that is not one (unless the petition has
        signatures stored under that name: matching's COUNTIES may differ from intake's)."""
        if len(text) > 100 or "\x00" in text:
            raise InvalidArgument("county is not a county name (over 100 characters or "
                                  "holding a NUL)")
        county = canonical_county(text)
        if not await self._pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM intake.petitions WHERE petition_id = $1)",
                petition_id):
            raise NotFound(f"no petition {shown(petition_id)}")
        if not county or self._counties.resolve(county) is not None:
            return county
        if await self._pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM intake.signatures WHERE petition_id = $1 "
                "AND county = $2)", petition_id, county):
            return county
        raise unknown_county(self._counties, text.strip())

    async def _item(self, conn: asyncpg.Pool | Any, sid: Any) -> asyncpg.Record:
        row = await conn.fetchrow(_ITEM_SQL + "WHERE r.signature_id = $1", sid)
        if row is None:
            raise NotFound(f"signature {sid} is not in the review queue")
        return row

    async def ListPending(
        self, request: review_pb2.ListPendingRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> review_pb2.ListPendingResponse:
        if not request.petition_id:
            raise InvalidArgument("petition_id is required")
        check_text(request.petition_id, "petition_id", MAX_ID_CHARS)
        if request.limit < 0 or request.limit > MAX_LISTED:
            raise InvalidArgument(f"limit must be from 1 to {MAX_LISTED:,} (0: {DEFAULT_LISTED})")
        county = await self._listed_county(request.petition_id, request.county)
        states = ["pending", "claimed"] if request.include_claimed else ["pending"]
        where = ("WHERE r.petition_id = $1 AND (r.state = ANY($2::text[]) OR (r.state = 'claimed' "
                 "AND r.claimed_at < now() - make_interval(mins => $5))) "
                 "AND ($3 = '' OR s.county = $3) ")
        rows = await self._pool.fetch(_ITEM_SQL + where + "ORDER BY s.received_seq LIMIT $4",
                                      request.petition_id, states, county,
                                      request.limit or DEFAULT_LISTED,
                                      CLAIM_MINUTES)
        total = await self._pool.fetchval(
            "SELECT count(*) FROM matching.reviews r JOIN intake.signatures s USING (signature_id) "
            "WHERE r.petition_id = $1 AND r.state <> 'resolved' AND ($2 = '' OR s.county = $2)",
            request.petition_id, county)
        return review_pb2.ListPendingResponse(items=[item_to_pb(r) for r in rows],
                                              total_pending=total)

    async def GetReview(
        self, request: review_pb2.GetReviewRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> review_pb2.ReviewItem:
        return item_to_pb(await self._item(self._pool, parse_signature_id(request.signature_id)))

    async def ClaimReview(
        self, request: review_pb2.ClaimReviewRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> review_pb2.ReviewItem:
        sid = parse_signature_id(request.signature_id)
        who = caller(request.reviewer)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._item(conn, sid)
            claimed = await conn.fetchval(
                "UPDATE matching.reviews SET state = 'claimed', claimed_by = $2, claimed_at = now() "
                "WHERE signature_id = $1 AND (state = 'pending' OR (state = 'claimed' AND "
                "(claimed_by = $2 OR claimed_at < now() - make_interval(mins => $3)))) "
                "RETURNING 1", sid, who, CLAIM_MINUTES)
            if not claimed:
                raise FailedPrecondition(
                    f"signature {sid} is {row['state']}"
                    + (f" by {row['claimed_by']}" if row["state"] == "claimed" else ""))
            await audit.record(conn, who, "review.claimed", str(sid),
                               {"petition_id": row["petition_id"]})
            return item_to_pb(await self._item(conn, sid))

    async def ResolveReview(
        self, request: review_pb2.ResolveReviewRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> review_pb2.ReviewItem:
        sid = parse_signature_id(request.signature_id)
        who = caller(request.reviewer)
        note = check_text(request.note, "note", MAX_NOTE_CHARS)
        outcome = request.WhichOneof("outcome")
        if outcome is None:
            raise InvalidArgument("a resolution names a voter_id or an invalid_reason")
        named = check_text(request.voter_id, "voter_id", MAX_ID_CHARS)
        if outcome == "voter_id" and not named:
            raise InvalidArgument("voter_id is empty: name the voter who signed, or give an "
                                  "invalid_reason")
        rejection = rejection_reason(request.invalid_reason) if outcome == "invalid_reason" else None
        off_candidates = False
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM matching.reviews WHERE signature_id = $1 FOR UPDATE", sid)
            row = await self._item(conn, sid)
            if row["state"] == "resolved":
                raise FailedPrecondition(f"signature {sid} was already resolved by {row['resolved_by']}")
            if row["state"] == "claimed" and row["claimed_by"] != who and await conn.fetchval(
                "SELECT $1::timestamptz > now() - make_interval(mins => $2)",
                row["claimed_at"], CLAIM_MINUTES,
            ):
                raise FailedPrecondition(f"signature {sid} is claimed by {row['claimed_by']}")
            if outcome == "voter_id":
                voter = await conn.fetchrow(
                    "SELECT voter_id, first_name, middle_name, last_name, suffix, birth_date, "
                    "street, unit, city, zip, county, status, registered_on FROM matching.voters "
                    "WHERE voter_id = $1 AND version = (SELECT max(version) FROM "
                    "matching.roll_versions WHERE state = 'active')", named)
                if voter is None:
                    raise NotFound(f"voter_id: no voter {shown(named)} in the active roll")
                proposed = [c.voter_id for c in convert.candidates_from_json(row["candidates"])]
                off_candidates = named not in proposed
                if off_candidates and not note:
                    listed = ", ".join(proposed[:NAMED_CANDIDATES]) + (
                        ", ..." if len(proposed) > NAMED_CANDIDATES else "")
                    raise InvalidArgument(
                        f"voter_id {shown(named)} is not one of the signature's "
                        f"{len(proposed)} candidates" + (f" ({listed})" if proposed else "")
                        + ": to resolve it as a voter the matcher did not propose, give a note "
                        "saying how the signer was found")
                sig = SignatureInput(
                    first_name=row["first_name"], middle_name=row["middle_name"],
                    last_name=row["last_name"], street=row["street"], unit=row["unit"],
                    city=row["city"], zip=row["zip"], county=row["county"],
                    signed_on=row["signed_on"], birth_date=row["birth_date"],
                    deadline=row["deadline"])
                reason = resolution_reason(VoterRecord(**dict(voter)), row["county"], sig)
                decision, voter_id = Decision.MATCH, named
            else:
                assert rejection is not None
                reason, decision, voter_id = rejection, Decision.NO_MATCH, ""
            revision = await conn.fetchval(
                "UPDATE matching.decisions SET decision = $2, reason = $3, voter_id = $4, "
                "match_revision = match_revision + 1 WHERE signature_id = $1 "
                "RETURNING match_revision", sid, decision.value, reason.value, voter_id)
            await conn.execute(
                "UPDATE matching.reviews SET state = 'resolved', resolved_by = $2, "
                "resolved_at = now(), voter_id = $3, reason = $4, note = $5 "
                "WHERE signature_id = $1", sid, who, voter_id, reason.value, note)
            received = events_pb2.SignatureReceived(
                signature_id=str(sid), petition_id=row["petition_id"], batch_id=str(row["batch_id"]),
                county=row["county"], line=row["line"], circulator_id=row["circulator_id"],
                source=source_to_pb(Source(row["source"])), received_seq=row["received_seq"],
                signed_on=date_text(row["signed_on"]))
            result = MatchResult(decision=decision, reason=reason, voter_id=voter_id,
                                 score=row["score"],
                                 candidates=convert.candidates_from_json(row["candidates"]))
            await kafka.enqueue(conn, "matching", [convert.matched_event(received, result, revision)])
            await audit.record(conn, who, "review.resolved", str(sid), {
                "petition_id": row["petition_id"], "outcome": decision.value,
                "reason": reason.value, "voter_id": voter_id, "match_revision": revision,
                **({"among_candidates": not off_candidates} if voter_id else {})})
            item = item_to_pb(await self._item(conn, sid))
        if self._outbox is not None:
            self._outbox.wake.set()
        log.info("review of %s resolved: %s %s%s", sid, decision.value, reason.value,
                 " (a voter not among its candidates)" if off_candidates else "")
        return item
