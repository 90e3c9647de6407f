"""Small async helpers the integration tests share (real gRPC calls to the live stack)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import grpc

from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify.tally.v1 import tally_pb2, tally_pb2_grpc
from sigverify_cli import client, credentials, stack
from sigverify_common import audit, db
from sigverify_common.convert import reason_from_pb, status_from_pb


def channel(state: stack.StackState, service: str, token: str | None = None) -> grpc.aio.Channel:
    """A channel to one of the stack's services carrying ``token`` (default: the stack's
    admin token; "" for none)."""
    return credentials.open_channel(state.addr(service),
                                    state.admin_token() if token is None else token)


def new_petition_id() -> str:
    return f"p-{uuid.uuid4().hex[:10]}"


async def create_petition(state: stack.StackState, petition_id: str, required: int = 100,
                          deadline: str = "2017-07-25") -> intake_pb2.Petition:
    async with channel(state, "intake") as ch:
        p: intake_pb2.Petition = await intake_pb2_grpc.IntakeServiceStub(ch).CreatePetition(
            intake_pb2.CreatePetitionRequest(petition_id=petition_id, title="test",
                                             required_signatures=required, deadline=deadline),
            timeout=30)
        return p


async def submit(state: stack.StackState, path: Path, petition_id: str, county: str,
                 key: str = "") -> intake_pb2.BatchReceipt:
    async with channel(state, "intake") as ch:
        return await client.submit_batch(ch, path, petition_id, county, key)


async def tally(state: stack.StackState, petition_id: str) -> tally_pb2.Tally:
    async with channel(state, "tally") as ch:
        return await client.get_tally(ch, petition_id)


async def wait_verified(state: stack.StackState, petition_id: str, expected: int,
                        timeout: float = 180) -> tally_pb2.Tally:
    """Wait until ``expected`` signatures are received and none is pending."""
    end = time.monotonic() + timeout
    while True:
        t = await tally(state, petition_id)
        if t.total.received >= expected and t.total.pending == 0:
            return t
        if time.monotonic() > end:
            raise AssertionError(f"not verified in {timeout}s: received {t.total.received}, "
                                 f"pending {t.total.pending}, expected {expected}")
        await asyncio.sleep(0.3)


async def results_by_batch(state: stack.StackState, petition_id: str
                           ) -> dict[tuple[str, int], tuple[str, str, str]]:
    """(batch id, line) -> (status, reason, voter id) for every verified signature."""
    out: dict[tuple[str, int], tuple[str, str, str]] = {}
    async with channel(state, "tally") as ch:
        stub = tally_pb2_grpc.TallyServiceStub(ch)
        async for r in stub.ListResults(tally_pb2.ListResultsRequest(petition_id=petition_id),
                                        timeout=60):
            out[(r.batch_id, r.line)] = (status_from_pb(r.status).value,
                                         reason_from_pb(r.reason).value, r.voter_id)
    return out


async def results(state: stack.StackState, petition_id: str) -> dict[int, tuple[str, str, str]]:
    """line -> (status, reason, voter id) for a single-batch petition."""
    return {line: v for (_, line), v in (await results_by_batch(state, petition_id)).items()}


def reason_counts(t: tally_pb2.Tally) -> dict[str, int]:
    counts = {reason_from_pb(rc.reason).value: rc.count for rc in t.total.invalid_by_reason}
    counts["VALID"] = t.total.valid
    counts["REVIEW"] = t.total.review
    return counts


@asynccontextmanager
async def scratch_database(state: stack.StackState, prefix: str,
                           schemas: tuple[str, ...] = ("matching",)) -> AsyncIterator[str]:
    """A database of its own on the stack's server, with these services' tables and the
    audit log's, dropped afterwards: its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(state.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = state.database_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            for schema in schemas:
                await db.migrate(pool, schema, f"sigverify_{schema}")
            await db.migrate(pool, audit.SCHEMA, audit.MIGRATIONS)
        finally:
            await pool.close()
        yield url
    finally:
        admin = await asyncpg.connect(state.database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def slow_replica(pool: asyncpg.Pool, serving_version: int) -> AsyncIterator[str]:
    """A live replica that never builds a new version's index: an activation waits."""
    name = f"slow-replica-{uuid.uuid4().hex[:6]}"

    async def heartbeat() -> None:
        while True:
            await pool.execute(
                "INSERT INTO matching.replicas (replica_id, serving_version, heartbeat_at) "
                "VALUES ($1, $2, clock_timestamp()) ON CONFLICT (replica_id) DO UPDATE "
                "SET heartbeat_at = clock_timestamp()", name, serving_version)
            await asyncio.sleep(0.5)

    beating = asyncio.create_task(heartbeat())
    try:
        yield name
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
        await pool.execute("DELETE FROM matching.replicas WHERE replica_id = $1", name)
