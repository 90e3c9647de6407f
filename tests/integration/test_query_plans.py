"""The queries a consumer runs for every batch find their rows by an index, so that a
batch costs the same at the millionth signature as at the first (a sequential scan per
batch makes a petition's cost grow with the square of its size). Asked of the real
PostgreSQL with sequential scans disabled: the planner still chooses one only when no
index can serve the query."""

from __future__ import annotations

import json

import asyncpg
import pytest

from sigverify_cli import stack
from sigverify_dedupe.consumer import DECIDING_ROWS

pytestmark = pytest.mark.integration


def _nodes(plan: dict[str, object]) -> list[dict[str, object]]:
    out = [plan]
    for child in plan.get("Plans", []):  # type: ignore[union-attr]
        out += _nodes(child)
    return out


async def test_dedupe_reads_a_batchs_voters_by_their_index(live_stack: stack.StackState) -> None:
    """The rows that decide a voter's group come from the partial indexes made for them, in
    their order (no sort of the voter's whole group: a voter with 20,000 signatures)."""
    conn = await asyncpg.connect(live_stack.database_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + DECIDING_ROWS,
                                      ["petition-a", "petition-b"], ["V1", "V2"])
    finally:
        await conn.close()
    nodes = _nodes(json.loads(raw)[0]["Plan"])
    scans = {(n["Node Type"], n.get("Index Name")) for n in nodes
             if n.get("Relation Name") == "signatures"}
    assert scans and all(kind != "Seq Scan" for kind, _ in scans), scans
    assert {n["Index Name"] for n in nodes if n.get("Index Name")} == {
        "signatures_earliest", "signatures_counted"}, scans
    assert not any(n["Node Type"] in ("Sort", "Incremental Sort") for n in nodes), nodes
