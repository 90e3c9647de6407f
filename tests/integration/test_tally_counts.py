"""The count cells the tally reads (kept by triggers beside the rows) agree with a recount of
the rows, through concurrent revisions, deletes and the real intake path; and the snapshot the
RPCs serve is read from them."""

from __future__ import annotations

import asyncio
import random
import uuid

import asyncpg

from sigverify_cli import stack
from sigverify_cli.synth import SynthOutput
from sigverify_common.vocab import Reason, Status
from sigverify_tally import invariants, repository
from sigverify_tally.repository import ResultRow
from tests.integration import helpers as h

OUTCOMES = [(Status.VALID, Reason.MATCHED), (Status.INVALID, Reason.DUPLICATE),
            (Status.INVALID, Reason.NOT_REGISTERED), (Status.REVIEW, Reason.PENDING_REVIEW)]


async def recount(pool: asyncpg.Pool, pid: str) -> dict[tuple[str, str, str], int]:
    rows = await pool.fetch("SELECT circulator_id, status, reason, count(*) AS n "
                            "FROM tally.results WHERE petition_id = $1 GROUP BY 1, 2, 3", pid)
    return {(r["circulator_id"], r["status"], r["reason"]): r["n"] for r in rows}


async def cells(pool: asyncpg.Pool, pid: str) -> dict[tuple[str, str, str], int]:
    rows = await pool.fetch("SELECT circulator_id, status, reason, sum(n)::bigint AS n "
                            "FROM tally.result_counts WHERE petition_id = $1 GROUP BY 1, 2, 3 "
                            "HAVING sum(n) <> 0", pid)
    return {(r["circulator_id"], r["status"], r["reason"]): r["n"] for r in rows}


async def test_result_cells_agree_with_the_rows_through_concurrent_revisions_and_deletes(
    live_stack: stack.StackState,
) -> None:
    pid = f"cells-{uuid.uuid4().hex[:8]}"
    batch = uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(400)]
    rng = random.Random(7)

    def rows(revision: int) -> list[ResultRow]:
        out = []
        for i, sid in enumerate(ids):
            status, reason = rng.choice(OUTCOMES)
            out.append(ResultRow(sid, pid, batch, "Kern", i, f"c{i % 5}", status, reason,
                                 f"v{i}", 0.9, revision + rng.randrange(3)))
        return sorted(out, key=lambda r: r.signature_id)  # one lock order: no deadlock

    pool = await asyncpg.create_pool(live_stack.database_url, min_size=4, max_size=6)
    try:
        async def apply(part: list[ResultRow]) -> None:
            async with pool.acquire() as conn, conn.transaction():
                await repository.apply_results(conn, part)

        # Six writers at once, each a different (random) revision of every signature: the
        # highest revision wins per signature, and every cell moves with it.
        for round_ in range(3):
            await asyncio.gather(*(apply(rows(10 * round_ + k)) for k in range(6)))
            assert await cells(pool, pid) == await recount(pool, pid)
        assert sum((await cells(pool, pid)).values()) == len(ids)
        # A redelivered, older batch changes nothing.
        before = await cells(pool, pid)
        await apply(rows(0))
        assert await cells(pool, pid) == before
        # Rows deleted by hand (an operator's repair) leave the cells right too.
        await pool.execute("DELETE FROM tally.results WHERE signature_id = ANY($1::uuid[])",
                           ids[:50])
        assert await cells(pool, pid) == await recount(pool, pid)
        assert sum((await cells(pool, pid)).values()) == len(ids) - 50
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            agree = await invariants._counts_agree(conn, pid)
        assert agree.ok, agree.examples
        # A cell edited behind the triggers' back is what the check is for.
        await pool.execute("UPDATE tally.result_counts SET n = n + 1 WHERE petition_id = $1 "
                           "AND circulator_id = 'c1' AND n > 0 "
                           "AND status = (SELECT min(status) FROM tally.result_counts "
                           "WHERE petition_id = $1 AND circulator_id = 'c1' AND n > 0)", pid)
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            broken = await invariants._counts_agree(conn, pid)
        assert broken.violations >= 1 and broken.examples[0].startswith(f"results:{batch}/c1/")
    finally:
        await pool.execute("DELETE FROM tally.results WHERE petition_id = $1", pid)
        await pool.execute("DELETE FROM tally.result_counts WHERE petition_id = $1", pid)
        await pool.close()


async def test_received_cells_follow_intake_and_the_tally_reads_them(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput,
) -> None:
    state = live_stack
    pid = h.new_petition_id()
    await h.create_petition(state, pid)
    path, county = synth_data.batches[1]
    receipt = await h.submit(state, path, pid, county)
    pool = await asyncpg.create_pool(state.database_url, min_size=1, max_size=2)
    try:
        stored = await pool.fetchval(
            "SELECT count(*) FROM intake.signatures WHERE petition_id = $1", pid)
        cell_total = await pool.fetchval(
            "SELECT sum(received)::bigint FROM intake.received_counts WHERE petition_id = $1", pid)
        assert stored == cell_total == receipt.signatures_accepted
        circulators = await pool.fetchval(
            "SELECT count(DISTINCT circulator_id) FROM intake.signatures WHERE petition_id = $1",
            pid)
        assert circulators == await pool.fetchval(
            "SELECT count(*) FROM intake.received_counts WHERE petition_id = $1", pid)
        await h.wait_verified(state, pid, receipt.signatures_accepted)
        t = await h.tally(state, pid)
        assert t.total.received == receipt.signatures_accepted
        recounted = await pool.fetchval(
            "SELECT count(*) FROM tally.results WHERE petition_id = $1 AND status = 'VALID'", pid)
        assert t.total.valid == recounted
        checks = {c.name: c for c in await invariants.check(pool, pid)}
        assert checks["counts_agree"].ok, checks["counts_agree"].examples
    finally:
        await pool.close()
