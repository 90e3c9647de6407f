"""The matcher at work: the roll index, SignatureReceived in, SignatureMatched out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import asyncpg
from prometheus_client import Counter, Histogram

from sigverify.events.v1 import events_pb2
from sigverify_common import audit, kafka, provenance
from sigverify_common.db import table_exists
from sigverify_common.kafka import DeadLetter, Delivered
from sigverify_common.vocab import Decision, Reason
from sigverify_matching import convert, engine, fs, store
from sigverify_matching.columnar import VoterIndex
from sigverify_matching.domain import MatchConfig, MatchResult
from sigverify_matching.versions import RollIndex, ensure_active

log = logging.getLogger(__name__)
SCHEMA = "matching"

DECISIONS = Counter("sigverify_match_decisions_total", "Matcher outcomes", ["decision", "reason"])
MATCH_SECONDS = Histogram("sigverify_match_batch_seconds", "Time to match one polled batch")

INCOMPLETE = MatchResult(decision=Decision.NO_MATCH, reason=Reason.INCOMPLETE, voter_id="",
                         score=0.0, candidates=())


class Deadlines:
    """Petition deadlines read from intake's table (cached; petitions are rarely created)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: dict[str, date] = {}

    async def get(self, petition_ids: set[str]) -> dict[str, date]:
        missing = [p for p in petition_ids if p not in self._cache]
        if missing:
            for r in await self._pool.fetch(
                "SELECT petition_id, deadline FROM intake.petitions WHERE petition_id = ANY($1)",
                missing,
            ):
                self._cache[r["petition_id"]] = r["deadline"]
        return {p: self._cache[p] for p in petition_ids if p in self._cache}


#: The printed signature's fields, read from intake's table with the provenance check
#: (they never travel on a topic).
PRINTED = ("first_name", "middle_name", "last_name", "street", "unit", "city", "zip", "county",
           "signed_on", "birth_date")


@dataclass(frozen=True)
class Prepared:
    """A batch decided and not yet written (``MatchHandler.prepare``)."""

    version: int
    model_id: int
    #: The consumer's dead letters, and the records this handler refused.
    dead: Sequence[DeadLetter]
    refused: list[DeadLetter]
    decided: list[tuple[events_pb2.SignatureReceived, MatchResult]]
    #: Per decision, its candidates as stored, and its outbox row.
    stored: list[str]
    outgoing: list[tuple[str, bytes, bytes]]


class MatchHandler:
    def __init__(self, pool: asyncpg.Pool, roll: RollIndex, models: store.Models,
                 outbox: kafka.OutboxPublisher | None, config: MatchConfig) -> None:
        self._pool = pool
        self._roll = roll
        self._models = models
        self._outbox = outbox
        self._deadlines = Deadlines(pool)
        self._config = config

    async def __call__(self, batch: Sequence[Delivered[events_pb2.SignatureReceived]],
                       dead: Sequence[DeadLetter]) -> list[DeadLetter]:
        """Decides the batch; a SignatureReceived whose signature intake never stored (or
        stored under another petition or batch) is refused: set aside as a dead letter."""
        return await self.apply(await self.prepare(batch, dead))

    async def prepare(self, batch: Sequence[Delivered[events_pb2.SignatureReceived]],
                      dead: Sequence[DeadLetter]) -> Prepared:
        """The batch decided, nothing written (the consumer does this for the next batch
        while the one before is written)."""
        version, index = await self._roll.current()
        model = await self._models.current(index)
        async with self._pool.acquire() as conn:
            why, printed = await provenance.received(conn, [d.message for d in batch], PRINTED)
        refused = [d.reject(w) for d, w in zip(batch, why, strict=True) if w is not None]
        messages = list({d.message.signature_id: d.message
                         for d, w in zip(batch, why, strict=True) if w is None}.values())
        done = {
            str(r["signature_id"]) for r in await self._pool.fetch(
                "SELECT signature_id FROM matching.decisions WHERE signature_id = ANY($1::uuid[])",
                [m.signature_id for m in messages])
        }
        todo = [m for m in messages if m.signature_id not in done]
        deadlines = await self._deadlines.get({m.petition_id for m in todo})
        started = time.perf_counter()
        # Matching, the results (candidates and their evidence), the stored candidates
        # (JSON) and the events are made in a worker thread: on the event loop they would
        # hold up the consumer's other work (the batch before being written).
        decided, stored, outgoing = await asyncio.to_thread(
            _decide, index, model.model, todo, printed, deadlines, self._config)
        MATCH_SECONDS.observe(time.perf_counter() - started)
        return Prepared(version, model.model_id, dead, refused, decided, stored,
                       outgoing)

    async def apply(self, prepared: Prepared) -> list[DeadLetter]:
        """Writes a prepared batch's decisions, reviews, events and audit entry in one
        transaction, if the roll version it was decided with is still the active one
        (else ``RollVersionChanged``: the batch is prepared and decided again)."""
        version, decided, stored = prepared.version, prepared.decided, prepared.stored
        outgoing = prepared.outgoing
        async with self._pool.acquire() as conn, conn.transaction():
            # Until commit, the version cannot stop being active (activation waits for this
            # lock); if it already has, the batch is decided again with the active one.
            await ensure_active(conn, version)
            await kafka.write_dead_letters(conn, SCHEMA, [*prepared.dead, *prepared.refused])
            inserted = {
                str(r["signature_id"]) for r in await conn.fetch(
                    "INSERT INTO matching.decisions (signature_id, petition_id, decision, reason, "
                    "voter_id, score, candidates, roll_version, model_id) SELECT * FROM unnest("
                    "$1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], "
                    "$7::json[], $8::bigint[], $9::bigint[]) ON CONFLICT (signature_id) DO NOTHING "
                    "RETURNING signature_id",
                    [m.signature_id for m, _ in decided], [m.petition_id for m, _ in decided],
                    [r.decision.value for _, r in decided], [r.reason.value for _, r in decided],
                    [r.voter_id for _, r in decided], [r.score for _, r in decided], stored,
                    [version] * len(decided), [prepared.model_id] * len(decided),
                )
            }
            await conn.execute(
                "INSERT INTO matching.reviews (signature_id, petition_id, state) "
                "SELECT id, p, 'pending' FROM unnest($1::uuid[], $2::text[]) AS x(id, p) "
                "ON CONFLICT DO NOTHING",
                [m.signature_id for m, r in decided
                 if r.decision is Decision.REVIEW and m.signature_id in inserted],
                [m.petition_id for m, r in decided
                 if r.decision is Decision.REVIEW and m.signature_id in inserted])
            events = [e for (m, _), e in zip(decided, outgoing, strict=True)
                      if m.signature_id in inserted]
            await kafka.enqueue(conn, SCHEMA, events)
            if inserted:
                # One entry per applied batch: which signatures were decided, how, and on which
                # roll version (identifiers and counts only).
                await audit.record(conn, "system:matching", "decisions.recorded",
                                   f"roll-version-{version}", {
                    "model_id": prepared.model_id,
                    "signature_ids": sorted(inserted),
                    "by_reason": dict(Tally(r.reason.value for m, r in decided
                                              if m.signature_id in inserted)),
                })
        for (decision, reason), n in Tally((r.decision.value, r.reason.value)
                                           for m, r in decided
                                           if m.signature_id in inserted).items():
            DECISIONS.labels(decision, reason).inc(n)
        if events and self._outbox is not None:
            self._outbox.wake.set()
        return prepared.refused




def _decide(index: VoterIndex, model: fs.Model, todo: Sequence[events_pb2.SignatureReceived],
            printed: dict[str, asyncpg.Record], deadlines: dict[str, date], config: MatchConfig
            ) -> tuple[list[tuple[events_pb2.SignatureReceived, MatchResult]], list[str],
                       list[tuple[str, bytes, bytes]]]:
    """Each signature to decide with its decision (an incomplete one is not matched), and
    per decision its candidates as ``matching.decisions`` stores them and its SignatureMatched
    outbox row."""
    complete = [m for m in todo if not m.incomplete]
    matched = engine.match_results(index, model, [
        convert.row_input(printed[m.signature_id], deadlines.get(m.petition_id))
        for m in complete], config) if complete else []
    results = dict(zip((m.signature_id for m in complete), matched, strict=True))
    decided = [(m, results.get(m.signature_id, INCOMPLETE)) for m in todo]
    return (decided, [convert.candidates_json(r.candidates) for _, r in decided],
            [convert.matched_event(m, r) for m, r in decided])


async def redrive(pool: asyncpg.Pool) -> int:
    """Re-publish SignatureMatched for every decision dedupe has not applied yet."""
    applied = "EXISTS (SELECT 1 FROM dedupe.signatures x WHERE x.signature_id = d.signature_id)"
    if not await table_exists(pool, "dedupe.signatures"):
        applied = "FALSE"

    async def page(after: int) -> list[asyncpg.Record]:
        return await pool.fetch(
            "SELECT d.*, s.batch_id, s.county, s.line, s.circulator_id, s.signed_on, "  # noqa: S608
            "s.source, s.received_seq FROM matching.decisions d "
            "JOIN intake.signatures s USING (signature_id) "
            f"WHERE s.received_seq > $1 AND NOT {applied} ORDER BY s.received_seq LIMIT 5000",
            after)

    return await kafka.republish(pool, SCHEMA, page, "received_seq", convert.matched_event_from_row)
