"""Dedupe re-resolves a voter's group from the few stored signatures that decide it, against
the real PostgreSQL of the session's stack.

A clerk's batch of 20,000 copies of one signature made the dedupe consumer read and resolve
every earlier signature of that voter again for every batch (n^2 rows: minutes at 100 % CPU,
with other petitions waiting and health probes unanswered). These tests drive the service's
handler on the session's database, each inside a transaction that is rolled back (nothing
reaches the outbox, the broker or the other tests), and count the stored signatures each
batch reads; and they check against resolving every group whole, as before, that the few
rows read still give every signature the same outcome, under both duplicate policies, with
online signatures, late earlier signatures, reviews and rematches to another voter.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import date
from typing import Any

import asyncpg
import pytest

from sigverify.events.v1 import events_pb2
from sigverify_cli import stack
from sigverify_common.convert import reason_to_pb, source_to_pb, status_to_pb
from sigverify_common.topics import SIGNATURE_VERIFIED
from sigverify_common.vocab import DuplicatePolicy, Reason, Source, Status
from sigverify_dedupe.consumer import DedupeHandler
from sigverify_dedupe.domain import Entry, Rules, resolve
from sigverify_tally import repository as tally_repository
from sigverify_tally.convert import result_from_event

pytestmark = pytest.mark.integration


class Counting:
    """A connection that counts the rows its SELECTs read from dedupe.signatures."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.rows = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._conn.fetch(query, *args)
        if query.lstrip().upper().startswith("SELECT") and "dedupe.signatures" in query:
            self.rows += len(rows)
        return rows


@pytest.fixture
async def conn(live_stack: stack.StackState) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(live_stack.database_url)
    tx = c.transaction()
    await tx.start()
    try:
        yield c
    finally:
        await tx.rollback()
        await c.close()


def handler_for(rules: dict[str, Rules]) -> DedupeHandler:
    """The service's handler with the petitions' rules given (not read from intake)."""
    h = DedupeHandler(None, None)  # type: ignore[arg-type]  # _apply uses the connection
    for pid, r in rules.items():
        h._rules._cache[pid] = (float("inf"), r)
    return h


def matched(petition_id: str, voter_id: str, seq: int, *, signed: date | None = date(2017, 5, 1),
            reason: Reason = Reason.MATCHED, online: bool = False, revision: int = 0,
            signature_id: str = "") -> events_pb2.SignatureMatched:
    return events_pb2.SignatureMatched(
        event_id=str(uuid.uuid4()), signature_id=signature_id or str(uuid.uuid4()),
        petition_id=petition_id, batch_id=str(uuid.uuid5(uuid.NAMESPACE_URL, petition_id)),
        county="Kern", line=seq, circulator_id="C9", signed_on=signed.isoformat() if signed else "",
        reason=reason_to_pb(reason), voter_id=voter_id, score=0.99,
        source=source_to_pb(Source.ONLINE if online else Source.PAPER), received_seq=seq,
        match_revision=revision)


async def stored(conn: asyncpg.Connection, petitions: Sequence[str]) -> list[asyncpg.Record]:
    return list(await conn.fetch("SELECT * FROM dedupe.signatures WHERE petition_id = ANY($1)",
                                 list(petitions)))


def resolved_whole(rows: Sequence[asyncpg.Record], rules: dict[str, Rules]
                   ) -> dict[str, tuple[str, str]]:
    """Every stored signature's outcome with each group resolved whole (the old way)."""
    groups: dict[tuple[str, str], list[Entry]] = {}
    for r in rows:
        sid = str(r["signature_id"])
        groups.setdefault((r["petition_id"], r["voter_id"] or sid), []).append(Entry(
            sid, Reason(r["match_reason"]), r["signed_on"], r["received_seq"], r["online"]))
    out: dict[str, tuple[str, str]] = {}
    for (pid, _), entries in groups.items():
        out |= {sid: (s.value, why.value) for sid, (s, why) in resolve(entries, rules[pid]).items()}
    return out


@pytest.mark.parametrize("policy", [DuplicatePolicy.KEEP_FIRST, DuplicatePolicy.INVALIDATE_ALL])
async def test_a_voter_with_thousands_of_signatures_costs_each_batch_only_its_own_rows(
    conn: asyncpg.Connection, policy: DuplicatePolicy
) -> None:
    pid = f"p-dd-{uuid.uuid4().hex[:8]}"
    handler = handler_for({pid: Rules(policy)})
    batches, size = 12, 250
    counting = Counting(conn)
    read: list[int] = []
    published: list[int] = []
    for b in range(batches):
        msgs = [matched(pid, "V1", b * size + i + 1) for i in range(size)]
        before = counting.rows
        published.append(await handler._apply(counting, msgs))  # type: ignore[arg-type]
        read.append(counting.rows - before)
    # Reading the voter's whole group made batch k read the k*250 signatures before it
    # (2,750 in the last batch, 16,500 in all); a batch now reads the few that decide.
    assert max(read) <= 10, read
    # One SignatureVerified per new signature, none again for those whose outcome stays.
    assert published == [size] * batches, published
    rows = await stored(conn, [pid])
    outcome = {(r["status"], r["reason"]) for r in rows if r["received_seq"] != 1}
    assert outcome == {("INVALID", "DUPLICATE")}
    first = next(r for r in rows if r["received_seq"] == 1)
    assert (first["status"], first["reason"]) == (
        ("VALID", "MATCHED") if policy is DuplicatePolicy.KEEP_FIRST else ("INVALID", "DUPLICATE"))
    assert resolved_whole(rows, {pid: Rules(policy)}) == {
        str(r["signature_id"]): (r["status"], r["reason"]) for r in rows}


async def test_late_earlier_signature_and_a_review_move_the_count_reading_few_rows(
    conn: asyncpg.Connection
) -> None:
    pid = f"p-dd-{uuid.uuid4().hex[:8]}"
    handler = handler_for({pid: Rules()})
    counting = Counting(conn)
    await handler._apply(counting, [matched(pid, "V1", s, signed=date(2017, 5, 10))  # type: ignore[arg-type]
                                    for s in range(1, 1001)])
    # A sheet signed earlier arrives late: it takes the count over from signature 1.
    late = matched(pid, "V1", 1001, signed=date(2017, 5, 2))
    before = counting.rows
    assert await handler._apply(counting, [late]) == 2  # type: ignore[arg-type]
    assert counting.rows - before <= 10
    # A reviewer finds its signature does not match: the count goes back to signature 1.
    review = matched(pid, "V1", 1001, signed=date(2017, 5, 2), revision=1,
                     reason=Reason.SIGNATURE_MISMATCH, signature_id=late.signature_id)
    before = counting.rows
    assert await handler._apply(counting, [review]) == 2  # type: ignore[arg-type]
    assert counting.rows - before <= 10
    rows = await stored(conn, [pid])
    valid = [r["received_seq"] for r in rows if r["status"] == "VALID"]
    assert valid == [1]
    assert resolved_whole(rows, {pid: Rules()}) == {
        str(r["signature_id"]): (r["status"], r["reason"]) for r in rows}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_few_rows_read_decide_as_the_whole_group_would(
    conn: asyncpg.Connection, seed: int
) -> None:
    """Random batches of new, redelivered and rematched signatures of a few voters on three
    petitions (keep-first, keep-first accepting online, invalidate-all): after every batch
    each stored outcome is the one resolving every group whole gives."""
    rnd = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    rules = {f"p-kf-{tag}": Rules(), f"p-on-{tag}": Rules(accept_online=True),
             f"p-ia-{tag}": Rules(DuplicatePolicy.INVALIDATE_ALL)}
    handler = handler_for(rules)
    voters = ["V1", "V2", "V3", ""]
    reasons = [Reason.MATCHED] * 5 + [Reason.PENDING_REVIEW, Reason.WRONG_COUNTY,
                                      Reason.VOTER_INACTIVE]
    seqs = rnd.sample(range(1, 100_000), 2000)
    sent: list[events_pb2.SignatureMatched] = []
    latest: dict[str, events_pb2.SignatureMatched] = {}
    for _ in range(60):
        batch: list[events_pb2.SignatureMatched] = []
        for _ in range(rnd.randint(1, 12)):
            roll = rnd.random()
            if latest and roll < 0.25:  # a review or a rematch: a later match revision
                old = latest[rnd.choice(sorted(latest))]
                m = matched(old.petition_id, rnd.choice([old.voter_id, *voters]), old.received_seq,
                            signed=date.fromisoformat(old.signed_on) if old.signed_on else None,
                            reason=rnd.choice(reasons), online=old.source == source_to_pb(Source.ONLINE),
                            revision=old.match_revision + 1, signature_id=old.signature_id)
            elif sent and roll < 0.35:  # redelivered
                m = rnd.choice(sent)
            else:
                m = matched(rnd.choice(sorted(rules)), rnd.choice(voters), seqs.pop(),
                            signed=rnd.choice([None, *(date(2017, 5, d) for d in range(1, 6))]),
                            reason=rnd.choice(reasons), online=rnd.random() < 0.25)
            batch.append(m)
            sent.append(m)
            if m.signature_id not in latest or latest[m.signature_id].match_revision < m.match_revision:
                latest[m.signature_id] = m
        await handler._apply(conn, batch)
        rows = await stored(conn, list(rules))
        assert {str(r["signature_id"]): (r["status"], r["reason"]) for r in rows} == \
            resolved_whole(rows, rules)
    statuses = {r["status"] for r in await stored(conn, list(rules))}
    assert {Status.VALID.value, Status.INVALID.value} <= statuses


async def verified_since(conn: asyncpg.Connection, after: int, petition_id: str
                         ) -> list[events_pb2.SignatureVerified]:
    """The SignatureVerified events of the petition enqueued in dedupe's outbox after id
    ``after`` (in the test's transaction: the outbox publisher never sees them)."""
    rows = await conn.fetch("SELECT value FROM dedupe.outbox WHERE id > $1 AND topic = $2 "
                            "ORDER BY id", after, SIGNATURE_VERIFIED.name)
    events = [SIGNATURE_VERIFIED.decode(bytes(r["value"])) for r in rows]
    return [e for e in events if e.petition_id == petition_id]


async def test_a_rematch_to_another_voter_with_the_same_outcome_publishes_the_new_voter(
    conn: asyncpg.Connection
) -> None:
    """A signature rematched (or resolved by a reviewer) to another voter, VALID before and
    after, is published again with the new voter and a higher revision; tally then holds the
    new voter and counts the signature once. A redelivery, or a rematch that changes nothing
    SignatureVerified carries, publishes nothing."""
    pid = f"p-dd-{uuid.uuid4().hex[:8]}"
    handler = handler_for({pid: Rules()})
    mark = await conn.fetchval("SELECT coalesce(max(id), 0) FROM dedupe.outbox")

    async def apply(msgs: list[events_pb2.SignatureMatched]) -> list[events_pb2.SignatureVerified]:
        nonlocal mark
        published = await handler._apply(conn, msgs)
        events = await verified_since(conn, mark, pid)
        mark = await conn.fetchval("SELECT coalesce(max(id), 0) FROM dedupe.outbox")
        assert published == len(events)
        # What tally's consumer does with them.
        await tally_repository.apply_results(conn, [result_from_event(e) for e in events])
        return events

    first = matched(pid, "V1", 1)
    [v1] = await apply([first])
    assert (v1.voter_id, v1.status) == ("V1", status_to_pb(Status.VALID))
    # The matcher rematches it to V2 (a corrected roll, a reviewer): still VALID, V2's only one.
    moved = matched(pid, "V2", 1, revision=1, signature_id=first.signature_id)
    [v2] = await apply([moved])
    assert (v2.signature_id, v2.voter_id, v2.status) == (
        first.signature_id, "V2", status_to_pb(Status.VALID))
    assert v2.revision > v1.revision
    # Redelivered: nothing new. Rematched again to the same voter and score: nothing new.
    assert await apply([moved]) == []
    assert await apply([matched(pid, "V2", 1, revision=2, signature_id=first.signature_id)]) == []
    # V1 signs again: now V1's only signature, so it counts; tally has one VALID per voter.
    [v3] = await apply([matched(pid, "V1", 2)])
    assert (v3.voter_id, v3.status) == ("V1", status_to_pb(Status.VALID))
    results = await conn.fetch("SELECT signature_id::text AS id, voter_id, status, revision "
                               "FROM tally.results WHERE petition_id = $1 ORDER BY 1", pid)
    assert sorted((r["voter_id"], r["status"]) for r in results) == [
        ("V1", "VALID"), ("V2", "VALID")]
    assert {r["id"]: r["revision"] for r in results}[first.signature_id] == v2.revision
    cells = await conn.fetch("SELECT status, sum(n)::bigint AS n FROM tally.result_counts "
                             "WHERE petition_id = $1 GROUP BY 1 HAVING sum(n) <> 0", pid)
    assert {r["status"]: r["n"] for r in cells} == {"VALID": 2}
    # A rematch that changes only the score is published too (SignatureVerified carries it).
    rescored = matched(pid, "V2", 1, revision=3, signature_id=first.signature_id)
    rescored.score = 0.91
    [v4] = await apply([rescored])
    assert (v4.voter_id, v4.score, v4.status) == ("V2", 0.91, status_to_pb(Status.VALID))
    rows = await stored(conn, [pid])
    assert resolved_whole(rows, {pid: Rules()}) == {
        str(r["signature_id"]): (r["status"], r["reason"]) for r in rows}
