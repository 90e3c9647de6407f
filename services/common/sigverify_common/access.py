"""Who may call what: roles, bearer tokens and the per-RPC policy. Pure (no I/O, no grpc).

Every RPC except health and reflection carries metadata ``authorization: Bearer <token>``.
A token has one role; a clerk's token also has one county. ``admin`` may call everything;
the other roles only what ``POLICY`` lists for them; an RPC not listed is for admins only
(deny by default). A clerk is further limited to their county's batches: the interceptor
cannot see a client stream's header, so intake checks that with ``county_refusal``.

Only the SHA-256 of a token is stored; the token itself is shown once, when created.

Every token expires unless it is an admin token explicitly made to never expire:
``DEFAULT_LIFETIME`` is each role's lifetime when its creator names none, and tokens of
roles other than admin live at most ``MAX_LIFETIME``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Literal

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
#: Admins only, said explicitly (an entry for the method wins over its service's "/*").
ADMIN_ONLY: frozenset[Role] = frozenset()

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
    # The match model: what a decision weighed (reviewers, ops); learning one (admins).
    f"/{MATCHING}/GetModel": frozenset({_R, _O}),
    f"/{MATCHING}/TrainModel": ADMIN_ONLY,
    # The voter roll's lifecycle: loading, listing and switching versions.
    f"/{MATCHING}/LoadRoll": ADMIN_ONLY,
    f"/{MATCHING}/ListRolls": ADMIN_ONLY,
    f"/{MATCHING}/ActivateRoll": ADMIN_ONLY,
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
    listed = (POLICY[method] if method in POLICY
              else POLICY.get(f"/{service_of(method)}/*", ADMIN_ONLY))
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


#: A new token's lifetime when its creator names none. Clerks are many, spread over 58
#: county offices and change with staff: a quarter. Reviewers are people too: a quarter.
#: Ops tokens mostly sit in a job's or a dashboard's secret and only read: half a year.
#: Admin tokens can do everything, and an admin can always make another one (and
#: ``sigverify token bootstrap`` can from the database): a month.
DEFAULT_LIFETIME: dict[Role, timedelta] = {
    Role.CLERK: timedelta(days=90),
    Role.REVIEWER: timedelta(days=90),
    Role.OPS: timedelta(days=180),
    Role.ADMIN: timedelta(days=30),
}
#: The longest life a token other than an admin's may be given.
MAX_LIFETIME = timedelta(days=366)

NEVER: Literal["never"] = "never"
#: What a token's creator asks for: a lifetime, an instant, or never (admin tokens only).
ExpirySpec = timedelta | datetime | Literal["never"]

_DURATION = re.compile(r"(\d+)([wdhms])")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_instant(text: str) -> datetime:
    """An ISO timestamp (UTC when it has no offset) or an ISO date, meaning the end of that
    day in UTC; ValueError otherwise."""
    t = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", t):
            day = date.fromisoformat(t)
            return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)
        at = datetime.fromisoformat(t)
    except (ValueError, OverflowError):
        raise ValueError(f"{text!r} is not an ISO date or timestamp") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def parse_expiry(text: str) -> ExpirySpec:
    """``--expires``: a lifetime (``90d``, ``12h``, ``2w``, ``1d12h``; units w d h m s), an
    ISO date (the end of that day, UTC) or timestamp, or ``never``; ValueError otherwise."""
    t = text.strip().lower()
    if t == NEVER:
        return NEVER
    if t and _DURATION.sub("", t) == "":
        total = timedelta()
        try:
            for amount, unit in _DURATION.findall(t):
                total += timedelta(**{_UNITS[unit]: int(amount)})
        except OverflowError:
            raise ValueError(f"--expires {text!r} is too long") from None
        return total
    try:
        return parse_instant(text)
    except ValueError:
        raise ValueError(f"--expires {text!r}: give a lifetime such as 90d, 12h or 30m, an ISO "
                         "date or timestamp, or never (admin tokens only)") from None


def _a(role: Role) -> str:
    return f"{'an' if role.value[0] in 'aeiou' else 'a'} {role.value}"


def expiry_for(role: Role, spec: ExpirySpec | None, now: datetime) -> datetime | None:
    """When a new ``role`` token made at ``now`` expires (None: never); ValueError when
    ``spec`` is not allowed for the role or not in the future."""
    if spec is None:
        return now + DEFAULT_LIFETIME[role]
    if spec == NEVER:
        if role is not Role.ADMIN:
            raise ValueError(f"{_a(role)} token must expire: only admin tokens may be made "
                             "to never expire")
        return None
    try:
        at = now + spec if isinstance(spec, timedelta) else spec
    except OverflowError:
        raise ValueError("the expiry is too far in the future") from None
    assert isinstance(at, datetime)
    if at <= now:
        shown = at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        raise ValueError(f"the expiry {shown} is not in the future")
    if role is not Role.ADMIN and at - now > MAX_LIFETIME:
        raise ValueError(f"{_a(role)} token may live at most {MAX_LIFETIME.days} days")
    return at


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
