"""Applies SignatureMatched batches: store, resolve duplicates, publish SignatureVerified."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

import asyncpg

from sigverify.events.v1 import events_pb2
from sigverify_common import kafka
from sigverify_common.convert import parse_date_text, reason_from_pb, reason_to_pb, status_to_pb
from sigverify_common.db import Conn, table_exists
from sigverify_common.kafka import DeadLetter, Delivered
from sigverify_common.topics import SIGNATURE_VERIFIED
from sigverify_common.vocab import Reason, Status
from sigverify_dedupe.domain import Entry, resolve

log = logging.getLogger(__name__)
SCHEMA = "dedupe"


class DedupeHandler:
    def __init__(self, pool: asyncpg.Pool, outbox: kafka.OutboxPublisher | None) -> None:
        self._pool = pool
        self._outbox = outbox

    async def __call__(self, batch: Sequence[Delivered[events_pb2.SignatureMatched]],
                       dead: Sequence[DeadLetter]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await kafka.write_dead_letters(conn, SCHEMA, dead)
            published = await self._apply(conn, [d.message for d in batch])
        if published and self._outbox is not None:
            self._outbox.wake.set()

    async def _apply(self, conn: Conn,
                     messages: Sequence[events_pb2.SignatureMatched]) -> int:
        fresh = {m.signature_id: m for m in messages}
        if not fresh:
            return 0
        known = {
            str(r["signature_id"]) for r in await conn.fetch(
                "SELECT signature_id FROM dedupe.signatures WHERE signature_id = ANY($1::uuid[])",
                list(fresh),
            )
        }
        new = [m for sid, m in fresh.items() if sid not in known]
        if not new:
            return 0
        # Lock the voters touched, in a stable order, so replicas never interleave on one voter.
        voters = sorted({(m.petition_id, m.voter_id) for m in new if m.voter_id})
        # One statement takes the locks, in sorted order (the subquery fixes the order).
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
            "FROM (SELECT k FROM unnest($1::text[]) AS k ORDER BY k) AS keys",
            [f"{p}\x1f{v}" for p, v in voters])
        await conn.execute(
            "INSERT INTO dedupe.signatures (signature_id, petition_id, batch_id, county, line, "
            "circulator_id, voter_id, signed_on, received_seq, match_reason, score, status, "
            "reason, revision) SELECT *, '', '', 0 FROM unnest($1::uuid[], $2::text[], "
            "$3::uuid[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::date[], "
            "$9::bigint[], $10::text[], $11::float8[])",
            [uuid.UUID(m.signature_id) for m in new], [m.petition_id for m in new],
            [uuid.UUID(m.batch_id) for m in new], [m.county for m in new],
            [m.line for m in new], [m.circulator_id for m in new], [m.voter_id for m in new],
            [parse_date_text(m.signed_on) for m in new], [m.received_seq for m in new],
            [reason_from_pb(m.reason).value for m in new], [m.score for m in new],
        )
        touched: list[asyncpg.Record] = []
        if voters:
            touched = await conn.fetch(
                "SELECT * FROM dedupe.signatures WHERE (petition_id, voter_id) IN "
                "(SELECT * FROM unnest($1::text[], $2::text[]))",
                [p for p, _ in voters], [v for _, v in voters],
            )
        no_voter = [
            r for r in await conn.fetch(
                "SELECT * FROM dedupe.signatures WHERE signature_id = ANY($1::uuid[]) "
                "AND voter_id = ''", [m.signature_id for m in new],
            )
        ]
        groups: dict[tuple[str, str], list[asyncpg.Record]] = {}
        for r in touched:
            groups.setdefault((r["petition_id"], r["voter_id"]), []).append(r)
        decided: dict[str, tuple[Status, Reason]] = {}
        for rows in groups.values():
            decided.update(resolve(
                Entry(str(r["signature_id"]), Reason(r["match_reason"]), r["signed_on"],
                      r["received_seq"]) for r in rows
            ))
        for r in no_voter:
            decided.update(resolve([Entry(str(r["signature_id"]), Reason(r["match_reason"]),
                                          r["signed_on"], r["received_seq"])]))
        rows_by_id = {str(r["signature_id"]): r for r in [*touched, *no_voter]}
        changed = [
            (sid, status, reason) for sid, (status, reason) in decided.items()
            if (rows_by_id[sid]["status"], rows_by_id[sid]["reason"]) != (status.value, reason.value)
        ]
        if not changed:
            return 0
        revisions = await conn.fetch(
            "UPDATE dedupe.signatures AS s SET status = c.status, reason = c.reason, "
            "revision = nextval('dedupe.revision_seq') FROM unnest($1::uuid[], $2::text[], "
            "$3::text[]) AS c(id, status, reason) WHERE s.signature_id = c.id RETURNING s.*",
            [sid for sid, _, _ in changed], [s.value for _, s, _ in changed],
            [r.value for _, _, r in changed],
        )
        events = [self.event(r) for r in revisions]
        await kafka.enqueue(conn, SCHEMA, events)
        corrected = len(changed) - len(new)
        if corrected > 0:
            log.info("re-resolved %d earlier signature(s) after late duplicates", corrected)
        return len(events)

    @staticmethod
    def event(r: asyncpg.Record) -> tuple[str, bytes, bytes]:
        event = events_pb2.SignatureVerified(
            event_id=str(uuid.uuid4()), signature_id=str(r["signature_id"]),
            petition_id=r["petition_id"], batch_id=str(r["batch_id"]), county=r["county"],
            line=r["line"], circulator_id=r["circulator_id"],
            status=status_to_pb(Status(r["status"])), reason=reason_to_pb(Reason(r["reason"])),
            voter_id=r["voter_id"], score=r["score"], revision=r["revision"],
        )
        return (SIGNATURE_VERIFIED.name, str(r["signature_id"]).encode(),
                SIGNATURE_VERIFIED.encode(event))


async def redrive(pool: asyncpg.Pool) -> int:
    """Re-publish SignatureVerified for every status tally does not have at its revision."""
    applied = ("EXISTS (SELECT 1 FROM tally.results t WHERE t.signature_id = s.signature_id "
               "AND t.revision >= s.revision)")
    if not await table_exists(pool, "tally.results"):
        applied = "FALSE"
    total, after = 0, 0
    while True:
        rows = await pool.fetch(
            f"SELECT * FROM dedupe.signatures s WHERE revision > $1 AND NOT {applied} "  # noqa: S608
            "ORDER BY revision LIMIT 5000", after)
        if not rows:
            return total
        async with pool.acquire() as conn, conn.transaction():
            await kafka.enqueue(conn, SCHEMA, [DedupeHandler.event(r) for r in rows])
        total += len(rows)
        after = rows[-1]["revision"]
