"""Who may call what: roles, bearer tokens and the per-RPC policy. Pure (no I/O, no grpc).

Every RPC except health and reflection carries metadata ``authorization: Bearer <token>``.
A token has one role; a clerk's token also has one county. ``admin`` may call everything;
the other roles only what ``POLICY`` lists for them; an RPC not listed is for admins only
(deny by default). A clerk is further limited to their county's batches: the interceptor
cannot see a client stream's header, so intake checks that with ``county_refusal``.

Only the SHA-256 of a token is stored; the token itself is shown once, when created.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from sigverify_common.vocab import canonical_county

TOKEN_PREFIX = "sv_"  # noqa: S105 - a prefix, not a secret


class Role(StrEnum):
    CLERK = "clerk"
    REVIEWER = "reviewer"
    OPS = "ops"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller, as its token says."""

    token_id: str
    role: Role
    county: str = ""  # clerks only, canonical spelling


INTAKE = "sigverify.intake.v1.IntakeService"
MATCHING = "sigverify.matching.v1.MatchingService"
TALLY = "sigverify.tally.v1.TallyService"
REVIEW = "sigverify.review.v1.ReviewService"
ACCESS = "sigverify.access.v1.AccessService"

#: Services any caller may use without a token: probes and tooling have none.
OPEN_SERVICES = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})

_C, _R, _O = Role.CLERK, Role.REVIEWER, Role.OPS

#: Full method name (or "<service>/*" for every method of a service) -> the roles other than
#: admin that may call it.
POLICY: dict[str, frozenset[Role]] = {
    f"/{INTAKE}/SubmitBatch": frozenset({_C}),
    f"/{INTAKE}/GetBatch": frozenset({_C, _O}),
    f"/{INTAKE}/GetPetition": frozenset({_C, _O, _R}),
    f"/{INTAKE}/CloseCounty": frozenset({_C}),
    f"/{INTAKE}/ListCounties": frozenset({_C, _O, _R}),
    f"/{INTAKE}/ListSample": frozenset({_C, _O, _R}),
    f"/{TALLY}/GetTally": frozenset({_O, _R}),
    f"/{TALLY}/WatchTally": frozenset({_O}),
    f"/{TALLY}/ListResults": frozenset({_O}),
    f"/{TALLY}/GetResult": frozenset({_O, _R}),
    f"/{TALLY}/CheckInvariants": frozenset({_O}),
    f"/{MATCHING}/ExplainSignature": frozenset({_R}),
    f"/{MATCHING}/MatchSignature": frozenset({_R}),
    f"/{REVIEW}/*": frozenset({_R}),
}

#: RPCs a clerk may call only for their own county (checked by the servicer, which sees the
#: request's county or the batch's).
COUNTY_SCOPED = frozenset({f"/{INTAKE}/SubmitBatch", f"/{INTAKE}/GetBatch",
                           f"/{INTAKE}/CloseCounty"})


def service_of(method: str) -> str:
    """``/pkg.Service/Method`` -> ``pkg.Service``."""
    return method.lstrip("/").split("/", 1)[0]


def is_open(method: str) -> bool:
    return service_of(method) in OPEN_SERVICES


def allowed_roles(method: str) -> frozenset[Role]:
    listed = POLICY.get(method) or POLICY.get(f"/{service_of(method)}/*") or frozenset()
    return listed | {Role.ADMIN}


def permits(method: str, role: Role) -> bool:
    return is_open(method) or role in allowed_roles(method)


def county_refusal(identity: Identity | None, county: str, what: str) -> str | None:
    """Why ``identity`` may not act on ``county``'s data, or None when it may.

    No identity means the server runs without the auth interceptor (a test server).
    """
    if identity is None or identity.role is not Role.CLERK:
        return None
    if canonical_county(county) == identity.county:
        return None
    return f"a {identity.county} clerk's token may not {what} {canonical_county(county) or '(no county)'}"


def check_grant(role: Role, county: str) -> str:
    """The canonical county a new token of ``role`` is bound to; ValueError when it does not fit."""
    c = canonical_county(county)
    if role is Role.CLERK and not c:
        raise ValueError("a clerk token needs a county")
    if role is not Role.CLERK and c:
        raise ValueError(f"a {role.value} token takes no county")
    return c


def new_token() -> str:
    """A fresh secret bearer token: recognisable prefix, 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_token_id() -> str:
    return "tk_" + secrets.token_hex(6)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The token of an ``authorization: Bearer <token>`` metadata entry, if any."""
    for key, value in metadata:
        if key.lower() != "authorization":
            continue
        text = value.decode() if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None
