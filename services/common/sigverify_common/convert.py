"""Mapping between the shared vocabulary and the protobuf enums (used at the edges only)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sigverify.common.v1 import common_pb2
from sigverify_common.errors import InvalidArgument
from sigverify_common.sampling import CALIFORNIA, Method, SamplingRules, parse_percent
from sigverify_common.vocab import Decision, DuplicatePolicy, Reason, Source, Status


def _name(enum: Any, value: int, prefix: str) -> str:
    """The enum value's name without its prefix (ValueError for an unknown number)."""
    return str(enum.Name(value)).removeprefix(prefix)


def reason_to_pb(reason: Reason) -> common_pb2.Reason.ValueType:
    return common_pb2.Reason.Value(f"REASON_{reason.value}")


def reason_from_pb(value: int) -> Reason:
    name = _name(common_pb2.Reason, value, "REASON_")
    return Reason(name)


def status_to_pb(status: Status) -> common_pb2.SignatureStatus.ValueType:
    return common_pb2.SignatureStatus.Value(f"SIGNATURE_STATUS_{status.value}")


def status_from_pb(value: int) -> Status:
    return Status(_name(common_pb2.SignatureStatus, value, "SIGNATURE_STATUS_"))


def decision_to_pb(decision: Decision) -> common_pb2.MatchDecision.ValueType:
    return common_pb2.MatchDecision.Value(f"MATCH_DECISION_{decision.value}")


def decision_from_pb(value: int) -> Decision:
    return Decision(_name(common_pb2.MatchDecision, value, "MATCH_DECISION_"))


def source_to_pb(source: Source) -> common_pb2.SignatureSource.ValueType:
    return common_pb2.SignatureSource.Value(f"SIGNATURE_SOURCE_{source.value.upper()}")


def source_from_pb(value: int) -> Source:
    if value == common_pb2.SIGNATURE_SOURCE_UNSPECIFIED:
        return Source.PAPER
    return Source(_name(common_pb2.SignatureSource, value, "SIGNATURE_SOURCE_").lower())


def parse_uuid(text: str, what: str = "signature_id") -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidArgument(f"{what} {text!r} is not a UUID") from None


def policy_to_pb(policy: DuplicatePolicy) -> common_pb2.DuplicatePolicy.ValueType:
    return common_pb2.DuplicatePolicy.Value(
        "DUPLICATE_POLICY_" + policy.name)


def policy_from_pb(value: int) -> DuplicatePolicy:
    if value == common_pb2.DUPLICATE_POLICY_UNSPECIFIED:
        return DuplicatePolicy.KEEP_FIRST
    return DuplicatePolicy[_name(common_pb2.DuplicatePolicy, value, "DUPLICATE_POLICY_")]


def date_text(d: date | None) -> str:
    return d.isoformat() if d else ""


def parse_date_text(text: str) -> date | None:
    return date.fromisoformat(text) if text else None


def method_to_pb(method: Method) -> common_pb2.VerificationMethod.ValueType:
    return common_pb2.VerificationMethod.Value("VERIFICATION_METHOD_" + method.name)


def method_from_pb(value: int) -> Method:
    if value == common_pb2.VERIFICATION_METHOD_UNSPECIFIED:
        return Method.FULL_COUNT
    return Method[_name(common_pb2.VerificationMethod, value, "VERIFICATION_METHOD_")]


def rules_to_pb(rules: SamplingRules) -> common_pb2.SamplingRules:
    return common_pb2.SamplingRules(
        minimum_sample=rules.minimum, sample_percent=str(rules.percent),
        fail_below_percent=str(rules.fail_below), qualify_above_percent=str(rules.qualify_above))


def rules_from_pb(pb: common_pb2.SamplingRules) -> SamplingRules:
    """Zero fields take California's values; InvalidArgument names a bad field."""
    try:
        return SamplingRules(
            minimum=pb.minimum_sample or CALIFORNIA.minimum,
            percent=parse_percent(pb.sample_percent, CALIFORNIA.percent, "sampling.sample_percent"),
            fail_below=parse_percent(pb.fail_below_percent, CALIFORNIA.fail_below,
                                     "sampling.fail_below_percent"),
            qualify_above=parse_percent(pb.qualify_above_percent, CALIFORNIA.qualify_above,
                                        "sampling.qualify_above_percent"),
        ).check()
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
