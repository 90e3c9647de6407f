"""Hostile arguments to tally's and intake's RPCs through the real stack: each is refused with
INVALID_ARGUMENT (or NOT_FOUND) naming the field in a short message, never INTERNAL (a NUL
PostgreSQL refused, an enum number or an integer the database could not hold) nor
RESOURCE_EXHAUSTED (a 20,000-character value echoed whole past gRPC's 16 KiB of trailing
metadata), and the service goes on serving."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from sigverify.access.v1 import access_pb2, access_pb2_grpc
from sigverify.common.v1 import common_pb2
from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify.tally.v1 import tally_pb2, tally_pb2_grpc
from sigverify_cli import stack
from tests.integration import helpers as h

pytestmark = pytest.mark.integration

INVALID = grpc.StatusCode.INVALID_ARGUMENT
LONG = "y" * 20_000
#: An error message quoting a value cuts it: far under gRPC's 16 KiB.
SHORT = 400


async def refusal(call: Callable[[], Any]) -> grpc.aio.AioRpcError:
    """The error a unary call or a server stream (read to its end) ends in."""
    try:
        got = call()
        if hasattr(got, "__aiter__"):
            async for _ in got:
                pass
        else:
            await got
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call was answered, not refused")


def check(exc: grpc.aio.AioRpcError, code: grpc.StatusCode, *words: str) -> None:
    details = exc.details() or ""
    assert exc.code() == code, (exc.code(), details[:300])
    assert len(details) < SHORT, len(details)
    for w in words:
        assert w in details, (w, details)


async def still_serves(state: stack.StackState, petition_id: str) -> None:
    """Both services answer a good call after the refusals."""
    assert (await h.tally(state, petition_id)).petition_id == petition_id
    async with h.channel(state, "intake") as ch:
        p = await intake_pb2_grpc.IntakeServiceStub(ch).GetPetition(
            intake_pb2.GetPetitionRequest(petition_id=petition_id), timeout=10)
    assert p.petition_id == petition_id


@pytest.mark.parametrize("bad", ["p\x00x", LONG], ids=["nul", "20k"])
async def test_tally_refuses_a_bad_petition_id_naming_it(live_stack: stack.StackState,
                                                         bad: str) -> None:
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    async with h.channel(live_stack, "tally") as ch:
        stub = tally_pb2_grpc.TallyServiceStub(ch)
        calls: dict[str, Callable[[], Any]] = {
            "GetTally": lambda: stub.GetTally(tally_pb2.GetTallyRequest(petition_id=bad),
                                              timeout=10),
            "ListResults": lambda: stub.ListResults(
                tally_pb2.ListResultsRequest(petition_id=bad), timeout=10),
            "CheckInvariants": lambda: stub.CheckInvariants(
                tally_pb2.CheckInvariantsRequest(petition_id=bad), timeout=10),
            "WatchTally": lambda: stub.WatchTally(
                tally_pb2.WatchTallyRequest(petition_id=bad, min_interval_ms=200), timeout=10),
        }
        for name, call in calls.items():
            exc = await refusal(call)
            word = "NUL" if "\x00" in bad else "20,000 characters"
            check(exc, INVALID, "petition_id", word)
            assert exc.code() == INVALID, name
        for sid in ("a\x00b", LONG):
            exc = await refusal(lambda sid=sid: stub.GetResult(   # type: ignore[misc]
                tally_pb2.GetResultRequest(signature_id=sid), timeout=10))
            check(exc, INVALID, "signature_id")
    await still_serves(live_stack, pid)


async def test_list_results_of_an_unknown_petition_is_not_found(
        live_stack: stack.StackState) -> None:
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    async with h.channel(live_stack, "tally") as ch:
        stub = tally_pb2_grpc.TallyServiceStub(ch)
        exc = await refusal(lambda: stub.ListResults(
            tally_pb2.ListResultsRequest(petition_id="nosuch-" + pid), timeout=10))
        check(exc, grpc.StatusCode.NOT_FOUND, "nosuch-" + pid)
        # A petition that exists with nothing filed yet: an empty list, not an error.
        assert [r async for r in stub.ListResults(
            tally_pb2.ListResultsRequest(petition_id=pid), timeout=10)] == []
    await still_serves(live_stack, pid)


def petition(pid: str, **fields: Any) -> intake_pb2.CreatePetitionRequest:
    base: dict[str, Any] = {"petition_id": pid, "title": "t", "required_signatures": 10,
                            "deadline": "2017-07-25"}
    base.update(fields)
    return intake_pb2.CreatePetitionRequest(**base)


async def create_refused(state: stack.StackState, request: intake_pb2.CreatePetitionRequest
                         ) -> grpc.aio.AioRpcError:
    async with h.channel(state, "intake") as ch:
        stub = intake_pb2_grpc.IntakeServiceStub(ch)
        return await refusal(lambda: stub.CreatePetition(request, timeout=10))


async def not_created(state: stack.StackState, pid: str) -> None:
    async with h.channel(state, "intake") as ch:
        exc = await refusal(lambda: intake_pb2_grpc.IntakeServiceStub(ch).GetPetition(
            intake_pb2.GetPetitionRequest(petition_id=pid), timeout=10))
    assert exc.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("number", [-1, 3, 99])
async def test_create_petition_refuses_an_enum_number_it_does_not_know(
        live_stack: stack.StackState, number: int) -> None:
    pid = h.new_petition_id()
    check(await create_refused(live_stack, petition(pid, duplicate_policy=number)), INVALID,
          f"duplicate_policy {number}", "1 (DUPLICATE_POLICY_KEEP_FIRST)",
          "2 (DUPLICATE_POLICY_INVALIDATE_ALL)")
    check(await create_refused(live_stack, petition(pid, method=number)), INVALID,
          f"method {number}", "1 (VERIFICATION_METHOD_FULL_COUNT)",
          "2 (VERIFICATION_METHOD_RANDOM_SAMPLE)")
    await not_created(live_stack, pid)
    await h.create_petition(live_stack, pid)
    async with h.channel(live_stack, "intake") as ch:
        stub = intake_pb2_grpc.IntakeServiceStub(ch)
        exc = await refusal(lambda: stub.SetVerificationMethod(
            intake_pb2.SetVerificationMethodRequest(petition_id=pid, method=number,  # type: ignore[arg-type]
                                                    reason="test"), timeout=10))
    check(exc, INVALID, f"method {number}", "2 (VERIFICATION_METHOD_RANDOM_SAMPLE)")
    await still_serves(live_stack, pid)


async def test_a_minimum_sample_the_database_cannot_hold_is_refused(
        live_stack: stack.StackState) -> None:
    pid = h.new_petition_id()
    for n in (2**63 - 1, 2**31):
        rules = common_pb2.SamplingRules(minimum_sample=n)
        check(await create_refused(live_stack, petition(pid, sampling=rules)), INVALID,
              "sampling.minimum_sample", "2,147,483,647")
    check(await create_refused(live_stack, petition(pid, sampling=common_pb2.SamplingRules(
        sample_percent=LONG))), INVALID, "sampling.sample_percent")
    # Numbers PostgreSQL's numeric cannot hold.
    for name, value in (("sample_percent", "1e-99999"), ("fail_below_percent", "1e-99999"),
                        ("qualify_above_percent", "1e99999")):
        check(await create_refused(live_stack, petition(pid, sampling=common_pb2.SamplingRules(
            **{name: value}))), INVALID, f"sampling.{name}", value)
    await not_created(live_stack, pid)
    await h.create_petition(live_stack, pid)
    async with h.channel(live_stack, "intake") as ch:
        stub = intake_pb2_grpc.IntakeServiceStub(ch)
        exc = await refusal(lambda: stub.SetVerificationMethod(
            intake_pb2.SetVerificationMethodRequest(
                petition_id=pid, method=common_pb2.VERIFICATION_METHOD_RANDOM_SAMPLE,
                sampling=common_pb2.SamplingRules(minimum_sample=2**63 - 1), reason="test"),
            timeout=10))
    check(exc, INVALID, "sampling.minimum_sample")
    await still_serves(live_stack, pid)


@pytest.mark.parametrize("shape", ["{}\nx", "{}/x", "   {}  ", "{}\t", "{}\u2028x"],
                         ids=["newline", "slash", "spaces", "tab", "line-separator"])
async def test_create_petition_refuses_an_id_with_control_characters_slash_or_spaces(
        live_stack: stack.StackState, shape: str) -> None:
    pid = h.new_petition_id()
    exc = await create_refused(live_stack, petition(shape.format(pid)))
    check(exc, INVALID, "petition_id")
    if shape.strip() != shape:
        assert "begins or ends with white space" in (exc.details() or "")
    else:
        assert "printable characters other than '/'" in (exc.details() or "")
    await not_created(live_stack, pid)
    await not_created(live_stack, shape.format(pid))
    # Spaces and punctuation inside an id are fine.
    good = f"Prop {pid} (2026), v.2"
    await h.create_petition(live_stack, good)
    await still_serves(live_stack, good)


@pytest.mark.parametrize(("field", "value"), [
    ("deadline", "0001-01-01"), ("deadline", "1900-01-01"), ("deadline", "9999-12-31"),
    ("filing_closes_at", "1900-01-01"), ("filing_closes_at", "0001-01-01T00:00:00"),
    ("filing_closes_at", "9999-12-31T23:00:00-05:00"),
])
async def test_create_petition_refuses_a_date_out_of_range(live_stack: stack.StackState,
                                                           field: str, value: str) -> None:
    pid = h.new_petition_id()
    exc = await create_refused(live_stack, petition(pid, **{field: value}))
    check(exc, INVALID, field, value, "2000-01-01")
    await not_created(live_stack, pid)
    await h.create_petition(live_stack, pid)
    await still_serves(live_stack, pid)


@pytest.mark.parametrize(("value", "words"), [
    (LONG, ("expires_at", "20,000 characters")), ("a\x00b", ("expires_at", "NUL")),
    ("tomorrow", ("expires_at", "'tomorrow'", "ISO date")),
], ids=["20k", "nul", "words"])
async def test_create_token_refuses_a_bad_expires_at_naming_it(
        live_stack: stack.StackState, value: str, words: tuple[str, ...]) -> None:
    async with h.channel(live_stack, "intake") as ch:
        stub = access_pb2_grpc.AccessServiceStub(ch)
        make: Callable[[], Awaitable[Any]] = lambda: stub.CreateToken(  # noqa: E731
            access_pb2.CreateTokenRequest(role=access_pb2.ROLE_OPS, label="t", expires_at=value),
            timeout=10)
        check(await refusal(make), INVALID, *words)
        ok = await stub.CreateToken(access_pb2.CreateTokenRequest(
            role=access_pb2.ROLE_OPS, label="t", expires_in_seconds=60), timeout=10)
        assert ok.token
