"""Applies SignatureMatched batches: store, resolve duplicates, publish SignatureVerified."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from prometheus_client import Counter

from sigverify.events.v1 import events_pb2
from sigverify_common import ids, kafka, provenance
from sigverify_common.convert import (
    parse_date_text,
    reason_from_pb,
    reason_to_pb,
    source_from_pb,
    status_to_pb,
)
from sigverify_common.db import Conn, table_exists
from sigverify_common.kafka import DeadLetter, Delivered
from sigverify_common.topics import SIGNATURE_VERIFIED
from sigverify_common.vocab import DuplicatePolicy, Reason, Source, Status
from sigverify_dedupe.domain import Entry, Rules, resolve

log = logging.getLogger(__name__)
SCHEMA = "dedupe"

#: The stored signatures that decide a batch's (petition, voter) groups (see ``domain``): the
#: two earliest MATCHED signatures of each source and the one that counts now, each read by
#: its partial index (0003), so that re-resolving a group costs the same at its
#: 10,000th signature as at its second. Reading the whole group instead made a voter's n
#: signatures cost n^2 rows read and resolved: 20,000 copies of one row took minutes.
DECIDING_ROWS = (
    "SELECT s.* FROM unnest($1::text[], $2::text[]) AS g(petition_id, voter_id) "
    "CROSS JOIN LATERAL ("
    "(SELECT * FROM dedupe.signatures WHERE petition_id = g.petition_id "
    "AND voter_id = g.voter_id AND voter_id <> '' AND match_reason = 'MATCHED' AND NOT online "
    "ORDER BY signed_on, received_seq LIMIT 2) "
    "UNION ALL (SELECT * FROM dedupe.signatures WHERE petition_id = g.petition_id "
    "AND voter_id = g.voter_id AND voter_id <> '' AND match_reason = 'MATCHED' AND online "
    "ORDER BY signed_on, received_seq LIMIT 2) "
    "UNION ALL (SELECT * FROM dedupe.signatures WHERE petition_id = g.petition_id "
    "AND voter_id = g.voter_id AND voter_id <> '' AND status = 'VALID')) AS s"
)

#: Stored signatures read to re-resolve groups; about one per new or changed signature.
ROWS_READ = Counter("sigverify_dedupe_rows_read_total",
                    "Stored signatures read to re-resolve voters' groups")


@dataclass
class BatchStats:
    """What one batch cost, for the slow-batch log line (counts only: no personal data)."""

    new: int = 0
    rematched: int = 0
    groups: int = 0
    largest_group: int = 0
    read: int = 0
    changed: int = 0


class PetitionRules:
    """Each petition's duplicate policy and online acceptance, read from intake's table."""

    TTL = 30.0

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: dict[str, tuple[float, Rules]] = {}

    async def get(self, conn: Conn, petition_ids: set[str]) -> dict[str, Rules]:
        now = time.monotonic()
        stale = [p for p in petition_ids if p not in self._cache or self._cache[p][0] < now]
        if stale:
            for r in await conn.fetch(
                "SELECT petition_id, duplicate_policy, accept_online FROM intake.petitions "
                "WHERE petition_id = ANY($1::text[])", stale,
            ):
                rules = Rules(DuplicatePolicy(r["duplicate_policy"]), r["accept_online"])
                self._cache[r["petition_id"]] = (now + self.TTL, rules)
        return {p: self._cache[p][1] if p in self._cache else Rules() for p in petition_ids}


class DedupeHandler:
    #: A batch that takes longer than this is logged with what it cost.
    SLOW_SECONDS = 2.0

    def __init__(self, pool: asyncpg.Pool, outbox: kafka.OutboxPublisher | None) -> None:
        self._pool = pool
        self._outbox = outbox
        self._rules = PetitionRules(pool)
        #: What the last batch applied cost (tests read it).
        self.last = BatchStats()

    async def __call__(self, batch: Sequence[Delivered[events_pb2.SignatureMatched]],
                       dead: Sequence[DeadLetter]) -> list[DeadLetter]:
        """Applies the batch; a SignatureMatched whose signature intake never stored (an
        unknown petition, a made-up id) is refused: set aside as a dead letter."""
        start = time.perf_counter()
        async with self._pool.acquire() as conn, conn.transaction():
            why = await provenance.refusals(conn, [d.message for d in batch])
            refused = [d.reject(w) for d, w in zip(batch, why, strict=True) if w is not None]
            await kafka.write_dead_letters(conn, SCHEMA, [*dead, *refused])
            published = await self._apply(
                conn, [d.message for d, w in zip(batch, why, strict=True) if w is None])
        if published and self._outbox is not None:
            self._outbox.wake.set()
        seconds = time.perf_counter() - start
        if seconds > self.SLOW_SECONDS:
            st = self.last
            log.warning("slow batch: %d record(s) took %.1fs: %d new, %d rematched signature(s) "
                        "in %d voter group(s) (largest: %d), %d stored signature(s) read, "
                        "%d re-resolved", len(batch), seconds, st.new, st.rematched, st.groups,
                        st.largest_group, st.read, st.changed)
        return refused

    async def _apply(self, conn: Conn, messages: Sequence[events_pb2.SignatureMatched]) -> int:
        self.last = BatchStats()
        fresh: dict[str, events_pb2.SignatureMatched] = {}
        for m in messages:
            if m.signature_id not in fresh or fresh[m.signature_id].match_revision < m.match_revision:
                fresh[m.signature_id] = m
        if not fresh:
            return 0
        known = {
            str(r["signature_id"]): r for r in await conn.fetch(
                "SELECT signature_id, petition_id, voter_id, score, match_revision "
                "FROM dedupe.signatures "
                "WHERE signature_id = ANY($1::uuid[])", list(fresh))
        }
        new = [m for sid, m in fresh.items() if sid not in known]
        rematched = [m for sid, m in fresh.items()
                     if sid in known and m.match_revision > known[sid]["match_revision"]]
        if not new and not rematched:
            return 0
        voters = {(m.petition_id, m.voter_id) for m in [*new, *rematched] if m.voter_id}
        voters |= {(known[m.signature_id]["petition_id"], known[m.signature_id]["voter_id"])
                   for m in rematched if known[m.signature_id]["voter_id"]}
        # One statement takes the locks, in sorted order (the subquery fixes the order).
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
            "FROM (SELECT k FROM unnest($1::text[]) AS k ORDER BY k) AS keys",
            [f"{p}\x1f{v}" for p, v in sorted(voters)])
        if rematched:
            await conn.execute(
                "UPDATE dedupe.signatures AS s SET voter_id = c.voter_id, match_reason = c.reason, "
                "score = c.score, match_revision = c.rev FROM unnest($1::uuid[], $2::text[], "
                "$3::text[], $4::float8[], $5::bigint[]) AS c(id, voter_id, reason, score, rev) "
                "WHERE s.signature_id = c.id AND s.signature_id = ANY($1::uuid[])",
                [m.signature_id for m in rematched], [m.voter_id for m in rematched],
                [reason_from_pb(m.reason).value for m in rematched],
                [m.score for m in rematched], [m.match_revision for m in rematched],
            )
        # The stored rows that decide these voters' groups (a rematched one as just changed)
        # and the rematched rows themselves; the new signatures are resolved with them before
        # they are stored, so that each is written once, with its status (not stored blank,
        # then updated). No other stored row can change outcome (see ``domain``).
        read = [
            *(await conn.fetch(DECIDING_ROWS, [p for p, _ in voters], [v for _, v in voters])
              if voters else []),
            *(await conn.fetch("SELECT * FROM dedupe.signatures WHERE signature_id = ANY($1::uuid[])",
                               [m.signature_id for m in rematched]) if rematched else []),
        ]
        ROWS_READ.inc(len(read))
        stored = list({str(r["signature_id"]): r for r in read}.values())
        rules = await self._rules.get(
            conn, {r["petition_id"] for r in stored} | {m.petition_id for m in new})
        groups: dict[tuple[str, str], list[Entry]] = {}
        for r in stored:
            sid = str(r["signature_id"])
            groups.setdefault((r["petition_id"], r["voter_id"] or sid), []).append(Entry(
                sid, Reason(r["match_reason"]), r["signed_on"], r["received_seq"], r["online"]))
        new_ids = [m.signature_id for m in new]  # canonical texts (the topic's checks)
        for sid, m in zip(new_ids, new, strict=True):
            groups.setdefault((m.petition_id, m.voter_id or sid), []).append(Entry(
                sid, reason_from_pb(m.reason), parse_date_text(m.signed_on), m.received_seq,
                source_from_pb(m.source) is Source.ONLINE))
        decided: dict[str, tuple[Status, Reason]] = {}
        for (petition_id, _), entries in groups.items():
            decided.update(resolve(entries, rules[petition_id]))
        self.last = BatchStats(new=len(new), rematched=len(rematched), groups=len(groups),
                               largest_group=max((len(g) for g in groups.values()), default=0),
                               read=len(read))
        rows_by_id = {str(r["signature_id"]): r for r in stored}
        # A rematch or a review can move a signature to another voter (or change its score)
        # and leave its status and reason as they were: SignatureVerified carries both, so
        # it is published again (a new revision), or tally and every reader of the topic
        # would keep the old voter. A redelivery, or a rematch that changes none of them,
        # publishes nothing.
        moved = {m.signature_id for m in rematched
                 if (known[m.signature_id]["voter_id"], known[m.signature_id]["score"])
                 != (rows_by_id[m.signature_id]["voter_id"], rows_by_id[m.signature_id]["score"])}
        changed = [
            (sid, status, reason) for sid, (status, reason) in decided.items()
            if sid in rows_by_id
            and (sid in moved or (rows_by_id[sid]["status"], rows_by_id[sid]["reason"])
                 != (status.value, reason.value))
        ]
        revisions: list[asyncpg.Record] = []
        if new:
            revisions += await conn.fetch(
                "INSERT INTO dedupe.signatures (signature_id, petition_id, batch_id, county, line, "
                "circulator_id, voter_id, signed_on, received_seq, match_reason, score, online, "
                "match_revision, status, reason, revision) SELECT *, nextval('dedupe.revision_seq') "
                "FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::bigint[], "
                "$6::text[], $7::text[], $8::date[], $9::bigint[], $10::text[], $11::float8[], "
                "$12::bool[], $13::bigint[], $14::text[], $15::text[]) RETURNING *",
                new_ids, [m.petition_id for m in new],
                [m.batch_id for m in new], [m.county for m in new],
                [m.line for m in new], [m.circulator_id for m in new], [m.voter_id for m in new],
                [parse_date_text(m.signed_on) for m in new], [m.received_seq for m in new],
                [reason_from_pb(m.reason).value for m in new], [m.score for m in new],
                [source_from_pb(m.source) is Source.ONLINE for m in new],
                [m.match_revision for m in new],
                [decided[sid][0].value for sid in new_ids], [decided[sid][1].value for sid in new_ids],
            )
        if changed:
            revisions += await conn.fetch(
                "UPDATE dedupe.signatures AS s SET status = c.status, reason = c.reason, "
                "revision = nextval('dedupe.revision_seq') FROM unnest($1::uuid[], $2::text[], "
                "$3::text[]) AS c(id, status, reason) WHERE s.signature_id = c.id "
                # the key list again, so that the rows are found by the primary key, not by
                # hashing the whole table against the batch
                "AND s.signature_id = ANY($1::uuid[]) RETURNING s.*",
                [sid for sid, _, _ in changed], [s.value for _, s, _ in changed],
                [r.value for _, _, r in changed],
            )
        self.last.changed = len(changed)
        if not revisions:
            return 0
        events = [self.event(r) for r in revisions]
        await kafka.enqueue(conn, SCHEMA, events)
        corrected = len(changed)
        if corrected > 0:
            log.info("re-resolved %d earlier signature(s) after late duplicates or reviews",
                     corrected)
        return len(events)

    @staticmethod
    def event(r: asyncpg.Record) -> tuple[str, bytes, bytes]:
        signature_id = str(r["signature_id"])
        event = events_pb2.SignatureVerified(
            event_id=ids.event_id(), signature_id=signature_id,
            petition_id=r["petition_id"], batch_id=str(r["batch_id"]), county=r["county"],
            line=r["line"], circulator_id=r["circulator_id"],
            status=status_to_pb(Status(r["status"])), reason=reason_to_pb(Reason(r["reason"])),
            voter_id=r["voter_id"], score=r["score"], revision=r["revision"],
        )
        return (SIGNATURE_VERIFIED.name, signature_id.encode(),
                SIGNATURE_VERIFIED.encode(event))


async def redrive(pool: asyncpg.Pool) -> int:
    """Re-publish SignatureVerified for every status tally does not have at its revision."""
    applied = ("EXISTS (SELECT 1 FROM tally.results t WHERE t.signature_id = s.signature_id "
               "AND t.revision >= s.revision)")
    if not await table_exists(pool, "tally.results"):
        applied = "FALSE"

    async def page(after: int) -> list[asyncpg.Record]:
        return await pool.fetch(
            f"SELECT * FROM dedupe.signatures s WHERE revision > $1 AND NOT {applied} "  # noqa: S608
            "ORDER BY revision LIMIT 5000", after)

    return await kafka.republish(pool, SCHEMA, page, "revision", DedupeHandler.event)
