"""Where a roll version's columnar index and its match models are kept: PostgreSQL.

The index of a version is built once (by the first replica that needs it, under an advisory
lock, so that replicas do not all build it) and saved in parts of ``PART_BYTES``; every
other replica, and a replica restarted later, loads it in a fraction of the build time.

A model is learned per roll version (``train``): u from random pairs of the roll and the
signatures, m and the priors by EM on the signatures' candidate pairs. The newest model of
a version decides; every decision records the model that made it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import re
import time
import zlib
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date

import asyncpg

from sigverify_common import audit
from sigverify_common.db import Conn
from sigverify_common.errors import Unavailable
from sigverify_matching import engine, fs
from sigverify_matching.columnar import (
    FORMAT,
    BuiltPart,
    IndexBuilder,
    RollRow,
    VoterIndex,
    code_rows,
)
from sigverify_matching.domain import SignatureInput

log = logging.getLogger(__name__)

PART_BYTES = 32 * 1024 * 1024
VOTER_COLUMNS = ("voter_id, first_name, middle_name, last_name, suffix, birth_date, street, "
                 "unit, city, zip, county, status, registered_on")


def _lock_key(kind: str, version: int) -> int:
    return zlib.crc32(f"sigverify-{kind}-{version}".encode())


# -- the index ------------------------------------------------------------------------------

async def save_index(conn: Conn, index: VoterIndex, build_seconds: float, built_by: str) -> int:
    """Save a version's index (replacing any) in parts of ``PART_BYTES``, made one at a time
    (never a second copy of the whole index); returns its size in bytes."""
    pieces = index.chunks(PART_BYTES)
    size = parts = 0
    async with conn.transaction():
        await conn.execute("DELETE FROM matching.roll_index WHERE version = $1", index.version)
        await conn.execute("DELETE FROM matching.roll_index_meta WHERE version = $1",
                           index.version)
        while (part := await asyncio.to_thread(next, pieces, None)) is not None:
            await conn.execute("INSERT INTO matching.roll_index (version, part, data) "
                               "VALUES ($1, $2, $3)", index.version, parts, part)
            parts += 1
            size += len(part)
        await conn.execute(
            "INSERT INTO matching.roll_index_meta (version, parts, bytes, format, voters, "
            "build_seconds, built_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            index.version, parts, size, FORMAT, index.size, build_seconds, built_by)
    return size


async def load_index(conn: Conn, version: int) -> VoterIndex | None:
    """The saved index of ``version``, or None (none saved, or saved in another format).
    The parts are read into one buffer that the index's arrays then view (no second copy)."""
    meta = await conn.fetchrow(
        "SELECT parts, bytes, format FROM matching.roll_index_meta WHERE version = $1", version)
    if meta is None or meta["format"] != FORMAT:
        return None
    data = bytearray(meta["bytes"])
    at = 0
    for i in range(meta["parts"]):
        part = await conn.fetchval(
            "SELECT data FROM matching.roll_index WHERE version = $1 AND part = $2", version, i)
        if part is None or at + len(part) > len(data):
            return None
        data[at: at + len(part)] = part
        at += len(part)
        del part
    if at != len(data):
        return None
    index = await asyncio.to_thread(VoterIndex.loads, data)
    index.version = version
    return index


def build_workers() -> int:
    """Processes that code roll rows while an index is built (MATCH_BUILD_WORKERS; default
    the machine's cores; 1 codes them in this process)."""
    text = os.environ.get("MATCH_BUILD_WORKERS", "").strip()
    try:
        n = int(text) if text else 0
    except ValueError:
        n = 0
    return max(1, n or (os.cpu_count() or 1))


#: Bytes of ``COPY ... TO STDOUT`` text handed to a coding process at a time (about
#: 50,000 roll rows).
BUILD_CHUNK_BYTES = 8 * 1024 * 1024
#: The time the build's one ``COPY`` may take: a minute, and 1.2 ms a voter of the version
#: (the pool's 60-second command timeout a chunk of 50,000 when the rows were fetched by a
#: cursor). The pool's own limit would fail every build of more than a few million voters.
BUILD_BASE_SECONDS = 60.0
BUILD_SECONDS_PER_VOTER = 0.0012

_UNESCAPE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPED = re.compile(r"\\(.)")


async def build_budget(conn: Conn, version: int) -> float:
    """How long the build of ``version``'s index may take (``BUILD_BASE_SECONDS`` and
    ``BUILD_SECONDS_PER_VOTER`` for each of its rows)."""
    rows = await conn.fetchval(
        "SELECT rows FROM matching.roll_versions WHERE version = $1", version) or 0
    return BUILD_BASE_SECONDS + BUILD_SECONDS_PER_VOTER * rows


def _unescaped(field: str) -> str:
    return _ESCAPED.sub(lambda m: _UNESCAPE.get(m.group(1), m.group(1)), field)


def _day(field: str) -> date | None:
    return None if field == "\\N" else date.fromisoformat(field)


def copy_rows(blob: bytes) -> list[RollRow]:
    """Roll rows from whole lines of ``COPY (SELECT VOTER_COLUMNS ...) TO STDOUT`` text
    (tab-separated; a NULL date is ``\\N``; a backslash, tab or line break in a value is
    escaped with a backslash, so every row is one line)."""
    rows: list[RollRow] = []
    for line in blob.decode("utf-8").split("\n"):
        if not line:
            continue
        f = line.split("\t")
        if "\\" in line:
            f = [x if x == "\\N" else _unescaped(x) for x in f]
        rows.append((f[0], f[1], f[2], f[3], f[4], _day(f[5]), f[6], f[7], f[8], f[9], f[10],
                     f[11], _day(f[12])))
    return rows


def code_copy(blob: bytes) -> BuiltPart:
    """Code one piece of ``COPY`` text (what a coding process of a build runs): the rows
    travel to it as the bytes PostgreSQL sent, not as pickled Python rows."""
    return code_rows(copy_rows(blob))


async def build_from_voters(conn: Conn, version: int, workers: int | None = None
                            ) -> VoterIndex:
    """Build the index of ``version`` from its rows in ``matching.voters``, streamed out by
    ``COPY ... TO STDOUT`` and cut at line ends into pieces of ``BUILD_CHUNK_BYTES``. Each
    piece is read and coded by a pool of ``workers`` processes (``code_copy``; at most a
    few pieces in flight) and merged here in the order read; with one worker, in a thread
    of this process. This process never makes a Python object per roll row: reading rows
    with a cursor and pickling them to the coding processes took it ~20 s of a
    million-voter build."""
    workers = build_workers() if workers is None else max(1, workers)
    builder = IndexBuilder(version)
    loop = asyncio.get_running_loop()
    pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            if workers > 1 else None)
    pending: deque[asyncio.Future[BuiltPart]] = deque()
    held: list[bytes] = []
    size = 0

    async def piece(blob: bytes) -> None:
        if pool is None:
            await asyncio.to_thread(lambda: builder.add(copy_rows(blob)))
            return
        pending.append(loop.run_in_executor(pool, code_copy, blob))
        while len(pending) > workers + 1:
            await asyncio.to_thread(builder.merge, await pending.popleft())

    async def received(data: bytes) -> None:
        nonlocal size
        held.append(data)
        size += len(data)
        if size >= BUILD_CHUNK_BYTES:
            blob = b"".join(held)
            cut = blob.rfind(b"\n") + 1
            held[:] = [blob[cut:]]
            size = len(held[0])
            if cut:
                await piece(blob[:cut])

    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute("SET LOCAL DateStyle = 'ISO, YMD'")
            await conn.copy_from_query(
                f"SELECT {VOTER_COLUMNS} FROM matching.voters WHERE version = $1",  # noqa: S608
                version, output=received, format="text",
                timeout=await build_budget(conn, version))
        if size:
            await piece(b"".join(held))
        while pending:
            await asyncio.to_thread(builder.merge, await pending.popleft())
    finally:
        for f in pending:
            f.cancel()
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
    return await asyncio.to_thread(builder.finish)


async def index_of(pool: asyncpg.Pool, version: int, built_by: str = "matching") -> VoterIndex:
    """The index of ``version``: loaded when saved, else built (by one replica at a time:
    the others wait, then load what it saved) and saved."""
    async with pool.acquire() as conn:
        index = await load_index(conn, version)
        if index is not None:
            return index
        key = _lock_key("index", version)
        # Another replica may be building it: wait for as long as its build may take (the
        # pool's 60-second command timeout would fail the wait, and log a failed build a
        # minute, for the ten minutes a state's roll takes).
        await conn.execute("SELECT pg_advisory_lock($1)", key,
                           timeout=await build_budget(conn, version))
        try:
            index = await load_index(conn, version)
            if index is not None:
                return index
            started = time.perf_counter()
            index = await build_from_voters(conn, version)
            seconds = time.perf_counter() - started
            size = await save_index(conn, index, seconds, built_by)
            log.info("roll version %d: index of %d voters built in %.1fs and saved (%d MiB)",
                     version, index.size, seconds, size >> 20)
            return index
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", key)


async def delete_indexes(conn: Conn | asyncpg.Pool) -> None:
    """Drop the saved indexes of versions whose rows are gone (retired, discarded)."""
    for table in ("roll_index", "roll_index_meta"):
        await conn.execute(
            f"DELETE FROM matching.{table} WHERE version IN (SELECT version FROM "  # noqa: S608
            "matching.roll_versions WHERE state IN ('retired', 'discarded'))")


# -- the models -----------------------------------------------------------------------------

@dataclass(frozen=True)
class StoredModel:
    model_id: int
    roll_version: int
    model: fs.Model
    trained_at: str
    trained_by: str
    signatures: int


def _stored(r: asyncpg.Record) -> StoredModel:
    return StoredModel(r["model_id"], r["roll_version"], fs.Model.from_json(r["model"]),
                       r["trained_at"].isoformat(), r["trained_by"], r["signatures"])


async def latest_model(conn: Conn | asyncpg.Pool, version: int | None = None
                       ) -> StoredModel | None:
    """The newest model of a roll version (None: of any version)."""
    if version is None:
        r = await conn.fetchrow("SELECT * FROM matching.models ORDER BY model_id DESC LIMIT 1")
    else:
        r = await conn.fetchrow("SELECT * FROM matching.models WHERE roll_version = $1 "
                                "ORDER BY model_id DESC LIMIT 1", version)
    return _stored(r) if r is not None else None


async def borrowable_model(conn: Conn | asyncpg.Pool, min_signatures: int
                           ) -> StoredModel | None:
    """The model a version with none of its own decides with meanwhile: the newest learned
    from at least ``min_signatures`` signatures, else the newest (a provisional model, from
    a small first sample, is lent only when there is nothing better)."""
    r = await conn.fetchrow("SELECT * FROM matching.models ORDER BY signatures >= $1 DESC, "
                            "model_id DESC LIMIT 1", min_signatures)
    return _stored(r) if r is not None else None


async def model_by_id(conn: Conn | asyncpg.Pool, model_id: int) -> StoredModel | None:
    r = await conn.fetchrow("SELECT * FROM matching.models WHERE model_id = $1", model_id)
    return _stored(r) if r is not None else None


async def training_signatures(conn: Conn | asyncpg.Pool, limit: int) -> list[SignatureInput]:
    """The most recent signatures sent to matching (any petition), as the matcher reads
    them: what EM learns m from. Unlabelled: nobody's decision is used."""
    rows = await conn.fetch(
        "SELECT s.first_name, s.middle_name, s.last_name, s.street, s.unit, s.city, s.zip, "
        "s.county, s.signed_on, s.birth_date FROM intake.signatures s "
        "WHERE s.released AND NOT s.incomplete ORDER BY s.received_seq DESC LIMIT $1", limit)
    return [SignatureInput(first_name=r["first_name"], middle_name=r["middle_name"],
                           last_name=r["last_name"], street=r["street"], unit=r["unit"],
                           city=r["city"], zip=r["zip"], county=r["county"],
                           signed_on=r["signed_on"], birth_date=r["birth_date"])
            for r in reversed(rows)]


def _train(index: VoterIndex, signatures: list[SignatureInput], prior: fs.Model | None
           ) -> fs.Model:
    """``engine.train`` in a worker thread, with the CPU seconds that thread spent on it
    (beside the wall-clock seconds: the difference is waiting for the other threads and
    processes)."""
    cpu = time.thread_time()
    model = engine.train(index, signatures, None, prior)
    model.trained["cpu_seconds"] = round(time.thread_time() - cpu, 2)
    return model


async def train(pool: asyncpg.Pool, index: VoterIndex, signatures: Sequence[SignatureInput],
                actor: str, reason: str) -> StoredModel:
    """Learn a model for ``index``'s version from ``signatures`` (the newest model of any
    version is EM's prior), store it and audit it."""
    if not signatures:
        raise Unavailable("no signatures to learn the match model from yet")
    prior = await latest_model(pool)
    started = time.perf_counter()
    model = await asyncio.to_thread(_train, index, list(signatures),
                                    prior.model if prior else None)
    seconds = time.perf_counter() - started
    model.trained["seconds"] = round(seconds, 2)
    model.trained["prior_model"] = prior.model_id if prior else 0
    async with pool.acquire() as conn, conn.transaction():
        r = await conn.fetchrow(
            "INSERT INTO matching.models (roll_version, model, signatures, trained_by) "
            "VALUES ($1, $2::jsonb, $3, $4) RETURNING *", index.version, model.to_json(),
            len(signatures), actor)
        assert r is not None
        await audit.record(conn, actor, "model.trained", f"model-{r['model_id']}", {
            "roll_version": index.version, "signatures": len(signatures), "reason": reason,
            "em_iterations": model.trained.get("em_iterations"),
            "registered_share": round(model.registered_share, 4),
            "prior_model": model.trained["prior_model"], "seconds": round(seconds, 2)})
    log.info("model %d for roll version %d learned from %d signatures in %.1fs (%.1fs of CPU "
             "in the learning thread)", r["model_id"], index.version, len(signatures), seconds,
             model.trained["cpu_seconds"])
    return _stored(r)


class Models:
    """This replica's view of the models: the newest of the version it decides with,
    learned when none exists yet (by one replica at a time).

    With no model for a version, the first batch to be decided waits until ``train_min``
    signatures have been received (or ``train_wait`` seconds have passed since it first
    asked, whichever is first), so that EM learns from a fair sample rather than from a
    first batch of a dozen rows; then the model is learned from up to ``train_max`` of the
    most recent signatures.

    A model learned from fewer than ``train_min`` signatures (the wait ran out on a small
    first petition, or an admin trained while few had arrived) is provisional: once
    ``train_min`` signatures have been received it is learned again, in the background,
    from up to ``train_max`` of them, and the new model decides from then on. Without this
    a model of a couple of signatures, little more than EM's starting shape, decided every
    later petition of the version (seen: 15 % of a hostile set sent to review, against
    about 2.5 % with a model learned from the set).
    """

    def __init__(self, pool: asyncpg.Pool, train_min: int = 1000, train_max: int = 20_000,
                 train_wait: float = 10.0) -> None:
        self._pool = pool
        self.train_min = train_min
        self.train_max = train_max
        self.train_wait = train_wait
        self._cache: dict[int, StoredModel] = {}
        self._waiting_since: dict[int, float] = {}
        self._checked: dict[int, float] = {}
        self._learning: dict[int, asyncio.Task[None]] = {}

    def forget(self, version: int) -> None:
        self._cache.pop(version, None)

    async def current(self, index: VoterIndex) -> StoredModel:
        """The model to decide with for ``index``'s version. A version with no model of its
        own yet (a roll just loaded) is decided with the newest earlier model, its prior
        set to this roll's size, while its own is learned in the background."""
        version = index.version
        now = time.monotonic()
        got = self._cache.get(version)
        # A newer model (sigverify model train) is picked up within a few seconds.
        if got is not None and now - self._checked.get(version, 0.0) < 5.0:
            return got
        self._checked[version] = now
        stored = await latest_model(self._pool, version)
        if stored is not None:
            self._cache[version] = stored
            if stored.signatures < self.train_min:
                await self._supersede(index, stored)
            return stored
        earlier = await borrowable_model(self._pool, self.train_min)
        if earlier is None:
            return await self._learn(index)
        self._learn_in_background(index)
        model = fs.Model.from_json(earlier.model.to_json())
        model.voters = index.size
        borrowed = StoredModel(earlier.model_id, version, model, earlier.trained_at,
                               earlier.trained_by, earlier.signatures)
        self._cache[version] = borrowed
        return borrowed

    def _learn_in_background(self, index: VoterIndex, replacing: int | None = None) -> None:
        task = self._learning.get(index.version)
        if task is None or task.done():
            self._learning[index.version] = asyncio.create_task(
                self._learn_meanwhile(index, replacing), name=f"model-{index.version}")

    async def _received(self) -> int:
        """Signatures received that a model learns from, counted up to ``train_min``."""
        return int(await self._pool.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM intake.signatures WHERE released AND NOT "
            "incomplete LIMIT $1) x", self.train_min))

    async def _supersede(self, index: VoterIndex, provisional: StoredModel) -> None:
        """Learn the version's model again once ``train_min`` signatures are there."""
        task = self._learning.get(index.version)
        if (task is None or task.done()) and await self._received() >= self.train_min:
            log.info("model %d of roll version %d was learned from %d signatures: learning it "
                     "again from up to %d", provisional.model_id, index.version,
                     provisional.signatures, self.train_max)
            self._learn_in_background(index, replacing=provisional.model_id)

    async def _learn_meanwhile(self, index: VoterIndex, replacing: int | None = None) -> None:
        try:
            await self._learn(index, wait=False, replacing=replacing)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, Unavailable) as exc:
            log.warning("learning the model of roll version %d failed (%s); the next batch "
                        "tries again", index.version, exc.__class__.__name__)

    async def _learn(self, index: VoterIndex, wait: bool = True, replacing: int | None = None
                     ) -> StoredModel:
        """Learn the version's first model (or again, ``replacing`` the provisional model of
        that id), unless another replica already has."""
        version = index.version
        since = self._waiting_since.setdefault(version, time.monotonic())
        received = await self._received()
        if wait and received < self.train_min and time.monotonic() - since < self.train_wait:
            raise Unavailable(f"learning the match model of roll version {version} waits for "
                              f"more signatures ({received} of {self.train_min}, or "
                              f"{self.train_wait:.0f}s)")
        async with self._pool.acquire() as conn:
            key = _lock_key("model", version)
            await conn.execute("SELECT pg_advisory_lock($1)", key)
            try:
                stored = await latest_model(conn, version)
                if stored is None or (replacing is not None and stored.model_id == replacing):
                    sigs = await training_signatures(conn, self.train_max)
                    stored = await train(
                        self._pool, index, sigs, "system:matching",
                        "the first model of the roll version" if stored is None else
                        f"model {replacing} was learned from {stored.signatures} signatures")
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)
        self._cache[version] = stored
        self._checked[version] = time.monotonic()
        self._waiting_since.pop(version, None)
        return stored

