"""Delivery invariants of a petition's results, checked against intake's and dedupe's records.

Each check counts its violations and names a few offenders (batch, signature or voter ids;
never voter data). "Final" here is a signature with a result in ``tally.results`` (valid,
invalid or in review: tally's *verified*); a signature held back from matching (outside a
random sample: NOT_SAMPLED) is neither final nor pending.

- ``received_accounted``: per batch and for the petition, final + pending + not sampled =
  received, where received, pending (sent to matching, no result) and not sampled come from
  intake and final from tally; a result counted twice, in the wrong batch or for a held-back
  signature breaks it.
- ``final_by_status``: per batch and for the petition, valid + invalid by reason + review =
  final: every result has a known status and a reason that goes with it.
- ``verified_were_received``: no result for a signature intake did not store under that
  petition and batch.
- ``one_valid_per_voter``: no voter has more than one valid signature on the petition (among
  results dedupe has settled: while a late duplicate is being re-resolved two may briefly
  be valid).
- ``agrees_with_dedupe``: every result is what dedupe decided at that revision; none ahead
  of dedupe, none dedupe never produced (a result behind dedupe is only late, not wrong).
- ``counts_agree``: the count cells the tally reads (``intake.received_counts``,
  ``tally.result_counts``, kept by triggers) equal a recount of the rows, cell by cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from sigverify_common.db import Conn, table_exists
from sigverify_common.vocab import Reason

EXAMPLES = 10


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    description: str
    violations: int
    examples: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.violations == 0


DESCRIPTIONS = {
    "received_accounted": "per batch and petition: final + pending + not sampled = received",
    "final_by_status": "per batch and petition: valid + invalid by reason + review = final",
    "verified_were_received": "every verified signature was received (same petition and batch)",
    "one_valid_per_voter": "no voter has more than one valid signature on the petition",
    "agrees_with_dedupe": "every result is dedupe's decision at its revision",
    "counts_agree": "the tally's count cells equal a recount of the rows",
}
CHECKS = tuple(DESCRIPTIONS)

INVALID_REASONS = sorted(r.value for r in Reason if r not in (Reason.MATCHED, Reason.PENDING_REVIEW))


async def _received_accounted(conn: Conn, pid: str) -> CheckResult:
    rows = await conn.fetch(
        "WITH i AS (SELECT s.batch_id, count(*) AS received, "
        "  count(*) FILTER (WHERE NOT s.released) AS not_sampled, "
        "  count(*) FILTER (WHERE s.released AND NOT EXISTS (SELECT 1 FROM tally.results r "
        "    WHERE r.signature_id = s.signature_id)) AS pending "
        "  FROM intake.signatures s WHERE s.petition_id = $1 GROUP BY 1), "
        "t AS (SELECT batch_id, count(*) AS final FROM tally.results WHERE petition_id = $1 "
        "  GROUP BY 1) "
        "SELECT coalesce(i.batch_id, t.batch_id)::text AS batch_id, "
        "  coalesce(i.received, 0) AS received, coalesce(i.not_sampled, 0) AS not_sampled, "
        "  coalesce(i.pending, 0) AS pending, coalesce(t.final, 0) AS final "
        "FROM i FULL JOIN t ON i.batch_id = t.batch_id ORDER BY 1", pid)
    bad = [r["batch_id"] for r in rows
           if r["final"] + r["pending"] + r["not_sampled"] != r["received"]]
    whole = sum(r["final"] + r["pending"] + r["not_sampled"] - r["received"] for r in rows)
    examples = (["petition"] if whole else []) + bad
    return CheckResult("received_accounted", DESCRIPTIONS["received_accounted"],
                       len(bad) + (1 if whole else 0), tuple(examples[:EXAMPLES]))


async def _final_by_status(conn: Conn, pid: str) -> CheckResult:
    rows = await conn.fetch(
        "SELECT batch_id::text AS batch_id, count(*) AS n FROM tally.results "
        "WHERE petition_id = $1 AND NOT ((status = 'VALID' AND reason = 'MATCHED') "
        "  OR (status = 'REVIEW' AND reason = 'PENDING_REVIEW') "
        "  OR (status = 'INVALID' AND reason = ANY($2::text[]))) "
        "GROUP BY 1 ORDER BY 1", pid, INVALID_REASONS)
    return CheckResult("final_by_status", DESCRIPTIONS["final_by_status"],
                       sum(r["n"] for r in rows), tuple(r["batch_id"] for r in rows[:EXAMPLES]))


async def _verified_were_received(conn: Conn, pid: str) -> CheckResult:
    n = await conn.fetchval(
        "SELECT count(*) FROM tally.results r LEFT JOIN intake.signatures s USING (signature_id) "
        "WHERE r.petition_id = $1 AND (s.signature_id IS NULL OR s.petition_id <> r.petition_id "
        "  OR s.batch_id <> r.batch_id)", pid)
    examples = await conn.fetch(
        "SELECT r.signature_id::text AS id FROM tally.results r LEFT JOIN intake.signatures s "
        "USING (signature_id) WHERE r.petition_id = $1 AND (s.signature_id IS NULL "
        "  OR s.petition_id <> r.petition_id OR s.batch_id <> r.batch_id) ORDER BY 1 LIMIT $2",
        pid, EXAMPLES) if n else []
    return CheckResult("verified_were_received", DESCRIPTIONS["verified_were_received"], int(n),
                       tuple(r["id"] for r in examples))


async def _one_valid_per_voter(conn: Conn, pid: str, settled: str) -> CheckResult:
    rows = await conn.fetch(
        "SELECT r.voter_id FROM tally.results r "  # noqa: S608 - settled is a code constant
        f"WHERE r.petition_id = $1 AND r.status = 'VALID' AND {settled} "
        "GROUP BY 1 HAVING count(*) > 1 ORDER BY 1", pid)
    return CheckResult("one_valid_per_voter", DESCRIPTIONS["one_valid_per_voter"], len(rows),
                       tuple(r["voter_id"] for r in rows[:EXAMPLES]))


async def _agrees_with_dedupe(conn: Conn, pid: str) -> CheckResult:
    where = ("r.petition_id = $1 AND (d.signature_id IS NULL OR r.revision > d.revision "
             "OR (r.revision = d.revision AND (r.status, r.reason) <> (d.status, d.reason)))")
    n = await conn.fetchval(
        "SELECT count(*) FROM tally.results r LEFT JOIN dedupe.signatures d "  # noqa: S608
        f"USING (signature_id) WHERE {where}", pid)
    examples = await conn.fetch(
        "SELECT r.signature_id::text AS id FROM tally.results r LEFT JOIN dedupe.signatures d "  # noqa: S608
        f"USING (signature_id) WHERE {where} ORDER BY 1 LIMIT $2", pid, EXAMPLES) if n else []
    return CheckResult("agrees_with_dedupe", DESCRIPTIONS["agrees_with_dedupe"], int(n),
                       tuple(r["id"] for r in examples))


async def _counts_agree(conn: Conn, pid: str) -> CheckResult:
    """Cells that differ from a recount (examples: ``received:<batch>/<circulator>`` or
    ``results:<batch>/<circulator>/<status>/<reason>``)."""
    received = await conn.fetch(
        "WITH rows AS (SELECT county, batch_id, circulator_id, count(*) AS received, "
        "  count(*) FILTER (WHERE NOT released) AS held FROM intake.signatures "
        "  WHERE petition_id = $1 GROUP BY 1, 2, 3), "
        "cells AS (SELECT county, batch_id, circulator_id, received, held "
        "  FROM intake.received_counts WHERE petition_id = $1 AND (received <> 0 OR held <> 0)) "
        "SELECT coalesce(r.batch_id, c.batch_id)::text || '/' "
        "  || coalesce(r.circulator_id, c.circulator_id) AS cell "
        "FROM rows r FULL JOIN cells c USING (county, batch_id, circulator_id) "
        "WHERE r.received IS DISTINCT FROM c.received OR r.held IS DISTINCT FROM c.held "
        "ORDER BY 1", pid)
    results = await conn.fetch(
        "WITH rows AS (SELECT county, batch_id, circulator_id, status, reason, count(*) AS n "
        "  FROM tally.results WHERE petition_id = $1 GROUP BY 1, 2, 3, 4, 5), "
        "cells AS (SELECT county, batch_id, circulator_id, status, reason, n "
        "  FROM tally.result_counts WHERE petition_id = $1 AND n <> 0) "
        "SELECT coalesce(r.batch_id, c.batch_id)::text || '/' "
        "  || coalesce(r.circulator_id, c.circulator_id) || '/' || coalesce(r.status, c.status) "
        "  || '/' || coalesce(r.reason, c.reason) AS cell "
        "FROM rows r FULL JOIN cells c USING (county, batch_id, circulator_id, status, reason) "
        "WHERE r.n IS DISTINCT FROM c.n ORDER BY 1", pid)
    bad = [f"received:{r['cell']}" for r in received] + [f"results:{r['cell']}" for r in results]
    return CheckResult("counts_agree", DESCRIPTIONS["counts_agree"], len(bad),
                       tuple(bad[:EXAMPLES]))


async def check(pool: asyncpg.Pool, petition_id: str) -> list[CheckResult]:
    """Every check of one petition, read in one consistent snapshot."""
    dedupe = await table_exists(pool, "dedupe.signatures")
    settled = ("EXISTS (SELECT 1 FROM dedupe.signatures d WHERE d.signature_id = r.signature_id "
               "AND d.revision = r.revision)") if dedupe else "TRUE"
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        out = [
            await _received_accounted(conn, petition_id),
            await _final_by_status(conn, petition_id),
            await _verified_were_received(conn, petition_id),
            await _one_valid_per_voter(conn, petition_id, settled),
        ]
        if dedupe:
            out.append(await _agrees_with_dedupe(conn, petition_id))
        out.append(await _counts_agree(conn, petition_id))
    return out


async def changed_since(pool: asyncpg.Pool) -> dict[str, datetime]:
    """Every petition with a count cell, and the last time one of its cells was written (a
    petition whose cells are still has nothing new to check)."""
    rows = await pool.fetch(
        "SELECT petition_id, max(t) AS t FROM (SELECT petition_id, max(updated_at) AS t "
        "FROM intake.received_counts GROUP BY 1 UNION ALL SELECT petition_id, max(updated_at) "
        "FROM tally.result_counts GROUP BY 1) x GROUP BY 1")
    return {r["petition_id"]: r["t"] for r in rows}


async def petitions(pool: asyncpg.Pool) -> list[str]:
    """Every petition (what the periodic check covers)."""
    return [r["petition_id"] for r in
            await pool.fetch("SELECT petition_id FROM intake.petitions ORDER BY 1")]


async def exists(pool: asyncpg.Pool, petition_id: str) -> bool:
    return bool(await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM intake.petitions WHERE petition_id = $1) "
        "OR EXISTS (SELECT 1 FROM tally.results WHERE petition_id = $1)", petition_id))
