"""A consumer's provenance check against intake's table (``provenance.received``): which
events are refused and why, and the printed fields of the others from the same read."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import asyncpg
import pytest

from sigverify_cli import stack
from sigverify_common import provenance
from sigverify_matching.consumer import PRINTED

pytestmark = pytest.mark.integration


async def test_refusals_and_the_printed_fields_in_one_read(live_stack: stack.StackState,
                                                           loaded_roll: int) -> None:
    conn = await asyncpg.connect(live_stack.database_url)
    try:
        stored = await conn.fetch(
            "SELECT signature_id, petition_id, batch_id, last_name, zip FROM intake.signatures "
            "ORDER BY received_seq LIMIT 2")
        assert len(stored) == 2
        a, b = stored
        # Intake's ids are time-ordered (sigverify_common.ids): version 7, in received order.
        assert {r["signature_id"].version for r in stored} == {7}
        assert a["batch_id"].version == 7
        assert str(a["signature_id"]) < str(b["signature_id"])

        def event(sid: object, petition: str, batch: object) -> SimpleNamespace:
            return SimpleNamespace(signature_id=str(sid), petition_id=petition,
                                   batch_id=str(batch))
        stranger = uuid.uuid4()
        events = [event(a["signature_id"], a["petition_id"], a["batch_id"]),
                  event(b["signature_id"], b["petition_id"], uuid.uuid4()),
                  event(stranger, a["petition_id"], a["batch_id"]),
                  event(stranger, "no-such-petition", a["batch_id"])]
        why, rows = await provenance.received(conn, events, PRINTED)
        assert why == [None,
                       f"signature {b['signature_id']} was received by intake for another "
                       "petition or batch",
                       f"signature {stranger} was never received by intake",
                       f"signature {stranger} was never received by intake (its petition "
                       "is unknown)"]
        assert list(rows) == [str(a["signature_id"])]
        row = rows[str(a["signature_id"])]
        assert (row["last_name"], row["zip"]) == (a["last_name"], a["zip"])
        assert set(PRINTED) <= set(row.keys())
        assert await provenance.refusals(conn, events) == why
    finally:
        await conn.close()
