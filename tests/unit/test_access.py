"""Roles, the per-RPC policy, tokens and the audit hash chain: the pure parts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sigverify_cli.credentials import resolve_token
from sigverify_cli.main import parser
from sigverify_common import access, audit
from sigverify_common.access import Identity, Role
from sigverify_common.config import ServiceConfig
from sigverify_common.errors import ConfigError

INTAKE, TALLY, MATCHING = access.INTAKE, access.TALLY, access.MATCHING


def m(service: str, method: str) -> str:
    return f"/{service}/{method}"


@pytest.mark.parametrize(("method", "roles"), [
    (m(INTAKE, "SubmitBatch"), {Role.CLERK, Role.ADMIN}),
    (m(INTAKE, "GetBatch"), {Role.CLERK, Role.OPS, Role.ADMIN}),
    (m(INTAKE, "GetPetition"), {Role.CLERK, Role.OPS, Role.REVIEWER, Role.ADMIN}),
    (m(INTAKE, "CreatePetition"), {Role.ADMIN}),
    (m(TALLY, "GetTally"), {Role.OPS, Role.REVIEWER, Role.ADMIN}),
    (m(TALLY, "WatchTally"), {Role.OPS, Role.ADMIN}),
    (m(TALLY, "ListResults"), {Role.OPS, Role.ADMIN}),
    (m(TALLY, "GetResult"), {Role.OPS, Role.REVIEWER, Role.ADMIN}),
    (m(MATCHING, "ExplainSignature"), {Role.REVIEWER, Role.ADMIN}),
    (m(MATCHING, "MatchSignature"), {Role.REVIEWER, Role.ADMIN}),
    (m(access.REVIEW, "ResolveItem"), {Role.REVIEWER, Role.ADMIN}),
    (m(access.ACCESS, "CreateToken"), {Role.ADMIN}),
    (m("sigverify.future.v1.NewService", "DoThing"), {Role.ADMIN}),  # deny by default
])
def test_policy_table(method: str, roles: set[Role]) -> None:
    assert {r for r in Role if access.permits(method, r)} == roles


def test_health_and_reflection_are_open_to_everyone() -> None:
    for method in ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
                   "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"):
        assert access.is_open(method)
    assert not access.is_open(m(INTAKE, "GetPetition"))


def test_a_clerk_is_held_to_their_county() -> None:
    kern = Identity("tk_1", Role.CLERK, "Kern")
    assert access.county_refusal(kern, "kern", "submit a batch for") is None
    refusal = access.county_refusal(kern, "Alameda", "submit a batch for")
    assert refusal is not None and "Kern" in refusal and "Alameda" in refusal
    assert access.county_refusal(Identity("tk_2", Role.OPS), "Alameda", "read") is None
    assert access.county_refusal(None, "Alameda", "read") is None
    assert access.COUNTY_SCOPED <= {k for k, v in access.POLICY.items() if Role.CLERK in v}


def test_grants_need_a_county_for_clerks_only() -> None:
    assert access.check_grant(Role.CLERK, " los  angeles ") == "Los Angeles"
    assert access.check_grant(Role.OPS, "") == ""
    with pytest.raises(ValueError, match="needs a county"):
        access.check_grant(Role.CLERK, " ")
    with pytest.raises(ValueError, match="takes no county"):
        access.check_grant(Role.ADMIN, "Kern")


def test_tokens_are_random_prefixed_and_stored_as_sha256() -> None:
    a, b = access.new_token(), access.new_token()
    assert a != b and a.startswith("sv_") and len(a) > 40
    h = access.token_hash(a)
    assert len(h) == 64 and a not in h and h == access.token_hash(a)


def test_bearer_metadata() -> None:
    assert access.bearer([("authorization", "Bearer sv_x")]) == "sv_x"
    assert access.bearer([("x-other", "1"), ("Authorization", b"bearer  sv_y ")]) == "sv_y"
    assert access.bearer([("authorization", "Basic abc")]) is None
    assert access.bearer([("authorization", "Bearer ")]) is None
    assert access.bearer([]) is None


def _chain(n: int) -> list[audit.Entry]:
    out: list[audit.Entry] = []
    prev = audit.GENESIS
    at = datetime(2017, 5, 1, 12, 0, tzinfo=UTC)
    for i in range(1, n + 1):
        detail = {"county": "Kern", "rows": i, "ratio": 0.5, "nested": {"b": [1, 2], "a": None}}
        t = at + timedelta(seconds=i, microseconds=i)
        h = audit.entry_hash(prev, i, t, "tk_1", "batch.received", f"b{i}", detail)
        out.append(audit.Entry(i, t, "tk_1", "batch.received", f"b{i}", detail, prev, h))
        prev = h
    return out


def test_an_intact_chain_verifies() -> None:
    chain = _chain(5)
    r = audit.walk(chain)
    assert r.ok and r.entries == 5 and r.head_hash == chain[-1].hash
    assert audit.walk([]).ok
    # Pages continue where the last one ended.
    first = audit.walk(chain[:2])
    assert audit.walk(chain[2:], first.head_hash, first.entries) == r


def test_the_hash_does_not_depend_on_key_order_or_timezone() -> None:
    at = datetime(2017, 5, 1, 12, 0, tzinfo=UTC)
    pacific = at.astimezone(ZoneInfo("America/Los_Angeles"))
    assert (audit.entry_hash(audit.GENESIS, 1, at, "a", "x", "s", {"a": 1, "b": 2})
            == audit.entry_hash(audit.GENESIS, 1, pacific, "a", "x", "s", {"b": 2, "a": 1}))
    # Floats are kept as text, so they survive jsonb exactly.
    assert audit.canonical(1, at, "a", "x", "s", {"f": 1e20}).endswith('"f":"1e+20"},"id":1,'
                                                                       '"subject":"s"}')


@pytest.mark.parametrize("tamper", ["detail", "actor", "removed", "swapped", "rehashed"])
def test_tampering_is_found_at_the_first_broken_entry(tamper: str) -> None:
    chain = _chain(6)
    e = chain[2]
    if tamper == "detail":
        chain[2] = audit.Entry(e.id, e.at, e.actor, e.action, e.subject, {**e.detail, "rows": 999},
                               e.prev_hash, e.hash)
    elif tamper == "actor":
        chain[2] = audit.Entry(e.id, e.at, "tk_admin", e.action, e.subject, e.detail, e.prev_hash,
                               e.hash)
    elif tamper == "removed":
        del chain[2]
    elif tamper == "swapped":
        chain[2], chain[3] = chain[3], chain[2]
    else:  # content changed and its own hash recomputed: the next link breaks
        new_hash = audit.entry_hash(e.prev_hash, e.id, e.at, e.actor, e.action, e.subject, {})
        chain[2] = audit.Entry(e.id, e.at, e.actor, e.action, e.subject, {}, e.prev_hash, new_hash)
    r = audit.walk(chain)
    assert not r.ok and r.entries == (3 if tamper == "rehashed" else 2)
    assert r.first_broken_id == {"detail": 3, "actor": 3}.get(tamper, 4)
    assert ("altered" if tamper in ("detail", "actor") else "prev_hash") in r.problem


def test_tls_configuration_goes_together(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://x/y", "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
           "GRPC_PORT": "50051", "METRICS_PORT": "9101"}
    c = ServiceConfig.from_env(env)
    assert (c.tls_cert, c.auth_cache_seconds) == ("", 30.0)
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    with pytest.raises(ConfigError, match="GRPC_TLS_KEY"):
        ServiceConfig.from_env({**env, "GRPC_TLS_CERT": str(pem)})
    with pytest.raises(ConfigError, match="GRPC_TLS_CLIENT_CA"):
        ServiceConfig.from_env({**env, "GRPC_TLS_CLIENT_CA": str(pem)})
    with pytest.raises(ConfigError, match="no such file"):
        ServiceConfig.from_env({**env, "GRPC_TLS_CERT": str(pem), "GRPC_TLS_KEY": "/nope"})
    c = ServiceConfig.from_env({**env, "GRPC_TLS_CERT": str(pem), "GRPC_TLS_KEY": str(pem),
                                "AUTH_CACHE_SECONDS": "2"})
    assert (c.tls_key, c.auth_cache_seconds) == (str(pem), 2.0)


def test_the_cli_takes_its_token_from_the_flag_the_environment_or_the_local_stack(
        tmp_path: Path) -> None:
    for argv in (["--token", "T", "tally", "--petition", "p"],
                 ["tally", "--petition", "p", "--token", "T"],
                 ["token", "create", "--role", "ops", "--token", "T"],
                 ["submit", "a.csv", "--token", "T", "--petition", "p", "--county", "Kern"]):
        args = parser().parse_args(argv)
        assert args.token == "T", argv
    assert getattr(parser().parse_args(["tally", "--petition", "p"]), "token", None) is None
    (tmp_path / "admin-token").write_text("sv_local\n")
    assert resolve_token("sv_flag", tmp_path, {"SIGVERIFY_TOKEN": "sv_env"}) == "sv_flag"
    assert resolve_token(None, tmp_path, {"SIGVERIFY_TOKEN": "sv_env"}) == "sv_env"
    assert resolve_token(None, tmp_path, {}) == "sv_local"
    assert resolve_token(None, tmp_path / "none", {}) == ""


# -- token expiry (pure policy) -------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("30d", timedelta(days=30)),
    ("12h", timedelta(hours=12)),
    ("2w", timedelta(weeks=2)),
    ("1d12h", timedelta(days=1, hours=12)),
    ("90m", timedelta(minutes=90)),
    ("2s", timedelta(seconds=2)),
    (" 7D ", timedelta(days=7)),
    ("never", access.NEVER),
    ("2026-06-30", datetime(2026, 7, 1, tzinfo=UTC)),          # the end of that day, UTC
    ("2026-06-30T08:00:00", datetime(2026, 6, 30, 8, tzinfo=UTC)),   # no offset: UTC
    ("2026-06-30T08:00:00Z", datetime(2026, 6, 30, 8, tzinfo=UTC)),
    ("2026-06-30T08:00:00-07:00", datetime(2026, 6, 30, 15, tzinfo=UTC)),
])
def test_expires_reads_lifetimes_dates_timestamps_and_never(text: str, expected: object) -> None:
    assert access.parse_expiry(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "30", "d30", "3x", "2026-13-01", "9999-12-31",
                                  "99999999999999999999999d"])
def test_expires_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match=r"--expires|ISO"):
        access.parse_expiry(text)


def test_each_role_gets_a_bounded_default_lifetime() -> None:
    assert access.expiry_for(Role.CLERK, None, NOW) == NOW + timedelta(days=90)
    assert access.expiry_for(Role.REVIEWER, None, NOW) == NOW + timedelta(days=90)
    assert access.expiry_for(Role.OPS, None, NOW) == NOW + timedelta(days=180)
    assert access.expiry_for(Role.ADMIN, None, NOW) == NOW + timedelta(days=30)
    assert all(access.DEFAULT_LIFETIME[r] <= access.MAX_LIFETIME for r in Role)


def test_only_admin_tokens_may_never_expire_or_live_longer_than_a_year() -> None:
    assert access.expiry_for(Role.ADMIN, access.NEVER, NOW) is None
    assert access.expiry_for(Role.ADMIN, timedelta(days=1000), NOW) == NOW + timedelta(days=1000)
    for role in (Role.CLERK, Role.REVIEWER, Role.OPS):
        with pytest.raises(ValueError, match="only admin tokens may be made to never expire"):
            access.expiry_for(role, access.NEVER, NOW)
        with pytest.raises(ValueError, match="at most 366 days"):
            access.expiry_for(role, timedelta(days=367), NOW)
        assert access.expiry_for(role, timedelta(days=366), NOW) == NOW + timedelta(days=366)
    with pytest.raises(ValueError, match="not in the future"):
        access.expiry_for(Role.CLERK, NOW - timedelta(seconds=1), NOW)
    with pytest.raises(ValueError, match="not in the future"):
        access.expiry_for(Role.ADMIN, timedelta(0), NOW)


def test_bind_host_defaults_to_every_interface_and_must_be_an_address() -> None:
    base = {"DATABASE_URL": "postgresql://x/y", "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
            "GRPC_PORT": "1", "METRICS_PORT": "2"}
    assert ServiceConfig.from_env(base).bind_host == "0.0.0.0"
    assert ServiceConfig.from_env({**base, "BIND_HOST": "127.0.0.1"}).bind_host == "127.0.0.1"
    assert ServiceConfig.from_env({**base, "BIND_HOST": "[::1]"}).bind_host == "::1"
    with pytest.raises(ConfigError, match="BIND_HOST must be an IP address"):
        ServiceConfig.from_env({**base, "BIND_HOST": "everywhere"})
    assert ServiceConfig.from_env(base).refusal_audit_seconds == 60.0
    with pytest.raises(ConfigError, match="REFUSAL_AUDIT_SECONDS must be greater than 0"):
        ServiceConfig.from_env({**base, "REFUSAL_AUDIT_SECONDS": "0"})


def test_token_create_takes_expires() -> None:
    args = parser().parse_args(["token", "create", "--role", "clerk", "--county", "Kern",
                                "--expires", "30d"])
    assert args.expires == "30d"
    assert parser().parse_args(["token", "bootstrap", "--expires", "never"]).expires == "never"


def test_refusals_are_counted_per_caller_rpc_and_reason_in_bounded_memory() -> None:
    from typing import cast

    import asyncpg

    from sigverify_common import auth

    log = auth.RefusalLog(cast(asyncpg.Pool, None), "intake")
    for i in range(300):
        log.note("anonymous", "/x.S/A", "no bearer token", f"ipv4:10.0.0.{i % 20}:{40000 + i}",
                 "UNAUTHENTICATED", "no_token")
    assert log.pending == 300
    (key, tally), = log._pending.items()
    assert key == ("anonymous", "/x.S/A", "no bearer token") and tally.count == 300
    assert len(tally.peers) == auth.MAX_PEERS and set(tally.peers.values()) == {15}
    assert tally.other_peer_calls == 300 - 15 * auth.MAX_PEERS
    assert tally.first_at <= tally.last_at

    many = auth.RefusalLog(cast(asyncpg.Pool, None), "intake")
    for i in range(3 * auth.MAX_KEYS):
        many.note(f"tk_{i:012x}", "/x.S/A", "role ops may not call A", "ipv6:[::1]:1",
                  "PERMISSION_DENIED", "role")
    assert many.pending == 3 * auth.MAX_KEYS
    assert len(many._pending) == auth.MAX_KEYS + 1
    assert many._pending[(auth.SEVERAL, "/x.S/A", "role ops may not call A")].count == \
        2 * auth.MAX_KEYS
    assert many._pending[("tk_000000000000", "/x.S/A", "role ops may not call A")].peers == \
        {"ipv6:[::1]": 1}
