"""One error tree for SigVerify, with policy on the class.

    SigVerifyError              base; INTERNAL, not retriable
    ├── ConfigError             bad or missing configuration (raised at start, never over RPC)
    ├── InvalidArgument         the caller's request is malformed           INVALID_ARGUMENT
    ├── NotFound                the named entity does not exist             NOT_FOUND
    ├── AlreadyExists           creating something that exists differently  ALREADY_EXISTS
    ├── FailedPrecondition      the system is not in a state to do this     FAILED_PRECONDITION
    ├── Unauthenticated         no valid bearer token                       UNAUTHENTICATED
    ├── PermissionDenied        the token's role or county does not allow it PERMISSION_DENIED
    └── Unavailable             a dependency (Postgres, Kafka) is down      UNAVAILABLE, retriable

Each class declares its gRPC status code by name (so this module imports no grpc) and
whether a client may retry. ``sigverify_common.grpc_server`` maps them to statuses in one
interceptor.

Exceptions from outside the tree are classified by ``is_transient``: the database or the
broker being unreachable, restarting or overloaded (Postgres connection errors, SQLSTATE
classes 08 and 53, 57P01/57P02/57P03/57P05, serialization failures and deadlocks, lock
timeouts; asyncpg interface errors; OSError, timeouts; retriable Kafka errors). The same
work may succeed later: consumers retry it, the interceptor answers UNAVAILABLE.
"""

from __future__ import annotations

from typing import ClassVar

import asyncpg
from aiokafka import errors as kafka_errors


class SigVerifyError(Exception):
    grpc_status: ClassVar[str] = "INTERNAL"
    retriable: ClassVar[bool] = False


class ConfigError(SigVerifyError):
    pass


class InvalidArgument(SigVerifyError):
    grpc_status = "INVALID_ARGUMENT"


class NotFound(SigVerifyError):
    grpc_status = "NOT_FOUND"


class AlreadyExists(SigVerifyError):
    grpc_status = "ALREADY_EXISTS"


class FailedPrecondition(SigVerifyError):
    grpc_status = "FAILED_PRECONDITION"


class Unauthenticated(SigVerifyError):
    grpc_status = "UNAUTHENTICATED"


class PermissionDenied(SigVerifyError):
    grpc_status = "PERMISSION_DENIED"


class Unavailable(SigVerifyError):
    grpc_status = "UNAVAILABLE"
    retriable = True


#: SQLSTATEs after which the same statement may succeed later: admin shutdown, crash
#: shutdown, cannot connect now (recovery), idle session timeout; serialization failure,
#: deadlock; lock not available. Whole classes: 08 (connection), 53 (insufficient resources).
TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P05", "40001", "40P01", "55P03"})
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "53"})

#: Kafka errors aiokafka does not mark retriable that still mean "the broker, not the
#: request": timeouts and lost connections.
TRANSIENT_KAFKA = (kafka_errors.KafkaTimeoutError, kafka_errors.KafkaConnectionError,
                   kafka_errors.RequestTimedOutError, kafka_errors.NodeNotReadyError)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` means a dependency is down or busy: the same work may succeed later."""
    if isinstance(exc, SigVerifyError):
        return exc.retriable
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return (isinstance(exc, asyncpg.PostgresConnectionError) or state in TRANSIENT_SQLSTATES
                or state[:2] in TRANSIENT_SQLSTATE_CLASSES)
    if isinstance(exc, kafka_errors.KafkaError):
        return bool(getattr(exc, "retriable", False)) or isinstance(exc, TRANSIENT_KAFKA)
    return isinstance(exc, asyncpg.InterfaceError | OSError | TimeoutError)


def is_outage(exc: BaseException) -> bool:
    """True when an RPC failed because Postgres or the broker is unreachable or failing:
    transient errors and every Kafka error (the client should retry: UNAVAILABLE)."""
    return is_transient(exc) or isinstance(exc, kafka_errors.KafkaError)
