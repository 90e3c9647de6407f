"""The Kafka topics, each declared with its protobuf message type, what makes a message of it
valid, and which consumer groups read it.

A record is set aside (dead-lettered with the reason, never handed to a handler) when its
value cannot be decoded as the topic's message (``decode`` raises ValueError) or when the
decoded message is not one a handler can apply (``problem`` names the first fault): an id
that must be a UUID and is not, a required text that is empty, a date that is not ISO, an
enum value this code does not know (in any field, nested ones too), an enum left
UNSPECIFIED where a value is required, or a topic's own rule across fields. Reasons name
fields, never their contents.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from sigverify.events.v1 import events_pb2
from sigverify_common.convert import reason_from_pb, status_from_pb
from sigverify_common.vocab import status_for

M = TypeVar("M", bound=Message)


def _get(message: Message, path: str) -> Any:
    value: Any = message
    for part in path.split("."):
        value = getattr(value, part)
    return value


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _is_uuid(text: str) -> bool:
    """A UUID in its canonical text (lower-case hex, hyphens): consumers compare ids as text.
    (``str(uuid.UUID(text)) == text``, which took a tenth of a consumer's time per record.)"""
    return _CANONICAL_UUID.fullmatch(text) is not None


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


#: Per message type, the fields that can hold an enum (one, a repeated one, a map's values,
#: or one in a nested message): (name, kind, the enum's numbers or the nested type).
_ENUM_FIELDS: dict[Any, tuple[tuple[str, str, Any], ...]] = {}


def _holds_enums(d: Any, seen: frozenset[str] = frozenset()) -> bool:
    """Whether a message of type ``d`` can hold an enum anywhere (a type that holds itself,
    as Struct does through Value, is looked at once)."""
    if d.full_name in seen:
        return False
    seen = seen | {d.full_name}
    for fd in d.fields:
        if fd.enum_type is not None:
            return True
        t = fd.message_type
        if t is None:
            continue
        if t.GetOptions().map_entry:
            value = t.fields_by_name["value"]
            if value.enum_type is not None:
                return True
            t = value.message_type
            if t is None:
                continue
        if _holds_enums(t, seen):
            return True
    return False


def _enum_fields(d: Any) -> tuple[tuple[str, str, Any], ...]:
    got = _ENUM_FIELDS.get(d)
    if got is not None:
        return got
    out: list[tuple[str, str, Any]] = []
    for fd in d.fields:
        if fd.enum_type is not None:
            out.append((fd.name, "enums" if fd.is_repeated else "enum",
                        frozenset(fd.enum_type.values_by_number)))
        elif fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                entry = fd.message_type.fields_by_name["value"]
                if entry.enum_type is not None:
                    out.append((fd.name, "enum map", frozenset(entry.enum_type.values_by_number)))
                elif entry.message_type is not None and _holds_enums(entry.message_type):
                    out.append((fd.name, "message map", entry.message_type))
            elif _holds_enums(fd.message_type):
                out.append((fd.name, "messages" if fd.is_repeated else "message", fd.message_type))
    _ENUM_FIELDS[d] = got = tuple(out)
    return got


def unknown_enums(message: Message, prefix: str = "") -> Iterator[str]:
    """Paths of the enum fields (nested and repeated ones too) holding a number the enum does
    not define (proto3 keeps unknown numbers: a newer producer, or garbage). Each message
    type's enum fields are listed once; a record then costs a few attribute reads."""
    for name, kind, what in _enum_fields(message.DESCRIPTOR):
        value = getattr(message, name)
        path = f"{prefix}{name}"
        if kind == "enum":
            if value not in what:
                yield path
        elif kind == "enums":
            if any(v not in what for v in value):
                yield path
        elif kind == "enum map":
            if any(v not in what for v in value.values()):
                yield path
        elif kind == "message":
            if message.HasField(name):
                yield from unknown_enums(value, f"{path}.")
        else:
            for item in (value.values() if kind == "message map" else value):
                yield from unknown_enums(item, f"{path}.")


@dataclass(frozen=True)
class Topic(Generic[M]):
    name: str
    message_type: type[M]
    #: Consumer groups (one per service) that read the topic: the reconciler re-drives a
    #: topic's lost events only when these have caught up with it.
    consumers: tuple[str, ...] = ()
    #: Fields that must hold a UUID (canonical text).
    uuids: tuple[str, ...] = ()
    #: Text fields that must not be empty.
    required: tuple[str, ...] = ()
    #: Text fields that hold an ISO date or nothing (dotted paths reach nested messages).
    dates: tuple[str, ...] = ()
    #: Enum fields that must not be left at their zero (UNSPECIFIED) value.
    specified: tuple[str, ...] = ()
    #: A further check across fields: the fault, or None.
    rule: Callable[[M], str | None] | None = None

    def encode(self, message: M) -> bytes:
        return message.SerializeToString()

    def decode(self, value: bytes | None) -> M:
        """Decode a record value; raises ValueError when it is not this topic's message."""
        if value is None:
            raise ValueError("record has no value")
        if not value:
            raise ValueError("record value is empty")
        message = self.message_type()
        try:
            message.ParseFromString(value)
        except Exception as exc:  # protobuf raises DecodeError and friends
            raise ValueError(f"undecodable {self.message_type.__name__}: "
                             f"{exc.__class__.__name__}") from exc
        return message

    def problem(self, message: M) -> str | None:
        """Why a decoded message cannot be applied (its first fault), or None when it can."""
        kind = self.message_type.__name__
        for path in self.uuids:
            if not _is_uuid(_get(message, path)):
                return f"invalid {kind}: {path} is not a UUID"
        for path in self.required:
            if not _get(message, path):
                return f"invalid {kind}: {path} is empty"
        for path in self.dates:
            text = _get(message, path)
            if text and not _is_date(text):
                return f"invalid {kind}: {path} is not an ISO date"
        for path in unknown_enums(message):
            return f"invalid {kind}: {path} has a value this version does not know"
        for path in self.specified:
            if _get(message, path) == 0:
                return f"invalid {kind}: {path} is unspecified"
        if self.rule is not None and (fault := self.rule(message)) is not None:
            return f"invalid {kind}: {fault}"
        return None


def _status_fits_reason(m: events_pb2.SignatureVerified) -> str | None:
    # Runs after the enum checks: both numbers are known and specified.
    status, reason = status_from_pb(m.status), reason_from_pb(m.reason)
    if status is not status_for(reason):
        return f"status {status.value} does not go with reason {reason.value}"
    return None


_IDS = ("signature_id", "batch_id")
_TEXTS = ("petition_id", "county")

SIGNATURE_RECEIVED = Topic(
    "sigverify.intake.signature-received.v1", events_pb2.SignatureReceived,
    consumers=("matching",), uuids=_IDS, required=_TEXTS,
    dates=("signed_on",))
SIGNATURE_MATCHED = Topic(
    "sigverify.matching.signature-matched.v1", events_pb2.SignatureMatched,
    consumers=("dedupe",), uuids=_IDS, required=_TEXTS, dates=("signed_on",),
    specified=("decision", "reason"))
SIGNATURE_VERIFIED = Topic(
    "sigverify.dedupe.signature-verified.v1", events_pb2.SignatureVerified,
    consumers=("tally",), uuids=_IDS, required=_TEXTS, specified=("status", "reason"),
    rule=_status_fits_reason)

ALL_TOPICS: tuple[Topic[events_pb2.SignatureReceived] | Topic[events_pb2.SignatureMatched]
                  | Topic[events_pb2.SignatureVerified], ...] = (
    SIGNATURE_RECEIVED,
    SIGNATURE_MATCHED,
    SIGNATURE_VERIFIED,
)


def consumers_of(topic_name: str) -> tuple[str, ...]:
    """The consumer groups that read ``topic_name`` (none for a topic not declared here)."""
    return next((t.consumers for t in ALL_TOPICS if t.name == topic_name), ())
