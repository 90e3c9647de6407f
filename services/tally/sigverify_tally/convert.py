"""Tally's edge: events in, Tally and SignatureResult messages out."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from sigverify.common.v1 import common_pb2
from sigverify.events.v1 import events_pb2
from sigverify.tally.v1 import tally_pb2
from sigverify_common.convert import (
    method_to_pb,
    reason_from_pb,
    reason_to_pb,
    status_from_pb,
    status_to_pb,
)
from sigverify_common.vocab import Reason, Status
from sigverify_tally import flags
from sigverify_tally.domain import Counts, days_to_deadline, progress_percent
from sigverify_tally.invariants import CheckResult
from sigverify_tally.projection import Outcome
from sigverify_tally.repository import ResultRow, TallySnapshot
from sigverify_tally.statutory import LABEL, Assessment, CountyFigures, Stage


def result_from_event(e: events_pb2.SignatureVerified) -> ResultRow:
    return ResultRow(
        signature_id=e.signature_id, petition_id=e.petition_id,
        batch_id=e.batch_id, county=e.county, line=e.line,
        circulator_id=e.circulator_id, status=status_from_pb(e.status),
        reason=reason_from_pb(e.reason), voter_id=e.voter_id, score=e.score, revision=e.revision,
    )


def counts_to_pb(c: Counts) -> tally_pb2.Counts:
    return tally_pb2.Counts(
        received=c.received, verified=c.verified, valid=c.valid, invalid=c.invalid,
        review=c.review, pending=c.pending, duplicates=c.duplicates,
        invalid_by_reason=reasons_to_pb(c.by_reason), not_sampled=c.not_sampled,
    )


def reasons_to_pb(by_reason: dict[Reason, int]) -> list[tally_pb2.ReasonCount]:
    return [tally_pb2.ReasonCount(reason=reason_to_pb(r), count=n)
            for r, n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0].value))]


def check_to_pb(c: flags.CirculatorCheck) -> tally_pb2.CirculatorCheck:
    return tally_pb2.CirculatorCheck(
        county=c.county, circulator_id=c.circulator_id, counts=counts_to_pb(c.counts),
        decided=c.decided, suspect=c.suspect, suspect_by_reason=reasons_to_pb(c.suspect_by_reason),
        rate=c.rate, others_rate=c.others_rate, county_rate=c.county_rate, p_value=c.p_value,
        q_value=c.q_value, tested=c.tested, flagged=c.flagged,
    )


FLAG_POLICY = tally_pb2.FlagPolicy(
    test=flags.TEST_NAME, suspect_reasons=sorted(flags.SUSPECT_REASONS),
    min_decided=flags.MIN_DECIDED, min_ratio=flags.MIN_RATIO, fdr=flags.FDR,
)


def tally_to_pb(s: TallySnapshot, now: datetime | None = None) -> tally_pb2.Tally:
    now = now or datetime.now(UTC)
    checks = flags.check_circulators(s.by_county_circulator)

    def groups(d: dict[str, Counts]) -> list[tally_pb2.GroupCounts]:
        return [tally_pb2.GroupCounts(key=k, counts=counts_to_pb(v)) for k, v in sorted(d.items())]

    return tally_pb2.Tally(
        petition_id=s.petition.petition_id, title=s.petition.title,
        required_signatures=s.petition.required, deadline=s.petition.deadline.isoformat(),
        days_to_deadline=days_to_deadline(s.petition.deadline, now.date()),
        total=counts_to_pb(s.total),
        progress_percent=progress_percent(s.total.valid, s.petition.required),
        by_county=groups(s.by_county), by_batch=groups(s.by_batch),
        by_circulator=groups(s.by_circulator), rows_rejected=s.rows_rejected,
        as_of=now.isoformat(), flagged_circulators=[check_to_pb(c) for c in checks if c.flagged],
        circulators=[check_to_pb(c) for c in checks], flag_policy=FLAG_POLICY,
        method=method_to_pb(s.statutory.method) if s.statutory
        else common_pb2.VERIFICATION_METHOD_UNSPECIFIED,
        statutory=statutory_to_pb(s.statutory) if s.statutory else None,
    )


def _outcome(o: Outcome | None) -> tally_pb2.Outcome.ValueType:
    return tally_pb2.Outcome.Value(f"OUTCOME_{o.value}") if o else tally_pb2.OUTCOME_PENDING


def county_to_pb(f: CountyFigures) -> tally_pb2.CountyProjection:
    p = f.projection
    out = tally_pb2.CountyProjection(
        county=f.county, raw=f.raw, closed=f.closed, sample_size=f.sample_size,
        sample_verified=f.sample_verified, valid_in_sample=f.valid_in_sample,
        duplicates_in_sample=f.duplicates_in_sample, complete=f.complete, counted=f.counted,
        seed=f.seed)
    if p is not None:
        out.rate_percent, out.v, out.a, out.b = str(p.rate_percent), p.v, str(p.a), str(p.b)
        out.c, out.projected = p.c, p.projected
    return out


def statutory_to_pb(a: Assessment) -> tally_pb2.Statutory:
    sample = a.decisions.get(Stage.RANDOM_SAMPLE)
    final = a.decisions.get(a.decided_by) if a.decided_by else None
    return tally_pb2.Statutory(
        stage=a.stage, raw_total=a.raw_total, raw_complete=a.raw_complete,
        counties=[county_to_pb(f) for f in a.counties], projected_total=a.projected_total,
        fail_below=str(a.fail_below), qualify_above=str(a.qualify_above),
        projected_percent=str(a.projected_percent), sample_outcome=_outcome(a.sample_outcome),
        sample_decided_at=sample.decided_at if sample else "", provisional=a.provisional,
        full_count=a.full_count, counted_valid=a.counted_valid,
        counted_verified=a.counted_verified, counted_remaining=a.counted_remaining,
        outcome=_outcome(a.outcome), decided_at=final.decided_at if final else "",
        decided_by=LABEL[a.decided_by] if a.decided_by else "",
        stopped_at_requirement=a.stopped_at_requirement, explanation=a.explanation,
    )


def result_to_pb(r: asyncpg.Record) -> tally_pb2.SignatureResult:
    return tally_pb2.SignatureResult(
        signature_id=str(r["signature_id"]), batch_id=str(r["batch_id"]), county=r["county"],
        line=r["line"], status=status_to_pb(Status(r["status"])),
        reason=reason_to_pb(Reason(r["reason"])) if r["reason"] else common_pb2.REASON_UNSPECIFIED,
        voter_id=r["voter_id"],
        score=r["score"],
        circulator_id=r["circulator_id"], petition_id=r["petition_id"], revision=r["revision"],
    )


def invariants_to_pb(petition_id: str, checks: list[CheckResult],
                     now: datetime | None = None) -> tally_pb2.InvariantReport:
    return tally_pb2.InvariantReport(
        petition_id=petition_id, ok=all(c.ok for c in checks),
        checks=[tally_pb2.InvariantCheck(name=c.name, description=c.description, ok=c.ok,
                                         violations=c.violations, examples=list(c.examples))
                for c in checks],
        as_of=(now or datetime.now(UTC)).isoformat())
