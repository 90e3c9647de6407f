"""Intake's edge: protobuf messages to and from domain values."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from sigverify.events.v1 import events_pb2
from sigverify.intake.v1 import intake_pb2
from sigverify_common import ids
from sigverify_common.convert import date_text, method_to_pb, policy_to_pb, rules_to_pb, source_to_pb
from sigverify_common.topics import SIGNATURE_RECEIVED
from sigverify_intake.domain import Signature
from sigverify_intake.repository import PetitionRow, Receipt, StoredSignature, signature_of

if TYPE_CHECKING:
    from sigverify_intake.filings import Filing


def receipt_to_pb(r: Receipt) -> intake_pb2.BatchReceipt:
    return intake_pb2.BatchReceipt(
        batch_id=str(r.batch_id), petition_id=r.petition_id, county=r.county,
        client_batch_key=r.client_batch_key, content_sha256=r.content_sha256,
        rows_received=r.rows_received, signatures_accepted=r.signatures_accepted,
        incomplete=r.incomplete,
        rejected=[intake_pb2.RowError(line=e.line, record=e.record, field=e.field, reason=e.reason)
                  for e in r.rejected],
        resubmission=r.resubmission, received_at=r.received_at.isoformat(),
        rows_rejected=r.rows_rejected,
    )


def petition_to_pb(p: PetitionRow) -> intake_pb2.Petition:
    return intake_pb2.Petition(
        petition_id=p.petition_id, title=p.title, required_signatures=p.required_signatures,
        deadline=p.deadline.isoformat(), created_at=p.created_at.isoformat(),
        duplicate_policy=policy_to_pb(p.duplicate_policy), accept_online=p.accept_online,
        method=method_to_pb(p.method), sampling=rules_to_pb(p.rules),
        filing_closes_at=p.filing_closes_at.isoformat() if p.filing_closes_at else "",
        full_count_started_at=p.full_count_started_at.isoformat() if p.full_count_started_at else "",
        counties=list(p.counties),
    )


def filing_to_pb(f: Filing) -> intake_pb2.CountyFiling:
    return intake_pb2.CountyFiling(
        petition_id=f.petition_id, county=f.county, raw_count=f.raw_count, closed=f.closed,
        closed_at=f.closed_at.isoformat() if f.closed_at else "", closed_by=f.closed_by,
        sample_size=f.sample_size, seed=f.seed, released=f.released)


def received_event(sid: str | uuid.UUID, batch_id: str | uuid.UUID, petition_id: str, county: str,
                   seq: int, s: Signature) -> tuple[str, bytes, bytes]:
    """The SignatureReceived outbox row of one stored signature, keyed by signature id. It
    carries no name, address or birth date: matching reads those from intake's table."""
    event = events_pb2.SignatureReceived(
        event_id=ids.event_id(), signature_id=str(sid), petition_id=petition_id,
        batch_id=str(batch_id), county=county, line=s.line, circulator_id=s.circulator_id,
        source=source_to_pb(s.source), incomplete=s.incomplete, received_seq=seq,
        signed_on=date_text(s.signed_on),
    )
    return SIGNATURE_RECEIVED.name, str(sid).encode(), SIGNATURE_RECEIVED.encode(event)


def received_event_of_row(r: Mapping[str, Any] | asyncpg.Record) -> tuple[str, bytes, bytes]:
    """The SignatureReceived outbox row of a stored ``intake.signatures`` row."""
    return received_event(r["signature_id"], r["batch_id"], r["petition_id"], r["county"],
                          r["received_seq"], signature_of(r))


def signature_events(batch_id: uuid.UUID, petition_id: str, county: str,
                     stored: Sequence[StoredSignature]) -> list[tuple[str, bytes, bytes]]:
    batch = str(batch_id)
    return [received_event(sid, batch, petition_id, county, seq, s) for sid, seq, s in stored]
