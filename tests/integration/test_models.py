"""A roll version's match models (``store.Models``) on the real PostgreSQL: a model learned
from a small first sample is provisional and is learned again once ``train_min`` signatures
have arrived; a version with no model of its own borrows a model learned from enough."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date

import asyncpg
import pytest

from sigverify_cli import stack
from sigverify_matching import store
from sigverify_matching.columnar import IndexBuilder, VoterIndex
from tests.integration import helpers as h

pytestmark = pytest.mark.integration

FIRST = ("MARIA", "JOHN", "NGUYEN", "LI", "ANA", "JOSE", "MICHAEL", "LINH")
LAST = ("GARCIA", "SMITH", "TRAN", "DE LA CRUZ", "KIM", "PATEL", "LOPEZ")
STREETS = ("ELM ST", "OAK AVE", "MAIN ST", "PINE WAY")


def _voter(i: int) -> tuple[object, ...]:
    return (f"V{i:05d}", FIRST[i % len(FIRST)], "", LAST[(i // 3) % len(LAST)], "",
            date(1940 + i % 60, 1 + i % 12, 1 + i % 28), f"{100 + i} {STREETS[i % 4]}", "",
            "FRESNO", f"937{i % 20:02d}", "Fresno", "ACTIVE", date(2010, 1, 1))


@pytest.fixture
async def pool(live_stack: stack.StackState) -> AsyncIterator[asyncpg.Pool]:
    """A database of its own, with intake's, matching's and the audit log's tables."""
    async with h.scratch_database(live_stack, "sigverify_models", ("intake", "matching")) as url:
        p = await asyncpg.create_pool(url, min_size=1, max_size=4)
        try:
            await p.execute("INSERT INTO intake.petitions (petition_id, title, "
                            "required_signatures, deadline) VALUES ('p', 'p', 100, '2030-01-01')")
            yield p
        finally:
            await p.close()


async def _index(conn: asyncpg.Connection, voters: int) -> VoterIndex:
    version: int = await conn.fetchval(
        "INSERT INTO matching.roll_versions (state, source, loaded_by, rows) VALUES "
        "('building', 'test', 'test', $1) RETURNING version", voters)
    builder = IndexBuilder(version)
    builder.add([_voter(i) for i in range(voters)])  # type: ignore[misc]
    return builder.finish()


async def _file(pool: asyncpg.Pool, voters: range, strangers: bool = False) -> None:
    """One batch whose signatures are these voters signing as the roll has them (or, with
    ``strangers``, people of names and streets the roll does not have)."""
    batch = uuid.uuid4()
    await pool.execute(
        "INSERT INTO intake.batches (batch_id, petition_id, county, content_sha256, "
        "rows_received, signatures_accepted, incomplete, rejected) "
        "VALUES ($1, 'p', 'Fresno', $2, $3, $3, 0, '[]')", batch, batch.hex, len(voters))
    rows = []
    for line, i in enumerate(voters, start=1):
        v = _voter(i)
        if strangers:
            v = (v[0], "ZEBULON", "", f"QUARRINGTON{i}", "", None, f"{i} NOWHERE LN", "", "OJAI",
                 "93023")
        rows.append((uuid.uuid4(), batch, "p", "Fresno", line, "C1", "paper", v[1], "", v[3],
                     v[6], "", v[8], v[9], date(2026, 6, 1), None, False))
    await pool.copy_records_to_table(
        "signatures", schema_name="intake", records=rows,
        columns=("signature_id", "batch_id", "petition_id", "county", "line", "circulator_id",
                 "source", "first_name", "middle_name", "last_name", "street", "unit", "city",
                 "zip", "signed_on", "birth_date", "incomplete"))


async def _current(models: store.Models, index: VoterIndex) -> store.StoredModel:
    models._checked.clear()  # look again now, not within 5 s
    return await models.current(index)


async def test_a_model_from_a_small_first_sample_is_learned_again_once_enough_arrive(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        index = await _index(conn, 400)
    await _file(pool, range(3))
    models = store.Models(pool, train_min=60, train_max=1000, train_wait=0.0)
    first = await _current(models, index)
    assert first.signatures == 3  # the wait ran out: learned from what there was

    await _file(pool, range(3, 40))  # 40 of 60: still provisional, nothing learned
    assert (await _current(models, index)).model_id == first.model_id
    assert not models._learning

    await _file(pool, range(40, 100))
    assert (await _current(models, index)).model_id == first.model_id  # meanwhile
    await models._learning[index.version]
    again = await _current(models, index)
    assert again.model_id > first.model_id and again.signatures == 100
    assert again.roll_version == index.version
    reason = await pool.fetchval("SELECT detail->>'reason' FROM audit.entries "
                                 "WHERE action = 'model.trained' ORDER BY id DESC LIMIT 1")
    assert reason == f"model {first.model_id} was learned from 3 signatures"

    # learned from enough: kept, nothing learned again
    await _file(pool, range(100, 130))
    assert (await _current(models, index)).model_id == again.model_id
    assert models._learning[index.version].done()
    assert await pool.fetchval("SELECT count(*) FROM matching.models") == 2


async def test_a_version_without_a_model_borrows_one_learned_from_enough(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        big = await _index(conn, 400)
        small = await _index(conn, 50)
        fresh = await _index(conn, 400)
    await _file(pool, range(80))
    models = store.Models(pool, train_min=60, train_max=1000, train_wait=0.0)
    enough = await _current(models, big)
    # a later version's provisional model, from 2 signatures (its own newest: the sample ran
    # out, and no more have come)
    few = await store.train(pool, small, (await store.training_signatures(pool, 2)),
                            "test", "a small first sample")
    assert few.model_id > enough.model_id
    lent = await _current(models, fresh)
    assert lent.model_id == enough.model_id and lent.model.voters == fresh.size
    assert (await store.borrowable_model(pool, 60)).model_id == enough.model_id
    # with nothing learned from enough, the newest is lent
    assert (await store.borrowable_model(pool, 1000)).model_id == few.model_id


async def test_a_first_sample_of_strangers_to_the_roll_gives_a_provisional_model(
    pool: asyncpg.Pool,
) -> None:
    """Not one candidate pair to learn from: the model is EM's prior (it was a ValueError,
    which failed every batch that needed the first model as poison)."""
    async with pool.acquire() as conn:
        index = await _index(conn, 400)
    await _file(pool, range(5), strangers=True)
    models = store.Models(pool, train_min=60, train_max=1000, train_wait=0.0)
    first = await _current(models, index)
    assert first.signatures == 5 and first.model.trained["candidate_pairs"] == 0
    assert first.model.registered_share < 0.75  # drawn towards "not on the roll"
    await _file(pool, range(100))
    await _current(models, index)
    await models._learning[index.version]
    again = await _current(models, index)
    assert again.model_id > first.model_id and again.model.trained["candidate_pairs"] > 0
