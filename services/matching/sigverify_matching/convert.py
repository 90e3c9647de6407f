"""Matching's edge: events and RPC messages to and from domain values."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import date
from typing import Any

from sigverify.common.v1 import common_pb2
from sigverify.events.v1 import events_pb2
from sigverify.matching.v1 import matching_pb2
from sigverify_common.convert import (
    date_text,
    decision_to_pb,
    parse_date_text,
    reason_to_pb,
    source_to_pb,
)
from sigverify_common.topics import SIGNATURE_MATCHED
from sigverify_common.vocab import Decision, Reason, Source
from sigverify_matching.domain import MatchConfig, MatchResult, ScoredCandidate, SignatureInput


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


def matched_event(m: events_pb2.SignatureReceived, r: MatchResult, match_revision: int = 0
                  ) -> tuple[str, bytes, bytes]:
    """The SignatureMatched outbox row, keyed by voter id (signature id when none)."""
    event = events_pb2.SignatureMatched(
        event_id=str(uuid.uuid4()), signature_id=m.signature_id, petition_id=m.petition_id,
        batch_id=m.batch_id, county=m.county, line=m.line, circulator_id=m.circulator_id,
        signed_on=m.printed.signed_on, decision=decision_to_pb(r.decision),
        reason=reason_to_pb(r.reason), voter_id=r.voter_id, score=r.score,
        candidates=[candidate_to_pb(c) for c in r.candidates], source=m.source,
        received_seq=m.received_seq, match_revision=match_revision,
    )
    key = (r.voter_id or m.signature_id).encode()
    return SIGNATURE_MATCHED.name, key, SIGNATURE_MATCHED.encode(event)


def response_to_pb(r: MatchResult, version: int) -> matching_pb2.MatchSignatureResponse:
    return matching_pb2.MatchSignatureResponse(
        decision=decision_to_pb(r.decision), reason=reason_to_pb(r.reason), voter_id=r.voter_id,
        score=r.score, candidates=[candidate_to_pb(c) for c in r.candidates], roll_version=version,
    )


def candidates_from_json(text: str) -> tuple[ScoredCandidate, ...]:
    return tuple(ScoredCandidate(**c) for c in json.loads(text))


def explanation_to_pb(r: Mapping[str, Any], config: MatchConfig) -> matching_pb2.Explanation:
    return matching_pb2.Explanation(
        signature_id=str(r["signature_id"]), petition_id=r["petition_id"],
        decision=decision_to_pb(Decision(r["decision"])), reason=reason_to_pb(Reason(r["reason"])),
        voter_id=r["voter_id"], score=r["score"],
        candidates=[candidate_to_pb(c) for c in candidates_from_json(r["candidates"])],
        roll_version=r["roll_version"], decided_at=r["decided_at"].isoformat(),
        accept_threshold=config.accept_threshold, review_threshold=config.review_threshold,
    )


def matched_event_from_row(r: Mapping[str, Any]) -> tuple[str, bytes, bytes]:
    """Rebuild a SignatureMatched from a stored decision joined with intake's signature row."""
    received = events_pb2.SignatureReceived(
        signature_id=str(r["signature_id"]), petition_id=r["petition_id"],
        batch_id=str(r["batch_id"]), county=r["county"], line=r["line"],
        circulator_id=r["circulator_id"], source=source_to_pb(Source(r["source"])),
        received_seq=r["received_seq"],
        printed=common_pb2.PrintedSignature(signed_on=date_text(r["signed_on"])),
    )
    result = MatchResult(
        decision=Decision(r["decision"]), reason=Reason(r["reason"]), voter_id=r["voter_id"],
        score=r["score"],
        candidates=candidates_from_json(r["candidates"]),
    )
    return matched_event(received, result, r["match_revision"])
