"""County filings and the statutory process on intake's side.

- ``close_county``: no more batches for the county; for a random-sample petition, draws the
  county's sample with a recorded seed and sends only the sampled signatures to matching,
  all in one transaction (the draw, the flags, the outbox rows and the audit entry).
- ``set_method``: an admin's change of a petition's verification method, audited.
- ``Releaser``: closes counties whose filing deadline has passed, and, once tally has
  recorded a FULL_COUNT decision on a petition's projection, sends the held signatures to
  matching in chunks, keeping a bounded number in flight, until all are sent or tally
  records that the full count reached the requirement (AB 2219: the count may stop there).

Tally's decisions are read from ``tally.decisions`` (tally writes them); intake writes only
its own schema.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from sigverify_common import audit, kafka
from sigverify_common.db import Conn, table_exists
from sigverify_common.errors import FailedPrecondition, NotFound
from sigverify_common.sampling import Method, SamplingRules, draw_order, new_seed, sample_size
from sigverify_intake import repository
from sigverify_intake.convert import received_event_of_row

log = logging.getLogger(__name__)

#: At most this many released signatures without a verified result before the releaser
#: sends more, so that a full count can stop near the requirement.
IN_FLIGHT = 20_000
CHUNK = 5_000


@dataclass(frozen=True, slots=True)
class Filing:
    petition_id: str
    county: str
    raw_count: int
    closed: bool
    closed_at: datetime | None
    closed_by: str
    sample_size: int
    seed: str
    released: int


async def _release(conn: Conn, rows: list[asyncpg.Record]) -> None:
    """Mark ``rows`` released and enqueue their SignatureReceived events (caller's txn)."""
    if not rows:
        return
    await conn.execute("UPDATE intake.signatures SET released = true "
                       "WHERE signature_id = ANY($1::uuid[])", [r["signature_id"] for r in rows])
    await kafka.enqueue(conn, repository.SCHEMA, [received_event_of_row(r) for r in rows])


async def close_county(pool: asyncpg.Pool, petition_id: str, county: str, seed: str = "",
                       actor: str = "system:intake") -> tuple[Filing, bool]:
    """Close the county's filing; returns (filing, closed now). Closing twice changes nothing."""
    async with pool.acquire() as conn, conn.transaction():
        p = await conn.fetchrow("SELECT * FROM intake.petitions WHERE petition_id = $1 FOR UPDATE",
                                petition_id)
        if p is None:
            raise NotFound(f"no petition {petition_id!r}")
        if p["counties"] and county not in p["counties"]:
            raise FailedPrecondition(f"{county} is not one of the counties petition "
                                     f"{petition_id!r} expects ({', '.join(p['counties'])})")
        if await conn.fetchval("SELECT 1 FROM intake.counties WHERE petition_id = $1 AND county = $2",
                               petition_id, county) is None:
            method = Method(p["method"])
            ids = [r["signature_id"] for r in await conn.fetch(
                "SELECT signature_id FROM intake.signatures WHERE petition_id = $1 AND county = $2",
                petition_id, county)]
            raw = len(ids)
            size = 0
            if method is Method.RANDOM_SAMPLE:
                seed = seed or new_seed()
                size = sample_size(raw, repository.rules_of(p))
                chosen = [sid for sid, _ in draw_order(seed, map(str, ids))[:size]]
                await conn.execute("UPDATE intake.signatures SET sampled = true "
                                   "WHERE signature_id = ANY($1::uuid[])", chosen)
                for start in range(0, len(chosen), CHUNK):
                    await _release(conn, await conn.fetch(
                        "SELECT * FROM intake.signatures WHERE signature_id = ANY($1::uuid[]) "
                        "AND NOT released ORDER BY received_seq", chosen[start:start + CHUNK]))
            else:
                seed = ""
            await conn.execute(
                "INSERT INTO intake.counties (petition_id, county, closed_by, raw_count, "
                "sample_size, seed) VALUES ($1, $2, $3, $4, $5, $6)",
                petition_id, county, actor, raw, size, seed)
            await audit.record(conn, actor, "county.closed", f"{petition_id}/{county}",
                               {"raw_count": raw, "method": method.value,
                                "sample_size": size, "seed": seed})
            log.info("closed %s for petition %s: raw %d, sample %d", county, petition_id,
                     raw, size)
            closed_now = True
        else:
            closed_now = False
    filings = await list_counties(pool, petition_id, county)
    return filings[0], closed_now


async def list_counties(pool: asyncpg.Pool, petition_id: str, only: str = "") -> list[Filing]:
    """Every county expected to file, with signatures or with a closed filing (or just
    ``only``), by name."""
    if await pool.fetchval("SELECT 1 FROM intake.petitions WHERE petition_id = $1", petition_id) is None:
        raise NotFound(f"no petition {petition_id!r}")
    rows = await pool.fetch(
        "WITH stored AS (SELECT county, count(*) AS raw, count(*) FILTER (WHERE released) AS released "
        "  FROM intake.signatures WHERE petition_id = $1 AND ($2 = '' OR county = $2) GROUP BY county), "
        "expected AS (SELECT unnest(counties) AS county FROM intake.petitions WHERE petition_id = $1), "
        "named AS (SELECT county FROM stored UNION SELECT county FROM expected WHERE $2 = '' OR county = $2 "
        "  UNION SELECT county FROM intake.counties WHERE petition_id = $1 AND ($2 = '' OR county = $2)) "
        "SELECT n.county, coalesce(s.raw, 0) AS raw, coalesce(s.released, 0) AS released, c.closed_at, "
        "  c.closed_by, c.sample_size, c.seed "
        "FROM named n LEFT JOIN stored s USING (county) LEFT JOIN intake.counties c "
        "  ON c.petition_id = $1 AND c.county = n.county ORDER BY 1",
        petition_id, only)
    out = [Filing(petition_id, r["county"], r["raw"], r["closed_at"] is not None, r["closed_at"],
                  r["closed_by"] or "", r["sample_size"] or 0, r["seed"] or "", r["released"])
           for r in rows]
    if only and not out:
        out = [Filing(petition_id, only, 0, False, None, "", 0, "", 0)]
    return out


@dataclass(frozen=True, slots=True)
class SampleEntry:
    signature_id: str
    batch_id: str
    line: int
    rank: int
    sampled: bool
    draw_key: str


async def sample_entries(pool: asyncpg.Pool, petition_id: str, county: str,
                         include_unsampled: bool) -> AsyncIterator[SampleEntry]:
    """The county's signatures in draw order (re-drawn from the recorded seed)."""
    filing = (await list_counties(pool, petition_id, county))[0]
    if not filing.closed:
        raise FailedPrecondition(f"{county}'s filing for {petition_id!r} is open: no sample yet")
    if not filing.seed:
        raise FailedPrecondition(f"petition {petition_id!r} is verified by full count: "
                                 f"{county} has no sample")
    rows = await pool.fetch("SELECT signature_id, batch_id, line, sampled FROM intake.signatures "
                            "WHERE petition_id = $1 AND county = $2", petition_id, county)
    by_id = {str(r["signature_id"]): r for r in rows}
    for rank, (sid, key) in enumerate(draw_order(filing.seed, by_id), start=1):
        r = by_id[sid]
        if not include_unsampled and not r["sampled"]:
            break
        yield SampleEntry(sid, str(r["batch_id"]), r["line"], rank, r["sampled"], key)


async def set_method(pool: asyncpg.Pool, petition_id: str, method: Method, rules: SamplingRules,
                     reason: str, actor: str) -> repository.PetitionRow:
    async with pool.acquire() as conn, conn.transaction():
        p = await conn.fetchrow("SELECT * FROM intake.petitions WHERE petition_id = $1 FOR UPDATE",
                                petition_id)
        if p is None:
            raise NotFound(f"no petition {petition_id!r}")
        closed = await conn.fetchval("SELECT count(*) FROM intake.counties WHERE petition_id = $1",
                                     petition_id)
        if closed:
            raise FailedPrecondition(f"{closed} county filing(s) of {petition_id!r} are closed: "
                                     "the verification method can no longer change")
        before = Method(p["method"])
        if method is Method.RANDOM_SAMPLE and before is Method.FULL_COUNT and await conn.fetchval(
                "SELECT 1 FROM intake.signatures WHERE petition_id = $1 LIMIT 1", petition_id):
            raise FailedPrecondition(f"signatures of {petition_id!r} already went to matching: "
                                     "it cannot become a random-sample petition")
        await conn.execute(
            "UPDATE intake.petitions SET method = $2, sample_minimum = $3, sample_percent = $4, "
            "fail_below_percent = $5, qualify_above_percent = $6 WHERE petition_id = $1",
            petition_id, method.value, rules.minimum, rules.percent, rules.fail_below,
            rules.qualify_above)
        released = 0
        if method is Method.FULL_COUNT:
            while held := await conn.fetch(
                    "SELECT * FROM intake.signatures WHERE petition_id = $1 AND NOT released "
                    "ORDER BY received_seq LIMIT $2", petition_id, CHUNK):
                await _release(conn, held)
                released += len(held)
        await audit.record(conn, actor, "petition.method-changed", petition_id, {
            "from": repository.rules_detail(before, repository.rules_of(p)),
            "to": repository.rules_detail(method, rules), "reason": reason,
            "released": released})
    return await repository.get_petition(pool, petition_id)


class Releaser:
    """Filing deadlines and full counts: see the module's docstring."""

    def __init__(self, pool: asyncpg.Pool, outbox: kafka.OutboxPublisher | None,
                 interval: float = 0.25, in_flight: int = IN_FLIGHT, chunk: int = CHUNK,
                 deadlines_every: float = 10.0) -> None:
        self._pool = pool
        self._outbox = outbox
        self._interval = interval
        self._in_flight = in_flight
        self._chunk = chunk
        self._deadlines_every = deadlines_every

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        last_deadlines = -self._deadlines_every
        while not stop.is_set():
            deadlines = loop.time() - last_deadlines >= self._deadlines_every
            try:
                sent = await self.once(deadlines)
                if deadlines:
                    last_deadlines = loop.time()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                log.warning("releaser pass failed (%s); retrying", exc.__class__.__name__)
                sent = 0
            if sent and self._outbox is not None:
                self._outbox.wake.set()
            try:
                await asyncio.wait_for(stop.wait(), 0.05 if sent else self._interval)
            except TimeoutError:
                pass

    async def once(self, deadlines: bool = True) -> int:
        """One pass; returns how many signatures (or counties) it acted on."""
        acted = await self._close_due_counties() if deadlines else 0
        if not await table_exists(self._pool, "tally.decisions"):
            return acted
        acted += await self._start_full_counts()
        for petition_id in await self._pool.fetch(
                "SELECT petition_id FROM intake.petitions p WHERE full_count_started_at IS NOT NULL "
                "AND EXISTS (SELECT 1 FROM intake.signatures s WHERE s.petition_id = p.petition_id "
                "AND NOT s.released) AND NOT EXISTS (SELECT 1 FROM tally.decisions d "
                "WHERE d.petition_id = p.petition_id AND d.stage = 'full-count')"):
            acted += await self._release_chunk(petition_id["petition_id"])
        return acted

    async def _close_due_counties(self) -> int:
        due = await self._pool.fetch(
            "SELECT p.petition_id, s.county FROM intake.petitions p CROSS JOIN LATERAL "
            "(SELECT DISTINCT county FROM intake.signatures WHERE petition_id = p.petition_id "
            " UNION SELECT unnest(p.counties)) s "
            "WHERE p.filing_closes_at <= now() AND NOT EXISTS (SELECT 1 FROM intake.counties c "
            "WHERE c.petition_id = p.petition_id AND c.county = s.county)")
        for r in due:
            await close_county(self._pool, r["petition_id"], r["county"],
                               actor="system:intake (filing deadline)")
        return len(due)

    async def _start_full_counts(self) -> int:
        started = 0
        for r in await self._pool.fetch(
                "SELECT p.petition_id FROM intake.petitions p JOIN tally.decisions d "
                "USING (petition_id) WHERE p.method = 'random-sample' "
                "AND p.full_count_started_at IS NULL AND d.stage = 'random-sample' "
                "AND d.outcome = 'FULL_COUNT'"):
            async with self._pool.acquire() as conn, conn.transaction():
                done = await conn.fetchval(
                    "UPDATE intake.petitions SET full_count_started_at = now() "
                    "WHERE petition_id = $1 AND full_count_started_at IS NULL RETURNING 1",
                    r["petition_id"])
                if done:
                    held = await conn.fetchval("SELECT count(*) FROM intake.signatures "
                                               "WHERE petition_id = $1 AND NOT released",
                                               r["petition_id"])
                    await audit.record(conn, "system:intake", "petition.full-count-started",
                                       r["petition_id"], {"signatures_to_verify": held})
                    log.info("full count of petition %s: %d signatures to verify",
                             r["petition_id"], held)
                    started += 1
        return started

    async def _release_chunk(self, petition_id: str) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            state = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM intake.signatures WHERE petition_id = $1 AND released)"
                " - (SELECT count(*) FROM tally.results WHERE petition_id = $1) AS in_flight, "
                "(SELECT count(*) FROM tally.results WHERE petition_id = $1 AND status = 'VALID') "
                ">= (SELECT required_signatures FROM intake.petitions WHERE petition_id = $1) "
                "AS reached", petition_id)
            assert state is not None
            if state["reached"]:
                # The requirement is met (tally records the decision on its next pass): the
                # count stops here (AB 2219); what is in flight is still verified.
                return 0
            room = min(self._chunk, self._in_flight - int(state["in_flight"]))
            if room <= 0:
                return 0
            rows = await conn.fetch(
                "SELECT * FROM intake.signatures WHERE petition_id = $1 AND NOT released "
                "ORDER BY received_seq LIMIT $2 FOR UPDATE SKIP LOCKED", petition_id, room)
            await _release(conn, rows)
            return len(rows)
