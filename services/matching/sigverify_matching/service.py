"""MatchingService: match one printed signature on request (internal clients, reviewers),
explain a decision, and the voter roll's lifecycle (admins: load, list, activate)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any, TextIO

import asyncpg
import grpc

from sigverify.matching.v1 import matching_pb2, matching_pb2_grpc
from sigverify_common import auth
from sigverify_common.config import counties_var
from sigverify_common.convert import parse_uuid
from sigverify_common.db import Conn
from sigverify_common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SigVerifyError,
    Unavailable,
)
from sigverify_common.fields import MAX_ID_CHARS, check_text, shown
from sigverify_common.vocab import Counties, canonical_county
from sigverify_matching import convert, engine, store, versions
from sigverify_matching.config import ModelConfig, RollConfig
from sigverify_matching.consumer import Deadlines
from sigverify_matching.domain import MatchConfig
from sigverify_matching.roll import (
    ChunkStream,
    MaxRejected,
    RollLoad,
    load_roll_text,
    text_of,
)
from sigverify_matching.versions import RollIndex

log = logging.getLogger(__name__)
Context = grpc.aio.ServicerContext[Any, Any]
ACTOR = "system:matching"
#: The most signatures ``TrainModel`` learns from.
TRAIN_CAP = 1_000_000
#: Rejected rows a progress message carries (the file's first ones).
SENT_REJECTIONS = 20
#: How long a refused load goes on reading (and dropping) the rest of the upload.
DRAIN_SECONDS = 60.0
#: A roll header's texts, in characters: the file's name (kept as the version's source; a
#: file name is at most 255 bytes) and the rejected rows allowed ("100", "1%").
MAX_SOURCE_CHARS = 255
MAX_REJECTED_CHARS = 40

_STATES: dict[str, matching_pb2.RollState.ValueType] = {
    versions.LOADING: matching_pb2.ROLL_STATE_LOADING,
    versions.BUILDING: matching_pb2.ROLL_STATE_BUILDING,
    versions.ACTIVE: matching_pb2.ROLL_STATE_ACTIVE,
    versions.READY: matching_pb2.ROLL_STATE_READY,
    versions.RETIRED: matching_pb2.ROLL_STATE_RETIRED,
    versions.DISCARDED: matching_pb2.ROLL_STATE_DISCARDED,
}


def roll_source_name(text: str) -> str:
    """The version's source: the last '/'-separated component of the header's (already
    checked and stripped) source, "roll.csv" when none was sent. InvalidArgument when that
    component is empty (a source of "/" was stored as an empty name, shown blank by
    'sigverify roll list'; "dir/" names a directory) or only "." / ".."."""
    if not text:
        return "roll.csv"
    name = text.rsplit("/", 1)[-1].strip()
    if name in ("", ".", ".."):
        raise InvalidArgument(f"header.source {shown(text)} names no file (its last path "
                              "component is empty, '.' or '..'); send the roll file's name")
    return name


def _ts(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def _progress(state: str, load: RollLoad, build: versions.BuildProgress | None = None,
              previous: int = 0, rejections: bool = False) -> matching_pb2.RollProgress:
    return matching_pb2.RollProgress(
        state=_STATES[state], version=load.version, rows=load.rows, rejected=load.rejected,
        replicas_live=build.live if build else 0, replicas_built=build.built if build else 0,
        rejections=[matching_pb2.RollRejection(line=line, field=f, reason=why)
                    for line, f, why in load.errors[:SENT_REJECTIONS]] if rejections else [],
        previous_version=previous)


@contextlib.contextmanager
def _database_errors() -> Iterator[None]:
    """A database failure in the middle of a roll operation, told without its internals."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.error("roll operation failed: %s", exc.__class__.__name__)
        raise Unavailable("the database failed during the roll operation; 'sigverify roll "
                          "list' shows where each version stands") from None


async def _stream(
    work: Callable[[asyncio.Queue[matching_pb2.RollProgress | None]], Coroutine[Any, Any, None]],
) -> AsyncIterator[matching_pb2.RollProgress]:
    """Run ``work`` (which puts progress on the queue) and yield the progress as it comes;
    ``work``'s error ends the stream with its status. A client that goes away cancels it."""
    events: asyncio.Queue[matching_pb2.RollProgress | None] = asyncio.Queue()
    task = asyncio.create_task(work(events))
    task.add_done_callback(lambda _: events.put_nowait(None))
    try:
        while (event := await events.get()) is not None:
            yield event
        await task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


class MatchingService(matching_pb2_grpc.MatchingServiceServicer):
    def __init__(self, pool: asyncpg.Pool, roll: RollIndex, deadlines: Deadlines,
                 config: MatchConfig, roll_config: RollConfig | None = None,
                 models: store.Models | None = None, model_config: ModelConfig | None = None,
                 counties: Counties | None = None) -> None:
        self._pool = pool
        self._roll = roll
        self._deadlines = deadlines
        self._config = config
        self._roll_config = roll_config or RollConfig()
        self._models = models or store.Models(pool)
        self._model_config = model_config or ModelConfig()
        #: The counties a roll's rows may name: intake's (COUNTIES, else California's).
        self._counties = (counties if counties is not None
                          else Counties(counties_var(os.environ)))

    async def ExplainSignature(
        self, request: matching_pb2.ExplainSignatureRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> matching_pb2.Explanation:
        sid = parse_uuid(request.signature_id, "signature_id")
        row = await self._pool.fetchrow(
            "SELECT * FROM matching.decisions WHERE signature_id = $1", sid)
        if row is None:
            raise NotFound(f"no match decision for signature {sid} (yet)")
        return convert.explanation_to_pb(dict(row), self._config)

    async def MatchSignature(
        self, request: matching_pb2.MatchSignatureRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matching_pb2.MatchSignatureResponse:
        # Every text checked before any matching work: a name's comparison costs the square
        # of its length, in a worker thread that a caller's deadline does not stop.
        p = request.printed
        convert.check_printed(p)
        if not (p.first_name or p.last_name) or not p.street or not p.county:
            raise InvalidArgument("printed name, street and county are required")
        petition_id = check_text(request.petition_id, "petition_id", MAX_ID_CHARS)
        printed = type(p)()
        printed.CopyFrom(p)
        printed.county = canonical_county(p.county)
        sig = convert.printed_input(printed, None)  # its dates read (InvalidArgument) first
        if petition_id:
            sig = replace(sig, deadline=(await self._deadlines.get({petition_id})).get(petition_id))
        version, index = await self._roll.current()
        model = await self._models.current(index)
        config = self._config
        if request.max_candidates > 0:
            config = replace(config, max_candidates=min(request.max_candidates, 20))
        decided = await asyncio.to_thread(engine.match_batch, index, model.model, [sig], config)
        return convert.response_to_pb(decided.results()[0], version)

    # -- the match model -------------------------------------------------------------------------

    async def GetModel(self, request: matching_pb2.GetModelRequest, context: Context
                       ) -> matching_pb2.ModelInfo:
        if request.model_id < 0:
            raise InvalidArgument("model_id must not be negative")
        if request.model_id:
            stored = await store.model_by_id(self._pool, request.model_id)
            if stored is None:
                raise NotFound(f"no model {request.model_id}")
        else:
            version, _ = await self._roll.current()
            # A roll version with no model of its own yet decides with the newest earlier
            # one (store.Models.current) until its own is learned: that is the one in force.
            stored = (await store.latest_model(self._pool, version)
                      or await store.latest_model(self._pool))
            if stored is None:
                raise NotFound(f"roll version {version} has no match model yet: it is learned "
                               "when signatures arrive, or by 'sigverify model train'")
        return convert.model_to_pb(stored)

    async def TrainModel(self, request: matching_pb2.TrainModelRequest, context: Context
                         ) -> matching_pb2.ModelInfo:
        least = self._model_config.train_min
        if request.max_signatures < 0:
            raise InvalidArgument("max_signatures must not be negative")
        if 0 < request.max_signatures < least:
            raise InvalidArgument(
                f"max_signatures must be at least {least:,} (MATCH_TRAIN_MIN): a model "
                "learned from fewer is provisional, learned again once that many have arrived")
        if request.max_signatures > TRAIN_CAP:
            raise InvalidArgument(f"max_signatures is at most {TRAIN_CAP:,}")
        limit = request.max_signatures or self._model_config.train_max
        version, index = await self._roll.current()
        sigs = await store.training_signatures(self._pool, min(limit, TRAIN_CAP))
        if not sigs:
            raise FailedPrecondition("no signatures have been received yet: the model is "
                                     "learned from them")
        stored = await store.train(self._pool, index, sigs, auth.actor(ACTOR),
                                   "sigverify model train")
        self._models.forget(version)
        return convert.model_to_pb(stored)

    # -- the voter roll ------------------------------------------------------------------------

    def _timeout(self, requested: float) -> float:
        if not math.isfinite(requested):
            raise InvalidArgument("activation_timeout_seconds must be a finite number of seconds")
        if requested < 0:
            raise InvalidArgument("activation_timeout_seconds must not be negative")
        return requested or self._roll_config.activation_timeout_seconds

    async def LoadRoll(
        self, request_iterator: AsyncIterator[matching_pb2.LoadRollRequest], context: Context,
    ) -> AsyncIterator[matching_pb2.RollProgress]:
        """The client sends the header, waits for the first answer, then the file. An error
        while the file is still coming is announced in band (DISCARDED), the rest of the
        upload is read and dropped, and only then does the call end with the error's status:
        a client still writing when the status arrives would see INTERNAL instead
        (grpc/grpc#36066)."""
        actor = auth.actor(ACTOR)
        parts = aiter(request_iterator)
        first = await anext(parts, None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("the first message of a roll load must be its header")
        header = first.header
        # The header's texts checked first: a NUL in the source failed at the database (told
        # as the database's failure), and an error quoting a long value whole went over
        # gRPC's 16 KiB trailing metadata (the client saw RESOURCE_EXHAUSTED instead).
        source_text = check_text(header.source, "header.source", MAX_SOURCE_CHARS)
        limit = MaxRejected.parse(
            check_text(header.max_rejected, "header.max_rejected", MAX_REJECTED_CHARS))
        timeout = self._timeout(header.activation_timeout_seconds)
        source = roll_source_name(source_text)
        loop = asyncio.get_running_loop()
        inbound: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=16)
        discarding = asyncio.Event()
        load = RollLoad(source=source)

        async def feed() -> None:
            received, complete = 0, False
            try:
                async for part in parts:
                    if part.HasField("header"):
                        raise InvalidArgument(
                            "the client abandoned the upload (a second header: a roll load "
                            "has exactly one)")
                    if complete:
                        raise InvalidArgument("the upload went on after its end")
                    if part.HasField("end"):
                        if part.end.bytes != received:
                            raise InvalidArgument(
                                f"the upload's end announced {part.end.bytes:,} bytes of the "
                                f"file, {received:,} arrived: nothing was loaded")
                        complete = True
                        continue
                    received += len(part.data)
                    if part.data and not discarding.is_set():
                        await inbound.put(part.data)
                if not complete:
                    # A stream that ends without the end of the file: the client stopped
                    # (Ctrl-C) or was cut off. gRPC may present a cancelled upload so; what
                    # arrived is not the roll, however well it reads.
                    raise InvalidArgument(
                        "the upload stopped before the end of the file (the client stopped "
                        "or was cut off): nothing was loaded")
            except InvalidArgument as exc:
                await inbound.put(exc)
                return
            await inbound.put(None)

        def get() -> bytes | None:  # in the loader's worker thread
            item = asyncio.run_coroutine_threadsafe(inbound.get(), loop).result()
            if isinstance(item, BaseException):
                raise item
            return item

        def open_text() -> contextlib.nullcontext[TextIO]:
            return contextlib.nullcontext(text_of(ChunkStream(get)))

        def unblock() -> None:
            discarding.set()
            while not inbound.empty():
                inbound.get_nowait()
            inbound.put_nowait(None)

        async def work(events: asyncio.Queue[matching_pb2.RollProgress | None]) -> None:
            async def activate(conn: Conn, staged: RollLoad) -> versions.Activation:
                async def building(b: versions.BuildProgress) -> None:
                    events.put_nowait(_progress(versions.BUILDING, staged, b, rejections=True))

                return await versions.activate_when_built(
                    conn, staged.version, actor, "loaded", timeout=timeout,
                    stale_seconds=self._roll_config.stale_seconds, progress=building)

            with _database_errors():
                await load_roll_text(
                    self._pool, source, open_text, actor=actor, max_rejected=limit,
                    on_rows=lambda r: events.put_nowait(_progress(versions.LOADING, r)),
                    unblock=unblock, activate=activate, result=load,
                    counties=self._counties)
            events.put_nowait(_progress(versions.ACTIVE, load, previous=load.previous,
                                        rejections=True))

        feeder = asyncio.create_task(feed())
        try:
            yield _progress(versions.LOADING, load)  # the header is accepted: send the file
            try:
                async for event in _stream(work):
                    yield event
            except SigVerifyError:
                if not feeder.done():
                    unblock()
                    yield _progress(versions.DISCARDED, load, rejections=True)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(feeder), DRAIN_SECONDS)
                raise
        finally:
            feeder.cancel()

    async def ActivateRoll(
        self, request: matching_pb2.ActivateRollRequest, context: Context,
    ) -> AsyncIterator[matching_pb2.RollProgress]:
        actor = auth.actor(ACTOR)
        timeout = self._timeout(request.activation_timeout_seconds)
        if request.version < 0 or (request.version == 0) != request.previous:
            raise InvalidArgument("give either a version to activate or previous (rollback)")

        async def work(events: asyncio.Queue[matching_pb2.RollProgress | None]) -> None:
            with _database_errors():
                await activate(events)

        async def activate(events: asyncio.Queue[matching_pb2.RollProgress | None]) -> None:
            async with versions.lifecycle_lock(self._pool) as conn:
                version = request.version or await versions.previous_version(conn)
                load = RollLoad(version=version)

                async def building(b: versions.BuildProgress) -> None:
                    events.put_nowait(_progress(versions.BUILDING, load, b))

                done = await versions.activate_when_built(
                    conn, version, actor, "rollback" if request.previous else "activated",
                    timeout=timeout, stale_seconds=self._roll_config.stale_seconds,
                    progress=building)
            load.rows = done.voters
            events.put_nowait(_progress(versions.ACTIVE, load, previous=done.previous))

        async for event in _stream(work):
            yield event

    async def ListRolls(self, request: matching_pb2.ListRollsRequest, context: Context
                        ) -> matching_pb2.ListRollsResponse:
        rows = await versions.list_versions(self._pool)
        reps = await versions.replicas(self._pool, self._roll_config.stale_seconds)
        return matching_pb2.ListRollsResponse(
            versions=[matching_pb2.RollVersion(
                version=r["version"], rows=r["rows"], rejected=r["rejected"],
                state=_STATES.get(r["state"], matching_pb2.ROLL_STATE_UNSPECIFIED),
                source=r["source"], loaded_by=r["loaded_by"],
                note=r["note"], started_at=_ts(r["started_at"]), loaded_at=_ts(r["loaded_at"]),
                activated_at=_ts(r["activated_at"]), deactivated_at=_ts(r["deactivated_at"]))
                for r in rows],
            replicas=[matching_pb2.RollReplica(
                replica_id=r.replica_id, serving_version=r.serving_version,
                built_versions=list(r.built_versions), heartbeat_at=_ts(r.heartbeat_at),
                live=r.live) for r in reps])
