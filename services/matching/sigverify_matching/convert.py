"""Matching's edge: events and RPC messages to and from domain values."""

from __future__ import annotations

import uuid
from datetime import date

from sigverify.common.v1 import common_pb2
from sigverify.events.v1 import events_pb2
from sigverify.matching.v1 import matching_pb2
from sigverify_common.convert import decision_to_pb, parse_date_text, reason_to_pb
from sigverify_common.topics import SIGNATURE_MATCHED
from sigverify_matching.domain import MatchResult, ScoredCandidate, SignatureInput


def printed_input(p: common_pb2.PrintedSignature, deadline: date | None) -> SignatureInput:
    return SignatureInput(
        first_name=p.first_name, middle_name=p.middle_name, last_name=p.last_name,
        street=p.street, unit=p.unit, city=p.city, zip=p.zip, county=p.county,
        signed_on=parse_date_text(p.signed_on), birth_date=parse_date_text(p.birth_date),
        deadline=deadline,
    )


def signature_input(m: events_pb2.SignatureReceived, deadline: date | None) -> SignatureInput:
    return printed_input(m.printed, deadline)


def candidate_to_pb(c: ScoredCandidate) -> common_pb2.Candidate:
    return common_pb2.Candidate(voter_id=c.voter_id, score=c.score, county=c.county,
                                field_scores=c.field_scores)


def matched_event(m: events_pb2.SignatureReceived, r: MatchResult) -> tuple[str, bytes, bytes]:
    """The SignatureMatched outbox row, keyed by voter id (signature id when none)."""
    event = events_pb2.SignatureMatched(
        event_id=str(uuid.uuid4()), signature_id=m.signature_id, petition_id=m.petition_id,
        batch_id=m.batch_id, county=m.county, line=m.line, circulator_id=m.circulator_id,
        signed_on=m.printed.signed_on, decision=decision_to_pb(r.decision),
        reason=reason_to_pb(r.reason), voter_id=r.voter_id, score=r.score,
        candidates=[candidate_to_pb(c) for c in r.candidates], source=m.source,
        received_seq=m.received_seq,
    )
    key = (r.voter_id or m.signature_id).encode()
    return SIGNATURE_MATCHED.name, key, SIGNATURE_MATCHED.encode(event)


def response_to_pb(r: MatchResult, version: int) -> matching_pb2.MatchSignatureResponse:
    return matching_pb2.MatchSignatureResponse(
        decision=decision_to_pb(r.decision), reason=reason_to_pb(r.reason), voter_id=r.voter_id,
        score=r.score, candidates=[candidate_to_pb(c) for c in r.candidates], roll_version=version,
    )
