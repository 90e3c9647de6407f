"""A roll version's index built from ``matching.voters`` (``store.build_from_voters``): the
rows stream out of the real PostgreSQL as ``COPY`` text, cut into pieces at line ends and
coded by worker processes. The index is byte for byte the one built from the same rows
read as records, whatever the values hold (tabs, line breaks, backslashes, a literal
``\\N``, accents, missing dates) and wherever the pieces are cut."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import date

import asyncpg
import pytest

from sigverify_cli import stack
from sigverify_matching import store
from sigverify_matching.columnar import IndexBuilder, VoterIndex
from tests.integration import helpers as h

pytestmark = pytest.mark.integration

TRICKY = [
    ("V-TAB", "ANA\tMARIA", "", "PEÑA", "", date(1961, 2, 3), "12 MAIN ST", "", "FRESNO",
     "93701", "Fresno", "ACTIVE", None),
    ("V-NL", "JOSÉ", "LUIS", "GARCÍA\nLOPEZ", "JR", None, "4\\5 OAK AVE", "APT\r2", "FRESNO",
     "93702", "Fresno", "ACTIVE", date(2020, 1, 1)),
    ("V-N", "\\N", "\\", "O'NEIL", "", date(2000, 12, 31), "7 \\N WAY", "", "CLOVIS",
     "93611", "Fresno", "INACTIVE", None),
]


@pytest.fixture
async def scratch(live_stack: stack.StackState) -> AsyncIterator[str]:
    """The URL of a database of its own on the stack's server, with matching's tables."""
    async with h.scratch_database(live_stack, "sigverify_build") as url:
        yield url


def _rows(n: int) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = list(TRICKY)
    for i in range(n):
        out.append((f"V{i:06d}", ("MARIA", "JOHN", "NGUYEN VAN", "LI")[i % 4], "",
                    ("GARCIA", "SMITH", "TRAN", "DE LA CRUZ")[i % 3], "",
                    date(1940 + i % 60, 1 + i % 12, 1 + i % 28) if i % 7 else None,
                    f"{100 + i} {('ELM', 'OAK', 'MAIN')[i % 3]} ST", "", "FRESNO",
                    f"937{i % 100:02d}", "Fresno", "ACTIVE", date(2010, 1, 1)))
    return out


def _saved(ix: VoterIndex) -> bytes:
    return b"".join(bytes(p) for p in ix.chunks())


async def _version(conn: asyncpg.Connection, n: int) -> int:
    """A roll version of ``n`` generated voters and the tricky ones."""
    rows = _rows(n)
    version: int = await conn.fetchval(
        "INSERT INTO matching.roll_versions (state, source, loaded_by, rows) VALUES "
        "('building', 'test', 'test', $1) RETURNING version", len(rows))
    await conn.copy_records_to_table(
        "voters", schema_name="matching", records=[(version, *r) for r in rows],
        columns=["version", *(c.strip() for c in store.VOTER_COLUMNS.split(","))])
    return version


async def test_the_index_built_from_copy_text_is_the_one_built_from_the_rows(
        scratch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = await asyncpg.connect(scratch)
    try:
        version = await _version(conn, 3000)
        records = [tuple(r) for r in await conn.fetch(
            f"SELECT {store.VOTER_COLUMNS} FROM matching.voters WHERE version = $1", version)]
        assert {r[0] for r in records} >= {"V-TAB", "V-NL", "V-N"}

        # The tricky rows read back from COPY text exactly as asyncpg decodes them.
        pieces: list[bytes] = []

        async def sink(data: bytes) -> None:
            pieces.append(data)
        await conn.copy_from_query(
            f"SELECT {store.VOTER_COLUMNS} FROM matching.voters WHERE version = $1",
            version, output=sink, format="text")
        assert store.copy_rows(b"".join(pieces)) == records

        expected = IndexBuilder(version)
        expected.add(records)
        want = _saved(expected.finish())
        # Pieces of a few kilobytes: cut in the middle of many rows, coded by two processes
        # and merged in order; then one piece, coded in a thread.
        monkeypatch.setattr(store, "BUILD_CHUNK_BYTES", 4096)
        assert _saved(await store.build_from_voters(conn, version, workers=2)) == want
        monkeypatch.setattr(store, "BUILD_CHUNK_BYTES", 1 << 30)
        assert _saved(await store.build_from_voters(conn, version, workers=1)) == want
    finally:
        await conn.close()


async def test_a_build_longer_than_the_command_timeout_finishes_and_a_stalled_one_fails(
        scratch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The build is one COPY: bounded by the version's size, not by the pool's command
    timeout (60 s in the services), which every build of a state's roll outlasts."""
    conn = await asyncpg.connect(scratch, command_timeout=0.5)
    try:
        version = await _version(conn, 300)
        read = store.copy_rows

        def slow(blob: bytes) -> list[object]:
            time.sleep(0.6)  # each piece: longer than the command timeout
            return read(blob)  # type: ignore[return-value]
        monkeypatch.setattr(store, "copy_rows", slow)
        # A piece for every buffer the COPY delivers, read while the COPY runs (however the
        # server's data is split into buffers, the first is read under the COPY's clock).
        monkeypatch.setattr(store, "BUILD_CHUNK_BYTES", 1)
        built = await store.build_from_voters(conn, version, workers=1)
        assert len(built) == 303
        # A budget smaller than one piece: the build fails (asyncpg closes the connection;
        # the service's pool replaces it) and the replica retries later.
        monkeypatch.setattr(store, "BUILD_BASE_SECONDS", 0.2)
        monkeypatch.setattr(store, "BUILD_SECONDS_PER_VOTER", 0.0)
        with pytest.raises(TimeoutError):
            await store.build_from_voters(conn, version, workers=1)
    finally:
        await conn.close()


async def test_a_replica_waits_for_another_replicas_long_build_then_loads_it(
        scratch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two replicas want the same version's index: one builds it under the advisory lock,
    the other waits for the lock longer than the pool's command timeout, then loads what
    was saved instead of building it again (the wait used to fail after the timeout)."""
    pool = await asyncpg.create_pool(scratch, min_size=2, max_size=4, command_timeout=0.5)
    try:
        async with pool.acquire() as conn:
            version = await _version(conn, 300)
        read = store.copy_rows
        built: list[int] = []

        def slow(blob: bytes) -> list[object]:
            built.append(len(blob))
            time.sleep(1.2)  # the other replica waits a second at least
            return read(blob)  # type: ignore[return-value]
        monkeypatch.setattr(store, "copy_rows", slow)
        monkeypatch.setattr(store, "BUILD_CHUNK_BYTES", 1)
        monkeypatch.setattr(store, "build_workers", lambda: 1)
        first = asyncio.create_task(store.index_of(pool, version, "replica-1"))
        await asyncio.sleep(0.2)  # the first holds the lock and builds
        second = await store.index_of(pool, version, "replica-2")
        one = await first
        assert len(one) == len(second) == 303
        assert _saved(one) == _saved(second)
        pieces = len(built)
        assert pieces >= 1
        # Nothing was built twice: the second loaded the saved index.
        assert await store.index_of(pool, version, "replica-3") is not None
        assert len(built) == pieces
    finally:
        await pool.close()
