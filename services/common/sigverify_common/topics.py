"""The Kafka topics, each declared with its protobuf message type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message

from sigverify.events.v1 import events_pb2

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Topic(Generic[M]):
    name: str
    message_type: type[M]

    def encode(self, message: M) -> bytes:
        return message.SerializeToString()

    def decode(self, value: bytes | None) -> M:
        """Decode a record value; raises ValueError when it is not this topic's message."""
        if value is None:
            raise ValueError("record has no value")
        message = self.message_type()
        try:
            message.ParseFromString(value)
        except Exception as exc:  # protobuf raises DecodeError and friends
            raise ValueError(f"undecodable {self.message_type.__name__}: {exc}") from exc
        return message


SIGNATURE_RECEIVED = Topic("sigverify.intake.signature-received.v1", events_pb2.SignatureReceived)
SIGNATURE_MATCHED = Topic("sigverify.matching.signature-matched.v1", events_pb2.SignatureMatched)
SIGNATURE_VERIFIED = Topic("sigverify.dedupe.signature-verified.v1", events_pb2.SignatureVerified)

ALL_TOPICS: tuple[Topic[events_pb2.SignatureReceived] | Topic[events_pb2.SignatureMatched]
                  | Topic[events_pb2.SignatureVerified], ...] = (
    SIGNATURE_RECEIVED,
    SIGNATURE_MATCHED,
    SIGNATURE_VERIFIED,
)
