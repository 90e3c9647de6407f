"""Intake's Postgres schema: petitions, batches, signatures and the outbox."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from sigverify_common import audit
from sigverify_common.db import Conn, table_exists
from sigverify_common.errors import AlreadyExists, FailedPrecondition, NotFound
from sigverify_common.sampling import CALIFORNIA, Method, SamplingRules
from sigverify_common.vocab import DuplicatePolicy, Source
from sigverify_intake.domain import RowError, Signature

#: A signature as stored: (signature id, receipt sequence number, the signature).
#: A signature as stored: its id (canonical text), its received_seq, the signature.
StoredSignature = tuple[str, int, Signature]

SCHEMA = "intake"


@dataclass(frozen=True, slots=True)
class PetitionRow:
    petition_id: str
    title: str
    required_signatures: int
    deadline: date
    created_at: datetime
    duplicate_policy: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST
    accept_online: bool = False
    method: Method = Method.FULL_COUNT
    rules: SamplingRules = CALIFORNIA
    filing_closes_at: datetime | None = None
    full_count_started_at: datetime | None = None
    #: The counties expected to file; empty: whichever send batches.
    counties: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Receipt:
    batch_id: uuid.UUID
    petition_id: str
    county: str
    client_batch_key: str
    content_sha256: str
    rows_received: int
    signatures_accepted: int
    incomplete: int
    #: The first rejected rows (RECEIPT_REJECTIONS at most, or the page asked for).
    rejected: tuple[RowError, ...]
    resubmission: bool
    received_at: datetime
    #: Every rejected row of the batch.
    rows_rejected: int = 0


#: A receipt carries at most this many rejected rows; the rest are read page by page.
RECEIPT_REJECTIONS = 1_000


def rules_of(r: asyncpg.Record) -> SamplingRules:
    return SamplingRules(r["sample_minimum"], r["sample_percent"], r["fail_below_percent"],
                         r["qualify_above_percent"])


def _petition(r: asyncpg.Record) -> PetitionRow:
    return PetitionRow(r["petition_id"], r["title"], r["required_signatures"], r["deadline"],
                       r["created_at"], DuplicatePolicy(r["duplicate_policy"]), r["accept_online"],
                       Method(r["method"]), rules_of(r), r["filing_closes_at"],
                       r["full_count_started_at"], tuple(r["counties"]))


def rules_detail(method: Method, rules: SamplingRules) -> dict[str, Any]:
    """The method and its parameters as the audit log records them."""
    detail: dict[str, Any] = {"method": method.value}
    if method is Method.RANDOM_SAMPLE:
        detail.update(sample_minimum=rules.minimum, sample_percent=str(rules.percent),
                      fail_below_percent=str(rules.fail_below),
                      qualify_above_percent=str(rules.qualify_above))
    return detail


async def create_petition(pool: asyncpg.Pool, petition_id: str, title: str, required: int,
                          deadline: date, actor: str = "system:intake",
                          policy: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST,
                          accept_online: bool = False, method: Method = Method.FULL_COUNT,
                          rules: SamplingRules = CALIFORNIA,
                          filing_closes_at: datetime | None = None,
                          counties: tuple[str, ...] = ()) -> PetitionRow:
    """Create a petition; creating the same one again returns it, a different one is refused."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO intake.petitions (petition_id, title, required_signatures, deadline, "
            "duplicate_policy, accept_online, method, sample_minimum, sample_percent, "
            "fail_below_percent, qualify_above_percent, filing_closes_at, counties) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
            "ON CONFLICT (petition_id) DO NOTHING RETURNING *",
            petition_id, title, required, deadline, policy.value, accept_online, method.value,
            rules.minimum, rules.percent, rules.fail_below, rules.qualify_above, filing_closes_at,
            list(counties),
        )
        if row is not None:
            await audit.record(conn, actor, "petition.created", petition_id,
                               {"title": title, "required_signatures": required,
                                "deadline": deadline.isoformat(), "duplicate_policy": policy.value,
                                "accept_online": accept_online,
                                "filing_closes_at": filing_closes_at.isoformat()
                                if filing_closes_at else None, "counties": list(counties),
                                **rules_detail(method, rules)})
            return _petition(row)
        existing = await get_petition(pool, petition_id)
        wanted = (title, required, deadline, policy, accept_online, method,
                  rules if method is Method.RANDOM_SAMPLE else None, filing_closes_at, counties)
        if (existing.title, existing.required_signatures, existing.deadline,
                existing.duplicate_policy, existing.accept_online, existing.method,
                existing.rules if existing.method is Method.RANDOM_SAMPLE else None,
                existing.filing_closes_at, existing.counties) != wanted:
            raise AlreadyExists(f"petition {petition_id!r} exists with other settings")
        return existing


async def get_petition(pool: asyncpg.Pool, petition_id: str) -> PetitionRow:
    row = await pool.fetchrow("SELECT * FROM intake.petitions WHERE petition_id = $1", petition_id)
    if row is None:
        raise NotFound(f"no petition {petition_id!r}")
    return _petition(row)


async def rejections(conn: Conn | asyncpg.Pool, batch_id: uuid.UUID, offset: int = 0,
                     limit: int = RECEIPT_REJECTIONS) -> tuple[RowError, ...]:
    """The batch's rejected rows in file order, from ``offset`` (0-based), at most ``limit``."""
    rows = await conn.fetch(
        "SELECT line, record, field, reason FROM intake.rejections WHERE batch_id = $1 "
        "AND ordinal >= $2 ORDER BY ordinal LIMIT $3", batch_id, offset, limit)
    return tuple(RowError(r["line"], r["record"], r["field"], r["reason"]) for r in rows)


async def receipt_of(conn: Conn | asyncpg.Pool, r: asyncpg.Record, resubmission: bool,
                     offset: int = 0, limit: int = RECEIPT_REJECTIONS) -> Receipt:
    return Receipt(r["batch_id"], r["petition_id"], r["county"], r["client_batch_key"] or "",
                   r["content_sha256"], r["rows_received"], r["signatures_accepted"],
                   r["incomplete"], await rejections(conn, r["batch_id"], offset, limit),
                   resubmission, r["received_at"], r["rows_rejected"])


async def find_by_key(conn: Conn, petition_id: str, county: str, key: str
                      ) -> asyncpg.Record | None:
    """The committed batch of this (petition, county) sent under client key ``key``."""
    if not key:
        return None
    return await conn.fetchrow(
        "SELECT * FROM intake.batches WHERE petition_id = $1 AND county = $2 "
        "AND client_batch_key = $3", petition_id, county, key)


async def find_by_content(conn: Conn, petition_id: str, county: str, digest: str
                          ) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM intake.batches WHERE petition_id = $1 AND county = $2 "
        "AND content_sha256 = $3", petition_id, county, digest)


async def get_batch(pool: asyncpg.Pool, batch_id: uuid.UUID, offset: int = 0,
                    limit: int = RECEIPT_REJECTIONS) -> Receipt:
    row = await pool.fetchrow("SELECT * FROM intake.batches WHERE batch_id = $1", batch_id)
    if row is None:
        raise NotFound(f"no batch {batch_id}")
    return await receipt_of(pool, row, resubmission=False, offset=offset, limit=limit)


async def check_filing(conn: Conn, petition_id: str, county: str) -> tuple[bool, str]:
    """In the batch's transaction, before storing it: (whether its signatures go to matching
    now, why the county takes no more batches or ""). Locks the petition FOR SHARE, so that
    closing a county (FOR UPDATE) waits for the batches being stored."""
    petition = await conn.fetchrow(
        "SELECT method, counties, filing_closes_at, filing_closes_at <= now() AS past "
        "FROM intake.petitions WHERE petition_id = $1 FOR SHARE", petition_id)
    if petition is None:
        raise FailedPrecondition(f"no petition {petition_id!r}: create it first")
    if petition["counties"] and county not in petition["counties"]:
        raise FailedPrecondition(
            f"{county} is not one of the counties petition {petition_id!r} expects "
            f"({', '.join(petition['counties'])})")
    closed_at = await conn.fetchval(
        "SELECT closed_at FROM intake.counties WHERE petition_id = $1 AND county = $2",
        petition_id, county)
    if closed_at is None and petition["past"]:
        closed_at = petition["filing_closes_at"]
    closed = (f"{county}'s filing for petition {petition_id!r} closed at "
              f"{closed_at.isoformat(timespec='seconds')}: no more batches" if closed_at else "")
    # A random-sample petition holds its signatures until the county's sample is drawn; a
    # full-count one sends every signature to matching now.
    return Method(petition["method"]) is Method.FULL_COUNT, closed


async def open_batch(conn: Conn, batch_id: uuid.UUID, petition_id: str, county: str, key: str,
                     filename: str) -> None:
    """The batch's row, before its signatures (their foreign key needs it); its content hash
    and counts are set by ``close_batch``. A key taken by another batch raises
    UniqueViolationError (after that batch commits, when it is being stored concurrently)."""
    await conn.execute(
        "INSERT INTO intake.batches (batch_id, petition_id, county, client_batch_key, "
        "content_sha256, filename, rows_received, signatures_accepted, incomplete, rejected) "
        "VALUES ($1, $2, $3, NULLIF($4, ''), $5, $6, 0, 0, 0, '[]'::jsonb)",
        batch_id, petition_id, county, key, f"pending:{batch_id}", filename)


SIGNATURE_COLUMNS = (
    "signature_id", "received_seq", "batch_id", "petition_id", "county", "line", "circulator_id",
    "source", "first_name", "middle_name", "last_name", "street", "unit", "city", "zip",
    "signed_on", "birth_date", "incomplete", "released",
)


async def next_seqs(conn: Conn, n: int) -> list[int]:
    """``n`` receipt sequence numbers, ascending (the signatures' order of receipt)."""
    # The sequence looked up once (MATERIALIZED), not once a row: 7x faster.
    rows = await conn.fetch(
        "WITH q AS MATERIALIZED (SELECT pg_get_serial_sequence('intake.signatures', "
        "'received_seq')::regclass AS seq) SELECT nextval(q.seq) AS seq "
        "FROM q, generate_series(1, $1)", n)
    return sorted(r["seq"] for r in rows)


async def copy_signatures(conn: Conn, batch_id: uuid.UUID, petition_id: str, county: str,
                          release: bool, stored: Sequence[StoredSignature]) -> None:
    await conn.copy_records_to_table(
        "signatures", schema_name=SCHEMA, columns=SIGNATURE_COLUMNS,
        records=[(sid, seq, batch_id, petition_id, county, s.line, s.circulator_id,
                  s.source.value, s.first_name, s.middle_name, s.last_name, s.street, s.unit,
                  s.city, s.zip, s.signed_on, s.birth_date, s.incomplete, release)
                 for sid, seq, s in stored])


async def copy_rejections(conn: Conn, batch_id: uuid.UUID, first_ordinal: int,
                          errors: Sequence[RowError]) -> None:
    await conn.copy_records_to_table(
        "rejections", schema_name=SCHEMA,
        columns=("batch_id", "ordinal", "record", "line", "field", "reason"),
        records=[(batch_id, first_ordinal + i, e.record, e.line, e.field, e.reason)
                 for i, e in enumerate(errors)])


async def close_batch(conn: Conn, batch_id: uuid.UUID, digest: str, rows: int, accepted: int,
                      incomplete: int, rows_rejected: int, first_rejected: Sequence[RowError]
                      ) -> asyncpg.Record:
    """Set the stored batch's content hash and counts. Raises UniqueViolationError when a
    batch of the same content committed meanwhile."""
    row = await conn.fetchrow(
        "UPDATE intake.batches SET content_sha256 = $2, rows_received = $3, "
        "signatures_accepted = $4, incomplete = $5, rows_rejected = $6, rejected = $7::jsonb "
        "WHERE batch_id = $1 RETURNING *",
        batch_id, digest, rows, accepted, incomplete, rows_rejected,
        json.dumps([{"line": e.line, "record": e.record, "field": e.field, "reason": e.reason}
                    for e in first_rejected]))
    assert row is not None
    return row


async def unfinished(pool: asyncpg.Pool, limit: int, after_seq: int) -> list[asyncpg.Record]:
    """Stored signatures sent to matching and not decided yet (in receipt order, a page)."""
    decided = "EXISTS (SELECT 1 FROM matching.decisions d WHERE d.signature_id = s.signature_id)"
    if not await table_exists(pool, "matching.decisions"):
        decided = "FALSE"
    return await pool.fetch(
        f"SELECT * FROM intake.signatures s WHERE received_seq > $1 AND released AND NOT {decided} "  # noqa: S608
        "ORDER BY received_seq LIMIT $2", after_seq, limit)


def signature_of(r: Mapping[str, Any] | asyncpg.Record) -> Signature:
    return Signature(
        line=r["line"], first_name=r["first_name"], middle_name=r["middle_name"],
        last_name=r["last_name"], street=r["street"], unit=r["unit"], city=r["city"],
        zip=r["zip"], signed_on=r["signed_on"], birth_date=r["birth_date"],
        circulator_id=r["circulator_id"], source=Source(r["source"]), incomplete=r["incomplete"],
    )
