"""The voter roll's version lifecycle, and each matcher replica's part in it.

A version's states (``matching.roll_versions.state``)::

    loading ──▶ building ──▶ active ──▶ ready ──▶ retired
       │           │           ▲          │
       ▼           ▼           └──────────┘  (roll activate / roll rollback)
    discarded    ready

- ``loading``: rows are being COPYed in under the new version (``sigverify_matching.roll``).
- ``discarded``: the load was refused (too many rejected rows, no voters) or failed; its
  rows are deleted, its record kept.
- ``building``: loaded; every live matcher replica builds the version's candidate index in
  the background while it goes on deciding with the active version.
- ``active``: the one version decisions are made with. Activation happens in one
  transaction (with its audit entry) once every live replica holds the version's index, and
  the replicas switch at their next batch.
- ``ready``: rows kept, not active: the previous version (so ``roll rollback`` is
  possible), a load whose activation timed out, or a version whose load or activation was
  interrupted while it was ``building`` (its note says so). Activating another version
  retires every ``ready`` version but the one it replaces.
- ``retired``: rows deleted.

No decision is recorded against a version that is not active: the matcher's transaction
that records decisions first takes ``FOR SHARE`` on its version's row and checks the state
(``ensure_active``); activation takes that row ``FOR UPDATE``, so the two serialise, and a
batch decided with a version that stopped being active is decided again
(``RollVersionChanged`` is retriable).

Each replica heartbeats into ``matching.replicas`` (the version it serves, the versions
whose index it holds); a replica is live while its heartbeat is recent. One lifecycle
operation (load, activation) runs at a time: a session advisory lock, held by the
operation's database session from before it makes a version ``loading`` or ``building``
until that version has left the state. So a version ``loading`` or ``building`` while
nobody holds the lock was left by an operation whose matcher stopped (killed, crashed) or
lost its database session: every replica looks for such versions at each heartbeat (and so
when it starts) and settles them at once (``settle_abandoned``): ``loading`` becomes
``discarded``, ``building`` becomes ``ready`` with a note saying why (its rows kept, the
active version unchanged: ``roll activate N`` activates it). Nothing is activated
automatically: the registrar who asked for it has not seen it succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from prometheus_client import Gauge

from sigverify_common import audit, heap
from sigverify_common.db import Conn
from sigverify_common.errors import FailedPrecondition, NotFound, Unavailable
from sigverify_matching import engine, store
from sigverify_matching.columnar import VoterIndex

log = logging.getLogger(__name__)

LOADING, BUILDING, READY, ACTIVE, RETIRED, DISCARDED = (
    "loading", "building", "ready", "active", "retired", "discarded")
#: States whose rows are kept (a version in them can be activated, or is active).
KEPT = (BUILDING, READY, ACTIVE)

ROLL_SERVING = Gauge("sigverify_roll_version_serving",
                     "The roll version this matcher replica decides with (0: none yet)")
ROLL_SIZE = Gauge("sigverify_roll_voters", "Voters in the roll version this matcher serves")

_LOCK = zlib.crc32(b"sigverify-roll-lifecycle")
#: The audit log's actor of what the service decides by itself.
SYSTEM = "system:matching"


class RollVersionChanged(Unavailable):
    """The version a batch was decided with is no longer active: decide it again."""


# -- the lifecycle (one operation at a time) ----------------------------------------------------

@asynccontextmanager
async def lifecycle_lock(pool: asyncpg.Pool) -> AsyncIterator[Conn]:
    """A connection holding the roll lifecycle's lock (FAILED_PRECONDITION when another load
    or activation holds it). Leftovers of a load that died are cleared first."""
    async with pool.acquire() as conn:
        if not await _try_lock(conn, tries=LOCK_TRIES):
            busy = await conn.fetchval(
                "SELECT version FROM matching.roll_versions WHERE state IN ('loading', 'building') "
                "ORDER BY version DESC LIMIT 1")
            raise FailedPrecondition(
                "another roll load or activation is in progress"
                + (f" (roll version {busy})" if busy else "") + "; try again when it has finished")
        try:
            await _clear_leftovers(conn)
            yield conn
        finally:
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)


#: lifecycle_lock tries this often, 0.2 s apart, before it refuses: a replica settling an
#: abandoned version (``settle_abandoned``) holds the lock for one short transaction.
LOCK_TRIES = 5


async def _try_lock(conn: Conn, tries: int = 1) -> bool:
    for attempt in range(tries):
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK):
            return True
        if attempt + 1 < tries:
            await asyncio.sleep(0.2)
    return False


#: Said of a version left 'building' by an operation whose matcher stopped.
INTERRUPTED = ("its activation was interrupted: the matching service waiting for the replicas "
               "to build its index stopped (killed, or its database session lost) before "
               "deciding; the active version is unchanged. 'sigverify roll activate {version}' "
               "activates it")


async def _settle(conn: Conn) -> list[asyncpg.Record]:
    """Under the lock: a version still 'loading' belongs to a load whose matcher died (now
    'discarded'), one still 'building' to a load or activation that stopped waiting (now
    'ready', with a note saying so). Recorded in the audit log."""
    async with conn.transaction():
        stale = await conn.fetch(
            "UPDATE matching.roll_versions SET state = CASE state WHEN 'loading' THEN 'discarded' "
            "ELSE 'ready' END, note = CASE state WHEN 'loading' THEN 'the load was interrupted: "
            "the matching service loading it stopped before all its rows were in' "
            "ELSE replace($1, '{version}', version::text) END "
            "WHERE state IN ('loading', 'building') RETURNING version, state", INTERRUPTED)
        for r in stale:
            await audit.record(conn, SYSTEM, "roll.interrupted", f"roll-version-{r['version']}",
                               {"now": r["state"]})
    for r in stale:
        log.warning("roll version %d was left half-way by a load or activation that stopped; "
                    "now %s", r["version"], r["state"])
    return stale


async def _clear_leftovers(conn: Conn) -> None:
    """Under the lock no load runs: settle what a stopped one left; retired rows may be left
    over."""
    await _settle(conn)
    await delete_rows(conn)


async def settle_abandoned(pool: asyncpg.Pool) -> list[int]:
    """Settle the versions left 'loading' or 'building' by a load or activation whose matcher
    stopped; returns them. Nothing is done while the lifecycle lock is held (the operation
    holding it is alive and decides itself): this holds the lock for one short transaction,
    and a load starting meanwhile waits for it (``LOCK_TRIES``) rather than being refused."""
    async with pool.acquire() as conn:
        if not await _try_lock(conn):
            return []
        try:
            stale = await _settle(conn)
        finally:
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
    if any(r["state"] == DISCARDED for r in stale):
        await delete_rows(pool)
    return [int(r["version"]) for r in stale]


async def delete_rows(conn: Conn | asyncpg.Pool) -> None:
    """Delete the voters, and the saved index, of retired and discarded versions."""
    await conn.execute(
        "DELETE FROM matching.voters WHERE version IN (SELECT version FROM "
        "matching.roll_versions WHERE state IN ('retired', 'discarded'))")
    await store.delete_indexes(conn)


async def new_version(conn: Conn, source: str, actor: str) -> int:
    return int(await conn.fetchval(
        "INSERT INTO matching.roll_versions (state, source, loaded_by) VALUES ('loading', $1, $2) "
        "RETURNING version", source, actor))


async def staged(conn: Conn, version: int, rows: int, rejected: int, actor: str) -> None:
    """The version's rows are all in: its index is to be built by every replica."""
    async with conn.transaction():
        source = await conn.fetchval(
            "UPDATE matching.roll_versions SET state = 'building', rows = $2, rejected = $3, "
            "loaded_at = clock_timestamp() WHERE version = $1 RETURNING source",
            version, rows, rejected)
        await audit.record(conn, actor, "roll.loaded", f"roll-version-{version}",
                           {"source": source, "voters": rows, "rejected": rejected})


async def discard(pool: asyncpg.Pool, version: int, rows: int, rejected: int, note: str,
                  actor: str) -> None:
    """Delete a failed or refused load's rows; its record stays, as 'discarded'."""
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM matching.voters WHERE version = $1", version)
        async with conn.transaction():
            await conn.execute(
                "UPDATE matching.roll_versions SET state = 'discarded', rows = $2, rejected = $3, "
                "note = $4 WHERE version = $1", version, rows, rejected, note[:2000])
            await audit.record(conn, actor, "roll.discarded", f"roll-version-{version}",
                               {"voters": rows, "rejected": rejected, "why": note[:2000]})


async def ensure_active(conn: Conn, version: int) -> None:
    """Inside the transaction that records decisions made with ``version``: hold the
    version's row (FOR SHARE, until commit) and check that it is still the active one."""
    state = await conn.fetchval(
        "SELECT state FROM matching.roll_versions WHERE version = $1 FOR SHARE", version)
    if state != ACTIVE:
        raise RollVersionChanged(f"roll version {version} is no longer active ({state}); the "
                                 "batch is decided again with the active one")


@dataclass(frozen=True, slots=True)
class Replica:
    replica_id: str
    serving_version: int
    built_versions: tuple[int, ...]
    heartbeat_at: datetime
    live: bool


async def replicas(conn: Conn | asyncpg.Pool, stale_seconds: float) -> list[Replica]:
    rows = await conn.fetch(
        "SELECT replica_id, coalesce(serving_version, 0) AS serving, built_versions, heartbeat_at, "
        "heartbeat_at > clock_timestamp() - make_interval(secs => $1) AS live "
        "FROM matching.replicas ORDER BY replica_id", stale_seconds)
    return [Replica(r["replica_id"], int(r["serving"]), tuple(r["built_versions"]),
                    r["heartbeat_at"], bool(r["live"])) for r in rows]


def _check_activatable(version: int, state: str | None) -> None:
    if state is None:
        raise NotFound(f"no roll version {version}")
    if state == ACTIVE:
        raise FailedPrecondition(f"roll version {version} is already the active version")
    if state not in (BUILDING, READY):
        raise FailedPrecondition(
            f"roll version {version} is {state}: its rows are no longer kept; only a ready "
            "version (sigverify roll list) can be activated, else load the file again")


@dataclass(frozen=True, slots=True)
class Activation:
    version: int
    previous: int
    voters: int
    retired: tuple[int, ...]


class NotBuilt(FailedPrecondition):
    """A live replica does not hold the version's index (yet)."""

    def __init__(self, version: int, missing: list[str]) -> None:
        super().__init__(f"matcher replica(s) {', '.join(missing)} have not built the index of "
                         f"roll version {version}")
        self.missing = missing


async def activate(conn: Conn, version: int, actor: str, reason: str,
                   stale_seconds: float | None = None) -> Activation:
    """Make ``version`` (building or ready) the active version in one transaction, with its
    audit entry; the active one becomes 'ready' (kept for rollback), other kept versions are
    retired and their rows deleted. With ``stale_seconds``, every replica whose heartbeat is
    that recent must hold the version's index (checked under the lock; else ``NotBuilt``)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT state, rows FROM matching.roll_versions WHERE version = $1 FOR UPDATE", version)
        _check_activatable(version, row["state"] if row else None)
        assert row is not None
        # Waits for every transaction recording decisions with the active version (FOR SHARE).
        previous = await conn.fetchval(
            "SELECT version FROM matching.roll_versions WHERE state = 'active' FOR UPDATE") or 0
        if stale_seconds is not None:
            missing = [r.replica_id for r in await replicas(conn, stale_seconds)
                       if r.live and version not in r.built_versions]
            if missing:
                raise NotBuilt(version, missing)
        now = await conn.fetchval("SELECT clock_timestamp()")
        retired = [r["version"] for r in await conn.fetch(
            "UPDATE matching.roll_versions SET state = 'retired' WHERE state IN ('ready', "
            "'building') AND version <> $1 AND version <> $2 RETURNING version", version, previous)]
        if previous:
            await conn.execute(
                "UPDATE matching.roll_versions SET state = 'ready', deactivated_at = $2 "
                "WHERE version = $1", previous, now)
            await conn.execute(
                "UPDATE matching.roll_activations SET deactivated_at = $2 "
                "WHERE version = $1 AND deactivated_at IS NULL", previous, now)
        await conn.execute(
            "UPDATE matching.roll_versions SET state = 'active', activated_at = $2, "
            "deactivated_at = NULL, note = '' WHERE version = $1", version, now)
        await conn.execute(
            "INSERT INTO matching.roll_activations (version, previous, actor, reason, activated_at) "
            "VALUES ($1, $2, $3, $4, $5)", version, previous or None, actor, reason, now)
        await audit.record(conn, actor, "roll.activated", f"roll-version-{version}", {
            "reason": reason, "voters": row["rows"], "previous": previous, "retired": retired})
    if retired:
        await conn.execute("DELETE FROM matching.voters WHERE version = ANY($1::bigint[])", retired)
        await store.delete_indexes(conn)
    log.info("roll version %d active (%s; previous %d, retired %s)", version, reason, previous,
             retired)
    return Activation(version, previous, int(row["rows"]), tuple(retired))


@dataclass(frozen=True, slots=True)
class BuildProgress:
    version: int
    built: int
    live: int


async def activate_when_built(
    conn: Conn, version: int, actor: str, reason: str, *, timeout: float, stale_seconds: float,
    progress: Callable[[BuildProgress], Awaitable[None]] | None = None, poll: float = 0.25,
) -> Activation:
    """Set ``version`` building, wait until every live replica holds its index, activate it.

    After ``timeout`` seconds the version is set 'ready' (kept: ``roll activate`` can finish
    the job later) and FAILED_PRECONDITION names the replicas that had not built it.
    """
    state = await conn.fetchval(
        "UPDATE matching.roll_versions SET state = 'building', note = '' WHERE version = $1 "
        "AND state IN ('ready', 'building') RETURNING state", version)
    if state is None:
        _check_activatable(version, await conn.fetchval(
            "SELECT state FROM matching.roll_versions WHERE version = $1", version))
    end = time.monotonic() + timeout
    last: BuildProgress | None = None
    try:
        while True:
            reps = [r for r in await replicas(conn, stale_seconds) if r.live]
            built = [r for r in reps if version in r.built_versions]
            now = BuildProgress(version, len(built), len(reps))
            if progress is not None and now != last:
                await progress(now)
            last = now
            if reps and len(built) == len(reps):
                try:
                    return await activate(conn, version, actor, reason, stale_seconds)
                except NotBuilt:
                    pass  # a replica joined meanwhile: wait for it too
            if time.monotonic() > end:
                missing = sorted(r.replica_id for r in reps if version not in r.built_versions)
                async with conn.transaction():
                    await audit.record(conn, actor, "roll.activation_failed",
                                       f"roll-version-{version}",
                                       {"reason": reason, "timeout_seconds": timeout,
                                        "replicas_not_built": missing, "replicas_live": len(reps)})
                raise FailedPrecondition(
                    f"roll version {version} was not activated: after {timeout:.0f}s "
                    + (f"matcher replica(s) {', '.join(missing)} had not built its index"
                       if missing else "no matcher replica was live")
                    + f". The version is kept (ready): 'sigverify roll activate {version}' once "
                    "they have; the active version is unchanged")
            await asyncio.sleep(poll)
    except BaseException:
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await asyncio.shield(conn.execute(
                "UPDATE matching.roll_versions SET state = 'ready' WHERE version = $1 "
                "AND state = 'building'", version))
        raise


async def previous_version(conn: Conn | asyncpg.Pool) -> int:
    """The version the active one replaced (the rollback target), if its rows are kept."""
    v = await conn.fetchval(
        "SELECT v.version FROM matching.roll_activations a JOIN matching.roll_versions v "
        "ON v.version = a.previous WHERE a.deactivated_at IS NULL AND v.state = 'ready' "
        "ORDER BY a.id DESC LIMIT 1")
    if v is None:
        raise FailedPrecondition("there is no previous roll version to roll back to (its rows "
                                 "are kept only until the version after it is activated)")
    return int(v)


async def list_versions(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(
        "SELECT version, state, rows, rejected, source, loaded_by, note, started_at, loaded_at, "
        "activated_at, deactivated_at FROM matching.roll_versions ORDER BY version DESC")]


# -- each matcher replica ----------------------------------------------------------------------

#: Given a roll version, return its candidate index: the one place an index is made. The
#: columnar index is built once per version (by the first replica to need it) and saved;
#: every other replica loads it (``store.index_of``).
IndexBuilder = Callable[[asyncpg.Pool, int], Awaitable[VoterIndex]]


async def build_candidate_index(pool: asyncpg.Pool, version: int) -> VoterIndex:
    index = await store.index_of(pool, version)
    # Its derived tables made before it serves, off the first batch's path.
    await asyncio.to_thread(engine.warm, index)
    return index


class RollIndex:
    """This replica's candidate indexes: the active version's, which it decides with, and
    those of versions being activated ('building'), built in the background.

    ``current()`` gives the active version and its index; when this replica does not hold
    it yet (it started late, or a version was activated without waiting for it) it waits
    for the build rather than decide with another version. ``run`` keeps the heartbeat row,
    builds what is wanted and drops what is not.
    """

    def __init__(self, pool: asyncpg.Pool, replica_id: str,
                 build: IndexBuilder = build_candidate_index, heartbeat_seconds: float = 1.0,
                 retry_seconds: float = 5.0) -> None:
        self._pool = pool
        self.replica_id = replica_id
        self._build_fn = build
        self._heartbeat = heartbeat_seconds
        self._retry = retry_seconds
        self.version = 0
        self.indexes: dict[int, VoterIndex] = {}
        self._builds: dict[int, asyncio.Task[None]] = {}
        self._failed_at: dict[int, float] = {}

    @property
    def index(self) -> VoterIndex | None:
        return self.indexes.get(self.version)

    async def current(self) -> tuple[int, VoterIndex]:
        active = await self._pool.fetchval(
            "SELECT version FROM matching.roll_versions WHERE state = 'active'")
        if active is None:
            raise Unavailable("no voter roll is active yet (sigverify roll load)")
        index = self.indexes.get(active)
        if index is None:
            self._failed_at.pop(active, None)
            await asyncio.shield(self._start_build(active))
            index = self.indexes.get(active)
            if index is None:
                raise Unavailable(f"the candidate index of roll version {active} is not built "
                                  "(building it failed; retrying)")
        self._serve(active)
        return active, index

    def _serve(self, version: int) -> None:
        if version == self.version:
            return
        old, self.version = self.version, version
        self.indexes.pop(old, None)
        ROLL_SERVING.set(version)
        ROLL_SIZE.set(len(self.indexes[version]))
        # The new index's objects live as long as the version; the old one's are garbage.
        frozen = heap.settle()
        log.info("deciding with roll version %d (was %d); %d objects settled", version, old,
                 frozen)

    def _start_build(self, version: int) -> asyncio.Task[None]:
        task = self._builds.get(version)
        if task is None or task.done():
            task = self._builds[version] = asyncio.create_task(
                self._build(version), name=f"roll-index-{version}")
        return task

    async def _build(self, version: int) -> None:
        started = time.perf_counter()
        try:
            index = await self._build_fn(self._pool, version)
        except Exception as exc:  # noqa: BLE001 - any failure: logged, retried later
            self._failed_at[version] = time.monotonic()
            log.warning("building the index of roll version %d failed (%s); will retry",
                        version, exc.__class__.__name__)
            return
        self.indexes[version] = index
        log.info("candidate index for roll version %d: %d voters in %.1fs", version, len(index),
                 time.perf_counter() - started)

    async def sync(self) -> None:
        """Settle versions a stopped load or activation left half-way, build the indexes
        wanted (the active version's, those being activated), drop the others, switch to the
        active version when its index is here, heartbeat."""
        rows = await self._pool.fetch(
            "SELECT version, state FROM matching.roll_versions "
            "WHERE state IN ('active', 'building', 'loading')")
        if any(r["state"] != ACTIVE for r in rows) and await self._settle():
            rows = await self._pool.fetch(
                "SELECT version, state FROM matching.roll_versions "
                "WHERE state IN ('active', 'building')")
        rows = [r for r in rows if r["state"] in (ACTIVE, BUILDING)]
        wanted = {int(r["version"]) for r in rows}
        active = next((int(r["version"]) for r in rows if r["state"] == ACTIVE), 0)
        for version in wanted:
            failed = self._failed_at.get(version)
            if version not in self.indexes and (failed is None
                                                or time.monotonic() - failed > self._retry):
                self._failed_at.pop(version, None)
                self._start_build(version)
        if active in self.indexes:
            self._serve(active)
        for version in [v for v in self.indexes if v not in wanted]:
            del self.indexes[version]
        if self.version and self.version not in self.indexes:
            # No longer active, and the active version's index is not built here yet.
            self.version = 0
            ROLL_SERVING.set(0)
            ROLL_SIZE.set(0)
        for version in [v for v, t in self._builds.items() if t.done()]:
            del self._builds[version]
        await self._pool.execute(
            "INSERT INTO matching.replicas (replica_id, serving_version, built_versions, "
            "heartbeat_at) VALUES ($1, $2, $3, clock_timestamp()) ON CONFLICT (replica_id) DO "
            "UPDATE SET serving_version = $2, built_versions = $3, heartbeat_at = clock_timestamp()",
            self.replica_id, self.version or None, sorted(self.indexes))

    async def _settle(self) -> list[int]:
        """``settle_abandoned``; its failure is logged and does not stop the heartbeat."""
        try:
            return await settle_abandoned(self._pool)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            log.warning("settling an interrupted roll version failed (%s); retrying",
                        exc.__class__.__name__)
            return []

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.sync()
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError,
                        TimeoutError) as exc:
                    log.warning("roll heartbeat failed (%s); retrying", exc.__class__.__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._heartbeat)
        finally:
            for task in self._builds.values():
                task.cancel()
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError,
                                     TimeoutError):
                await self._pool.execute(
                    "DELETE FROM matching.replicas WHERE replica_id = $1", self.replica_id)
            # Rows of replicas that died without saying so, long ago.
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError,
                                     TimeoutError):
                await self._pool.execute(
                    "DELETE FROM matching.replicas WHERE heartbeat_at < now() - interval '1 day'")
