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
"""

from __future__ import annotations

from typing import ClassVar


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
