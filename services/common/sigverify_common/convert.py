"""Mapping between the shared vocabulary and the protobuf enums (used at the edges only)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sigverify.common.v1 import common_pb2
from sigverify_common.errors import InvalidArgument
from sigverify_common.fields import MAX_ID_CHARS, check_text, shown
from sigverify_common.sampling import CALIFORNIA, Method, SamplingRules, parse_percent
from sigverify_common.vocab import Decision, DuplicatePolicy, Reason, Source, Status


def _name(enum: Any, value: int, prefix: str) -> str:
    """The enum value's name without its prefix (ValueError for an unknown number)."""
    return str(enum.Name(value)).removeprefix(prefix)


class _Table:
    """Both ways between a protobuf enum and a domain enum, made once from the protobuf
    enum's names (the per-record lookups by name, ``Name`` then ``Enum(text)``, were a tenth
    of the dedupe and tally consumers' time). Unknown numbers and values raise ValueError,
    as those lookups did."""

    def __init__(self, enum: Any, prefix: str, domain: Any, spell: Any = str) -> None:
        self._enum = enum
        self._from: dict[int, Any] = {}
        self._to: dict[Any, int] = {}
        for name, number in enum.items():
            try:
                value = domain(spell(name.removeprefix(prefix)))
            except ValueError:
                continue  # UNSPECIFIED, or a number this domain has no value for
            self._from[number] = value
            self._to[value] = number

    def from_pb(self, number: int) -> Any:
        try:
            return self._from[number]
        except KeyError:
            raise ValueError(f"{self._enum.DESCRIPTOR.name} has no value {number!r} "
                             "this version knows") from None

    def to_pb(self, value: Any) -> Any:
        try:
            return self._to[value]
        except KeyError:
            raise ValueError(f"{value!r} has no {self._enum.DESCRIPTOR.name} value") from None


_REASONS = _Table(common_pb2.Reason, "REASON_", Reason)
_STATUSES = _Table(common_pb2.SignatureStatus, "SIGNATURE_STATUS_", Status)
_DECISIONS = _Table(common_pb2.MatchDecision, "MATCH_DECISION_", Decision)
_SOURCES = _Table(common_pb2.SignatureSource, "SIGNATURE_SOURCE_", Source, str.lower)


def reason_to_pb(reason: Reason) -> common_pb2.Reason.ValueType:
    return _REASONS.to_pb(reason)  # type: ignore[no-any-return]


def reason_from_pb(value: int) -> Reason:
    return _REASONS.from_pb(value)  # type: ignore[no-any-return]


def status_to_pb(status: Status) -> common_pb2.SignatureStatus.ValueType:
    return _STATUSES.to_pb(status)  # type: ignore[no-any-return]


def status_from_pb(value: int) -> Status:
    return _STATUSES.from_pb(value)  # type: ignore[no-any-return]


def decision_to_pb(decision: Decision) -> common_pb2.MatchDecision.ValueType:
    return _DECISIONS.to_pb(decision)  # type: ignore[no-any-return]


def decision_from_pb(value: int) -> Decision:
    return _DECISIONS.from_pb(value)  # type: ignore[no-any-return]


def source_to_pb(source: Source) -> common_pb2.SignatureSource.ValueType:
    return _SOURCES.to_pb(source)  # type: ignore[no-any-return]


def source_from_pb(value: int) -> Source:
    if value == common_pb2.SIGNATURE_SOURCE_UNSPECIFIED:
        return Source.PAPER
    return _SOURCES.from_pb(value)  # type: ignore[no-any-return]


def parse_uuid(text: str, what: str = "signature_id") -> uuid.UUID:
    """A request's UUID argument: its length and NULs checked first (``fields.check_text``),
    InvalidArgument naming ``what`` with the value quoted short."""
    text = check_text(text, what, MAX_ID_CHARS)
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidArgument(f"{what} {shown(text)} is not a UUID") from None


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
