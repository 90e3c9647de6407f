"""Matching's edge: events and RPC messages to and from domain values."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import date
from typing import Any

import numpy as np
import orjson
from asyncpg import Record

from sigverify.common.v1 import common_pb2
from sigverify.events.v1 import events_pb2
from sigverify.matching.v1 import matching_pb2
from sigverify_common import ids
from sigverify_common.convert import (
    date_text,
    decision_to_pb,
    reason_to_pb,
    source_to_pb,
)
from sigverify_common.errors import InvalidArgument
from sigverify_common.fields import check_text, shown
from sigverify_common.topics import SIGNATURE_MATCHED
from sigverify_common.vocab import Decision, Reason, Source
from sigverify_matching.domain import MatchConfig, MatchResult, ScoredCandidate, SignatureInput
from sigverify_matching.fs import COMPARISONS, HAS_MISSING, LEVELS
from sigverify_matching.store import StoredModel

#: The longest value each printed field of a MatchSignature request may hold, in characters:
#: intake's limits for the same columns of a batch (sigverify_intake.domain.FIELD_LIMITS and
#: MAX_COUNTY_CHARS), so that anything intake accepts can be matched on request too. A name's
#: comparison costs the square of its length (a 300,000-character first name took ~19 s of a
#: worker thread, which went on after the caller's deadline), and the engine keeps a name's
#: length in 16 bits.
PRINTED_LIMITS: dict[str, int] = {
    "first_name": 200, "middle_name": 200, "last_name": 200, "street": 300, "unit": 100,
    "city": 100, "zip": 20, "county": 100, "signed_on": 20, "birth_date": 20,
}

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def check_printed(p: common_pb2.PrintedSignature, prefix: str = "printed.") -> None:
    """InvalidArgument naming the first printed field that is too long or holds a NUL."""
    for name, limit in PRINTED_LIMITS.items():
        check_text(getattr(p, name), prefix + name, limit)


def parse_printed_date(text: str, field: str) -> date | None:
    """YYYY-MM-DD (around spaces) or empty, as intake reads a batch's dates; InvalidArgument
    naming ``field`` for anything else."""
    t = text.strip()
    if not t:
        return None
    if _DATE.fullmatch(t):
        try:
            return date.fromisoformat(t)
        except ValueError:
            pass
    raise InvalidArgument(f"{field} {shown(t, 20)} is not a date of the form YYYY-MM-DD")


def printed_input(p: common_pb2.PrintedSignature, deadline: date | None) -> SignatureInput:
    """A MatchSignature request's printed signature (its fields checked by ``check_printed``)."""
    return SignatureInput(
        first_name=p.first_name, middle_name=p.middle_name, last_name=p.last_name,
        street=p.street, unit=p.unit, city=p.city, zip=p.zip, county=p.county,
        signed_on=parse_printed_date(p.signed_on, "printed.signed_on"),
        birth_date=parse_printed_date(p.birth_date, "printed.birth_date"),
        deadline=deadline,
    )


def row_input(r: Mapping[str, Any] | Record, deadline: date | None) -> SignatureInput:
    """A stored ``intake.signatures`` row (a record as read) as the matcher reads it."""
    return SignatureInput(
        first_name=r["first_name"], middle_name=r["middle_name"], last_name=r["last_name"],
        street=r["street"], unit=r["unit"], city=r["city"], zip=r["zip"], county=r["county"],
        signed_on=r["signed_on"], birth_date=r["birth_date"], deadline=deadline,
    )


def candidate_to_pb(c: ScoredCandidate) -> common_pb2.Candidate:
    return common_pb2.Candidate(
        voter_id=c.voter_id, score=c.score, county=c.county, field_scores=c.field_scores,
        match_weight=c.weight,
        evidence=[common_pb2.FieldEvidence(field=f, level=lvl, weight=w)
                  for f, lvl, w in c.evidence])


def candidates_json(candidates: tuple[ScoredCandidate, ...]) -> str:
    """The candidates as ``matching.decisions.candidates`` keeps them (read back by
    ``candidates_from_json``). orjson: the standard library's encoder took ~45 µs of a
    decision's ~250 µs."""
    return orjson.dumps([{"voter_id": c.voter_id, "county": c.county, "score": c.score,
                          "field_scores": c.field_scores, "weight": c.weight,
                          "evidence": c.evidence} for c in candidates]).decode()


def matched_event(m: events_pb2.SignatureReceived, r: MatchResult, match_revision: int = 0
                  ) -> tuple[str, bytes, bytes]:
    """The SignatureMatched outbox row, keyed by voter id (signature id when none)."""
    event = events_pb2.SignatureMatched(
        event_id=ids.event_id(), signature_id=m.signature_id, petition_id=m.petition_id,
        batch_id=m.batch_id, county=m.county, line=m.line, circulator_id=m.circulator_id,
        signed_on=m.signed_on, decision=decision_to_pb(r.decision),
        reason=reason_to_pb(r.reason), voter_id=r.voter_id, score=r.score, source=m.source,
        received_seq=m.received_seq, match_revision=match_revision,
    )
    # Each candidate as events carry it: who, where, how likely, the total weight. The
    # waterfall stays in ``matching.decisions`` (explain and review read it there): dedupe
    # does not need it, and an event is built for every signature. Added in place: a fifth
    # cheaper than a list of new messages.
    for c in r.candidates:
        event.candidates.add(voter_id=c.voter_id, score=c.score, county=c.county,
                             match_weight=c.weight)
    key = (r.voter_id or m.signature_id).encode()
    return SIGNATURE_MATCHED.name, key, SIGNATURE_MATCHED.encode(event)


def response_to_pb(r: MatchResult, version: int) -> matching_pb2.MatchSignatureResponse:
    return matching_pb2.MatchSignatureResponse(
        decision=decision_to_pb(r.decision), reason=reason_to_pb(r.reason), voter_id=r.voter_id,
        score=r.score, candidates=[candidate_to_pb(c) for c in r.candidates], roll_version=version,
    )


def candidates_from_json(text: str) -> tuple[ScoredCandidate, ...]:
    """Stored candidates (older decisions have only voter, county, score and field scores)."""
    out = []
    for c in json.loads(text):
        evidence = tuple((str(f), str(lvl), float(w)) for f, lvl, w in c.get("evidence", ()))
        out.append(ScoredCandidate(voter_id=c["voter_id"], county=c["county"], score=c["score"],
                                   field_scores=c.get("field_scores", {}),
                                   weight=float(c.get("weight", 0.0)), evidence=evidence))
    return tuple(out)


def explanation_to_pb(r: Mapping[str, Any], config: MatchConfig) -> matching_pb2.Explanation:
    candidates = candidates_from_json(r["candidates"])
    prior = next((w for c in candidates[:1] for f, _, w in c.evidence if f == "prior"), 0.0)
    return matching_pb2.Explanation(
        signature_id=str(r["signature_id"]), petition_id=r["petition_id"],
        decision=decision_to_pb(Decision(r["decision"])), reason=reason_to_pb(Reason(r["reason"])),
        voter_id=r["voter_id"], score=r["score"],
        candidates=[candidate_to_pb(c) for c in candidates],
        roll_version=r["roll_version"], decided_at=r["decided_at"].isoformat(),
        accept_threshold=config.accept_threshold, review_threshold=config.review_threshold,
        model_id=r.get("model_id", 0) or 0, prior_weight=prior,
    )


def model_to_pb(s: StoredModel) -> matching_pb2.ModelInfo:
    m = s.model
    t = m.trained
    in_county = m.pair_priors(np.array([True]), np.array([max(1, m.voters // 10)]))
    other = m.pair_priors(np.array([False]), np.array([max(1, m.voters // 10)]))
    tables = m.tables()
    comparisons = []
    for c in COMPARISONS:
        lm, lu = tables[c]
        comparisons.append(matching_pb2.ComparisonInfo(comparison=c, levels=[
            matching_pb2.LevelInfo(level=name, m=m.m[c][i], u=m.u[c][i],
                                   weight=0.0 if i == 0 and c in HAS_MISSING
                                   else float(lm[i] - lu[i]))
            for i, name in enumerate(LEVELS[c])]))
    return matching_pb2.ModelInfo(
        model_id=s.model_id, roll_version=s.roll_version, trained_at=s.trained_at,
        signatures=int(t.get("signatures", s.signatures)),
        candidate_pairs=int(t.get("candidate_pairs", 0)), random_pairs=int(t.get("u_pairs", 0)),
        em_iterations=int(t.get("em_iterations", 0)), em_converged=bool(t.get("em_converged")),
        registered_share=m.registered_share, in_county_share=m.in_county_share,
        voters=m.voters, comparisons=comparisons, prior_in_county=float(in_county[0]),
        prior_other_county=float(other[0]), trained_by=s.trained_by,
        household_share=m.household_share,
        first_name_shared_in_household=m.u_first_household)


def matched_event_from_row(r: Mapping[str, Any]) -> tuple[str, bytes, bytes]:
    """Rebuild a SignatureMatched from a stored decision joined with intake's signature row."""
    received = events_pb2.SignatureReceived(
        signature_id=str(r["signature_id"]), petition_id=r["petition_id"],
        batch_id=str(r["batch_id"]), county=r["county"], line=r["line"],
        circulator_id=r["circulator_id"], source=source_to_pb(Source(r["source"])),
        received_seq=r["received_seq"], signed_on=date_text(r["signed_on"]),
    )
    result = MatchResult(
        decision=Decision(r["decision"]), reason=Reason(r["reason"]), voter_id=r["voter_id"],
        score=r["score"],
        candidates=candidates_from_json(r["candidates"]),
    )
    return matched_event(received, result, r["match_revision"])
