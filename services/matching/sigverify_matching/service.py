"""MatchingService: match one printed signature on request (internal clients, reviewers)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import asyncpg
import grpc

from sigverify.matching.v1 import matching_pb2, matching_pb2_grpc
from sigverify_common.convert import parse_uuid
from sigverify_common.errors import InvalidArgument, NotFound
from sigverify_common.vocab import canonical_county
from sigverify_matching import convert
from sigverify_matching.consumer import Deadlines, RollIndex
from sigverify_matching.domain import MatchConfig


class MatchingService(matching_pb2_grpc.MatchingServiceServicer):
    def __init__(self, pool: asyncpg.Pool, roll: RollIndex, deadlines: Deadlines,
                 config: MatchConfig) -> None:
        self._pool = pool
        self._roll = roll
        self._deadlines = deadlines
        self._config = config

    async def ExplainSignature(
        self, request: matching_pb2.ExplainSignatureRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> matching_pb2.Explanation:
        sid = parse_uuid(request.signature_id)
        row = await self._pool.fetchrow(
            "SELECT * FROM matching.decisions WHERE signature_id = $1", sid)
        if row is None:
            raise NotFound(f"no match decision for signature {sid} (yet)")
        return convert.explanation_to_pb(dict(row), self._config)

    async def MatchSignature(
        self, request: matching_pb2.MatchSignatureRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matching_pb2.MatchSignatureResponse:
        p = request.printed
        if not (p.first_name or p.last_name) or not p.street or not p.county:
            raise InvalidArgument("printed name, street and county are required")
        deadline = None
        if request.petition_id:
            deadline = (await self._deadlines.get({request.petition_id})).get(request.petition_id)
        version, index = await self._roll.current()
        config = self._config
        if request.max_candidates > 0:
            config = replace(config, max_candidates=request.max_candidates)
        printed = type(p)()
        printed.CopyFrom(p)
        printed.county = canonical_county(p.county)
        result = await asyncio.to_thread(index.match, convert.printed_input(printed, deadline), config)
        return convert.response_to_pb(result, version)
