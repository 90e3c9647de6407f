"""Matching's RPCs refuse a request's bad text up front: INVALID_ARGUMENT naming the field,
the value quoted short, before any matching or database work, and the service keeps serving.

Found by a hostile trial: a 300,000-character first name held a worker thread ~19 s after the
caller's deadline (8 such calls froze the pipeline for ~2 minutes) and one over 32,767
characters failed with INTERNAL; a date that is not a date or a NUL in petition_id was
INTERNAL; a NUL in a roll's source was told as the database's failure; and errors quoting a
long value whole went over gRPC's 16 KiB trailing metadata (RESOURCE_EXHAUSTED)."""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import asyncpg
import grpc
import pytest

from sigverify.common.v1 import common_pb2
from sigverify.matching.v1 import matching_pb2, matching_pb2_grpc
from sigverify_cli import stack
from sigverify_cli.synth import SynthOutput
from sigverify_common.convert import reason_from_pb
from tests.integration import helpers as h

pytestmark = pytest.mark.integration

#: intake's limit for each printed field (sigverify_intake.domain.FIELD_LIMITS).
LIMITS = {"first_name": 200, "middle_name": 200, "last_name": 200, "street": 300, "unit": 100,
          "city": 100, "zip": 20, "county": 100, "signed_on": 20, "birth_date": 20}


def _voter(synth_data: SynthOutput) -> dict[str, str]:
    with synth_data.roll_csv.open(newline="", encoding="utf-8") as fh:
        return next(r for r in csv.DictReader(fh) if r["status"] == "ACTIVE")


def _printed(v: dict[str, str], **changes: str) -> common_pb2.PrintedSignature:
    fields = {"first_name": v["first_name"], "last_name": v["last_name"],
              "street": v["street"], "zip": v["zip"], "county": v["county"],
              "signed_on": "2017-05-01"}
    return common_pb2.PrintedSignature(**(fields | changes))


async def _refused(call: Awaitable[Any], field: str) -> str:
    """The awaited call's INVALID_ARGUMENT details, which name ``field`` and stay short."""
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, e.value.details())
    details = e.value.details() or ""
    assert field in details and len(details) < 300, details
    return details


async def _still_matches(stub: matching_pb2_grpc.MatchingServiceStub, v: dict[str, str]) -> None:
    r = await stub.MatchSignature(matching_pb2.MatchSignatureRequest(printed=_printed(v)),
                                  timeout=10)
    assert (r.voter_id, reason_from_pb(r.reason).value) == (v["voter_id"], "MATCHED")


async def test_match_signature_refuses_a_printed_field_over_intakes_limit_or_with_a_nul(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    v = _voter(synth_data)
    async with h.channel(live_stack, "matching") as ch:
        stub = matching_pb2_grpc.MatchingServiceStub(ch)
        for field, limit in LIMITS.items():
            for bad in ("x" * (limit + 1), "A\x00B"):
                await _refused(stub.MatchSignature(matching_pb2.MatchSignatureRequest(
                    printed=_printed(v, **{field: bad})), timeout=10), f"printed.{field}")
        # A name at the limit is still matched.
        r = await stub.MatchSignature(matching_pb2.MatchSignatureRequest(
            printed=_printed(v, middle_name="Q" * LIMITS["middle_name"])), timeout=10)
        assert r.roll_version > 0
        # Eight calls with 300,000-character first names (which froze the pipeline for ~2
        # minutes) are each refused at once, and leave nothing running: a match right after
        # answers as quickly as ever.
        started = time.monotonic()
        calls = [_refused(stub.MatchSignature(matching_pb2.MatchSignatureRequest(
            printed=_printed(v, first_name="x" * 300_000), petition_id="p0"), timeout=5),
            "printed.first_name") for _ in range(8)]
        for details in await asyncio.gather(*calls):
            assert "300,000" in details
        await _still_matches(stub, v)
        assert time.monotonic() - started < 5


async def test_match_signature_refuses_a_date_that_is_not_one_and_a_bad_petition_id(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    v = _voter(synth_data)
    async with h.channel(live_stack, "matching") as ch:
        stub = matching_pb2_grpc.MatchingServiceStub(ch)
        for field in ("signed_on", "birth_date"):
            for bad in ("not a date", "2017-13-01", "2017-02-30", "20170501", "'; DROP--", "Ωé"):
                details = await _refused(stub.MatchSignature(matching_pb2.MatchSignatureRequest(
                    printed=_printed(v, **{field: bad})), timeout=10), f"printed.{field}")
                assert "YYYY-MM-DD" in details
        for bad in ("p\x00", "p" * 201):
            await _refused(stub.MatchSignature(matching_pb2.MatchSignatureRequest(
                printed=_printed(v), petition_id=bad), timeout=10), "petition_id")
        # Spaces around a date are read as intake reads them; an unknown petition has no
        # deadline.
        r = await stub.MatchSignature(matching_pb2.MatchSignatureRequest(
            printed=_printed(v, signed_on=" 2017-05-01 ", birth_date=""),
            petition_id="no-such-petition"), timeout=10)
        assert r.voter_id == v["voter_id"]
        await _still_matches(stub, v)


async def test_explain_signature_quotes_a_long_id_short(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    async with h.channel(live_stack, "matching") as ch:
        stub = matching_pb2_grpc.MatchingServiceStub(ch)
        for bad in ("x" * 20_000, "a\x00b"):
            await _refused(stub.ExplainSignature(
                matching_pb2.ExplainSignatureRequest(signature_id=bad), timeout=10),
                "signature_id")
        details = await _refused(stub.ExplainSignature(
            matching_pb2.ExplainSignatureRequest(signature_id="not-a-uuid-" * 15), timeout=10),
            "signature_id")
        assert "is not a UUID" in details and "not-a-uuid-" * 5 not in details
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.ExplainSignature(matching_pb2.ExplainSignatureRequest(
                signature_id="00000000-0000-0000-0000-000000000000"), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        await _still_matches(stub, _voter(synth_data))


async def _header_only(stub: matching_pb2_grpc.MatchingServiceStub, header: matching_pb2.RollHeader
                       ) -> None:
    """A LoadRoll that sends its header and waits (the server answers the header first)."""
    async def requests() -> AsyncIterator[matching_pb2.LoadRollRequest]:
        yield matching_pb2.LoadRollRequest(header=header)
        await asyncio.sleep(3600)

    async for progress in stub.LoadRoll(requests(), timeout=20):
        raise AssertionError(f"the header was accepted: {progress}")


async def test_load_roll_refuses_a_bad_source_or_max_rejected_before_storing_anything(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    pool = await asyncpg.create_pool(live_stack.database_url, min_size=1, max_size=2)
    try:
        before = await pool.fetchval("SELECT max(version) FROM matching.roll_versions")
        async with h.channel(live_stack, "matching") as ch:
            stub = matching_pb2_grpc.MatchingServiceStub(ch)
            for header, field in (
                    (matching_pb2.RollHeader(source="roll\x00.csv"), "header.source"),
                    (matching_pb2.RollHeader(source="r" * 1_000_000), "header.source"),
                    (matching_pb2.RollHeader(source="r" * 256), "header.source"),
                    (matching_pb2.RollHeader(max_rejected="1\x00"), "header.max_rejected"),
                    (matching_pb2.RollHeader(max_rejected="9" * 20_000), "header.max_rejected"),
                    (matching_pb2.RollHeader(activation_timeout_seconds=float("nan")),
                     "activation_timeout_seconds"),
                    (matching_pb2.RollHeader(activation_timeout_seconds=float("inf")),
                     "activation_timeout_seconds")):
                await _refused(_header_only(stub, header), field)
            # A bad max_rejected of a readable length is still quoted (cut short).
            details = await _refused(_header_only(stub, matching_pb2.RollHeader(
                max_rejected="abc")), "max_rejected")
            assert "'abc'" in details
            # The service answers after: its versions are listed, a signature still matches.
            listed = await stub.ListRolls(matching_pb2.ListRollsRequest(), timeout=10)
            assert all(len(r.source) <= 255 for r in listed.versions)
            await _still_matches(stub, _voter(synth_data))
        # No roll version was begun for any of them.
        assert await pool.fetchval("SELECT max(version) FROM matching.roll_versions") == before
    finally:
        await pool.close()


async def test_load_roll_refuses_a_source_naming_no_file(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    """A source of "/" was stored as an empty name (blank in 'sigverify roll list'): a source
    whose last component is empty, "." or ".." is refused before any version is begun."""
    pool = await asyncpg.create_pool(live_stack.database_url, min_size=1, max_size=2)
    try:
        before = await pool.fetchval("SELECT max(version) FROM matching.roll_versions")
        async with h.channel(live_stack, "matching") as ch:
            stub = matching_pb2_grpc.MatchingServiceStub(ch)
            for source in ("/", "dir/", " / ", ".."):
                details = await _refused(_header_only(stub, matching_pb2.RollHeader(
                    source=source)), "header.source")
                assert "names no file" in details, details
            listed = await stub.ListRolls(matching_pb2.ListRollsRequest(), timeout=10)
            assert all(r.source.strip() for r in listed.versions)
            await _still_matches(stub, _voter(synth_data))
        assert await pool.fetchval("SELECT max(version) FROM matching.roll_versions") == before
    finally:
        await pool.close()
