"""Tally's Postgres access: applying verified events and reading counts.

Reads intake's tables (petitions, signatures, batches) for the raw counts; writes only
its own schema.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import date

import asyncpg

from sigverify_common import audit
from sigverify_common.db import Conn
from sigverify_common.errors import NotFound
from sigverify_common.sampling import Method, SamplingRules
from sigverify_common.vocab import Reason, Status
from sigverify_tally.domain import Counts, fold, total
from sigverify_tally.projection import Outcome
from sigverify_tally.statutory import Assessment, CountyInput, Recorded, Stage, assess


@dataclass(frozen=True, slots=True)
class ResultRow:
    #: Canonical UUID texts, as events carry them (the topic's checks make sure).
    signature_id: str
    petition_id: str
    batch_id: str
    county: str
    line: int
    circulator_id: str
    status: Status
    reason: Reason
    voter_id: str
    score: float
    revision: int


async def apply_results(conn: Conn, rows: Sequence[ResultRow]) -> None:
    """Upsert keeping the highest revision of each signature."""
    latest: dict[str, ResultRow] = {}
    for r in rows:
        if r.signature_id not in latest or latest[r.signature_id].revision < r.revision:
            latest[r.signature_id] = r
    rows = list(latest.values())
    await conn.execute(
        "INSERT INTO tally.results (signature_id, petition_id, batch_id, county, line, "
        "circulator_id, status, reason, voter_id, score, revision) "
        "SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::bigint[], "
        "$6::text[], $7::text[], $8::text[], $9::text[], $10::float8[], $11::bigint[]) "
        "ON CONFLICT (signature_id) DO UPDATE SET status = EXCLUDED.status, "
        "reason = EXCLUDED.reason, voter_id = EXCLUDED.voter_id, score = EXCLUDED.score, "
        "revision = EXCLUDED.revision, updated_at = now() "
        "WHERE tally.results.revision < EXCLUDED.revision",
        [r.signature_id for r in rows], [r.petition_id for r in rows], [r.batch_id for r in rows],
        [r.county for r in rows], [r.line for r in rows], [r.circulator_id for r in rows],
        [r.status.value for r in rows], [r.reason.value for r in rows],
        [r.voter_id for r in rows], [r.score for r in rows], [r.revision for r in rows],
    )


@dataclass(frozen=True, slots=True)
class PetitionInfo:
    petition_id: str
    title: str
    required: int
    deadline: date


@dataclass(frozen=True, slots=True)
class TallySnapshot:
    petition: PetitionInfo
    total: Counts
    by_county: dict[str, Counts]
    by_batch: dict[str, Counts]
    by_circulator: dict[str, Counts]
    rows_rejected: int
    #: (county, circulator) -> counts: circulators are compared within their county.
    by_county_circulator: dict[tuple[str, str], Counts] = field(default_factory=dict)
    statutory: Assessment | None = None


GROUPS = {"county": "county", "batch": "batch_id::text", "circulator": "circulator_id"}

# The counts are read from cells that triggers keep beside the rows (intake's migration 0007,
# tally's 0003): a request costs the same at 1,000 signatures and at 1,000,000.
RECEIVED_CELLS = "intake.received_counts"
RESULT_CELLS = "tally.result_counts"


async def snapshot(pool: asyncpg.Pool, petition_id: str) -> TallySnapshot:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        p = await conn.fetchrow("SELECT * FROM intake.petitions WHERE petition_id = $1", petition_id)
        if p is None:
            raise NotFound(f"no petition {petition_id!r}")
        groups: dict[str, dict[str, Counts]] = {}
        for name, expr in GROUPS.items():
            received = await conn.fetch(
                f"SELECT {expr} AS k, sum(received)::bigint AS n, sum(held)::bigint AS held "  # noqa: S608
                f"FROM {RECEIVED_CELLS} WHERE petition_id = $1 GROUP BY 1 "
                "HAVING sum(received) <> 0", petition_id)
            statuses = await conn.fetch(
                f"SELECT {expr} AS k, status, reason, sum(n)::bigint AS n FROM {RESULT_CELLS} "  # noqa: S608
                "WHERE petition_id = $1 GROUP BY 1, 2, 3 HAVING sum(n) <> 0", petition_id)
            groups[name] = fold(
                ((r["k"], r["n"], r["held"]) for r in received),
                ((r["k"], Status(r["status"]), Reason(r["reason"]), r["n"]) for r in statuses),
            )
        received = await conn.fetch(
            f"SELECT county, circulator_id, sum(received)::bigint AS n FROM {RECEIVED_CELLS} "  # noqa: S608
            "WHERE petition_id = $1 GROUP BY 1, 2 HAVING sum(received) <> 0", petition_id)
        statuses = await conn.fetch(
            "SELECT county, circulator_id, status, reason, sum(n)::bigint AS n "  # noqa: S608
            f"FROM {RESULT_CELLS} WHERE petition_id = $1 GROUP BY 1, 2, 3, 4 "
            "HAVING sum(n) <> 0", petition_id)
        pairs = fold(
            (((r["county"], r["circulator_id"]), r["n"]) for r in received),
            (((r["county"], r["circulator_id"]), Status(r["status"]), Reason(r["reason"]), r["n"])
             for r in statuses),
        )
        rejected = await conn.fetchval(
            "SELECT coalesce(sum(rows_rejected), 0) FROM intake.batches "
            "WHERE petition_id = $1", petition_id)
        state = await statutory_state(conn, p, total(groups["county"].values()))
    return TallySnapshot(
        petition=PetitionInfo(p["petition_id"], p["title"], p["required_signatures"], p["deadline"]),
        total=total(groups["county"].values()),
        by_county=groups["county"], by_batch=groups["batch"], by_circulator=groups["circulator"],
        rows_rejected=int(rejected), by_county_circulator=pairs, statutory=state,
    )


def _recorded(r: asyncpg.Record) -> Recorded:
    return Recorded(Stage(r["stage"]), Outcome(r["outcome"]), json.loads(r["detail"]),
                    r["decided_at"].isoformat())


async def statutory_state(conn: Conn, petition: asyncpg.Record, counted: Counts) -> Assessment:
    """The petition's place in the statutory process (``counted``: its whole-petition counts)."""
    pid = petition["petition_id"]
    counties = await conn.fetch(
        f"WITH stored AS (SELECT county, sum(received)::bigint AS raw FROM {RECEIVED_CELLS} "  # noqa: S608
        "  WHERE petition_id = $1 GROUP BY county HAVING sum(received) <> 0), "
        "named AS (SELECT county FROM stored UNION SELECT unnest($2::text[]) "
        "  UNION SELECT county FROM intake.counties WHERE petition_id = $1) "
        "SELECT n.county, coalesce(s.raw, 0) AS raw, c.closed_at IS NOT NULL AS closed, "
        "  coalesce(c.sample_size, 0) AS sample_size, coalesce(c.seed, '') AS seed "
        "FROM named n LEFT JOIN stored s USING (county) LEFT JOIN intake.counties c "
        "  ON c.petition_id = $1 AND c.county = n.county ORDER BY 1", pid, petition["counties"])
    sampled = await conn.fetch(
        "SELECT s.county, r.status, r.reason, count(*) AS n FROM intake.signatures s "
        "JOIN tally.results r USING (signature_id) WHERE s.petition_id = $1 AND s.sampled "
        "GROUP BY 1, 2, 3", pid)
    sample = fold([], ((r["county"], Status(r["status"]), Reason(r["reason"]), r["n"])
                       for r in sampled))
    recorded = {d.stage: d for d in map(_recorded, await conn.fetch(
        "SELECT * FROM tally.decisions WHERE petition_id = $1", pid))}
    rules = SamplingRules(petition["sample_minimum"], petition["sample_percent"],
                          petition["fail_below_percent"], petition["qualify_above_percent"])
    return assess(
        Method(petition["method"]), rules, petition["required_signatures"],
        [CountyInput(c["county"], c["raw"], c["closed"], c["sample_size"], c["seed"],
                     sample.get(c["county"], Counts())) for c in counties],
        counted, recorded)


async def whole_petition(conn: Conn, petition_id: str) -> tuple[asyncpg.Record | None, Counts]:
    """The petition's row (None when there is none) and its counts as a whole."""
    p = await conn.fetchrow("SELECT * FROM intake.petitions WHERE petition_id = $1", petition_id)
    counts = await conn.fetchrow(
        "SELECT coalesce(sum(received), 0)::bigint AS received, "  # noqa: S608
        f"coalesce(sum(held), 0)::bigint AS held FROM {RECEIVED_CELLS} WHERE petition_id = $1",
        petition_id)
    assert counts is not None  # an aggregate always has a row
    statuses = await conn.fetch(
        f"SELECT status, reason, sum(n)::bigint AS n FROM {RESULT_CELLS} "  # noqa: S608
        "WHERE petition_id = $1 GROUP BY 1, 2 HAVING sum(n) <> 0", petition_id)
    counted = fold([("", counts["received"], counts["held"])],
                   (("", Status(r["status"]), Reason(r["reason"]), r["n"]) for r in statuses))
    return p, counted.get("", Counts())


#: How long a petition's results must be unchanged before a decision that needs every
#: (sampled) signature verified is recorded.
SETTLE_SECONDS = 2.0


async def decide_due(pool: asyncpg.Pool, petition_id: str) -> list[Recorded]:
    """Record the decisions now due for the petition (each once, with an audit entry)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        p, counted = await whole_petition(conn, petition_id)
        if p is None:
            return []
        a = await statutory_state(conn, p, counted)
        # A decision that rests on every signature being verified waits until the results
        # have been still for SETTLE_SECONDS: dedupe may still be revising a signature whose
        # voter's other signature has just been applied.
        settled = await conn.fetchval(
            "SELECT coalesce(max(updated_at) < now() - make_interval(secs => $2), true) "  # noqa: S608
            f"FROM {RESULT_CELLS} WHERE petition_id = $1", petition_id, SETTLE_SECONDS)
        made = []
        for d in a.due:
            if not settled and (d.stage is Stage.RANDOM_SAMPLE or d.outcome is Outcome.FAILS):
                break
            if await conn.fetchval(
                    "INSERT INTO tally.decisions (petition_id, stage, outcome, detail) "
                    "VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT DO NOTHING RETURNING 1",
                    petition_id, d.stage.value, d.outcome.value, json.dumps(d.detail)):
                await audit.record(conn, "system:tally", f"petition.decided.{d.stage.value}",
                                   petition_id, {"outcome": d.outcome.value,
                                                 "explanation": a.explanation, **d.detail})
                made.append(d)
        return made


async def undecided(pool: asyncpg.Pool) -> list[str]:
    """Petitions with signatures and no final decision yet."""
    rows = await pool.fetch(
        "SELECT p.petition_id FROM intake.petitions p WHERE EXISTS (SELECT 1 FROM "
        "intake.signatures s WHERE s.petition_id = p.petition_id) AND NOT EXISTS (SELECT 1 FROM "
        "tally.decisions d WHERE d.petition_id = p.petition_id AND d.outcome <> 'FULL_COUNT')")
    return [r["petition_id"] for r in rows]


async def status_counts(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """(petition_id, status, reason, n) over every petition (for the metrics gauges)."""
    return await pool.fetch(
        f"SELECT petition_id, status, reason, sum(n)::bigint AS n FROM {RESULT_CELLS} "  # noqa: S608
        "GROUP BY 1, 2, 3 HAVING sum(n) <> 0")


async def received_counts(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """(petition_id, n) signatures stored by intake, per petition."""
    return await pool.fetch(
        f"SELECT petition_id, sum(received)::bigint AS n FROM {RECEIVED_CELLS} "  # noqa: S608
        "GROUP BY 1 HAVING sum(received) <> 0")


async def result(pool: asyncpg.Pool, signature_id: uuid.UUID) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM tally.results WHERE signature_id = $1", signature_id)
    if row is None:
        raise NotFound(f"no verified result for signature {signature_id} (yet)")
    return row


async def results(pool: asyncpg.Pool, petition_id: str) -> AsyncIterator[asyncpg.Record]:
    """Every verified signature, then every one held back from matching (NOT_SAMPLED);
    NotFound for a petition intake does not have (as ``snapshot``: an export of a misspelt
    petition is an error, not an empty file)."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        if not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM intake.petitions WHERE petition_id = $1)",
                petition_id):
            raise NotFound(f"no petition {petition_id!r}")
        async for r in conn.cursor(
            "SELECT * FROM tally.results WHERE petition_id = $1 ORDER BY county, batch_id, line",
            petition_id, prefetch=2000,
        ):
            yield r
        async for r in conn.cursor(
            "SELECT signature_id, petition_id, batch_id, county, line, circulator_id, "
            "'NOT_SAMPLED' AS status, '' AS reason, '' AS voter_id, 0.0::float8 AS score, "
            "0::bigint AS revision FROM intake.signatures WHERE petition_id = $1 AND NOT released "
            "ORDER BY county, batch_id, line", petition_id, prefetch=2000,
        ):
            yield r


@dataclass(frozen=True, slots=True)
class StatutoryMetrics:
    """One petition's place in the statutory process, for the metrics gauges."""

    petition_id: str
    assessment: Assessment
    #: The whole petition's counts (received, verified, not sampled).
    counted: Counts


async def statutory_metrics(pool: asyncpg.Pool) -> list[StatutoryMetrics]:
    """``statutory_state`` of every petition with signatures, one read-only transaction each.

    Counts the petition as a whole (as ``decide_due`` does) rather than per group: six
    queries per petition, each an aggregate over the petition's rows.
    """
    ids = await pool.fetch(
        "SELECT p.petition_id FROM intake.petitions p WHERE EXISTS (SELECT 1 FROM "
        "intake.signatures s WHERE s.petition_id = p.petition_id) ORDER BY 1")
    out = []
    for pid in (r["petition_id"] for r in ids):
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            p, whole = await whole_petition(conn, pid)
            if p is None:
                continue
            out.append(StatutoryMetrics(pid, await statutory_state(conn, p, whole), whole))
    return out
