"""Tokens, roles, TLS and the audit log through the real stack and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sigverify.access.v1 import access_pb2, access_pb2_grpc
from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify.tally.v1 import tally_pb2, tally_pb2_grpc
from sigverify_cli import client, credentials, stack
from sigverify_common import audit
from sigverify_common.access import token_hash
from sigverify_common.auth import AuthInterceptor
from sigverify_common.grpc_server import build_server, server_credentials
from sigverify_intake.access_service import AccessService
from tests.integration import helpers as h

pytestmark = pytest.mark.integration

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
BATCH = ("line,first_name,last_name,street,city,zip,signed_on\n"
         "1,Ann,Example,1 Main St,Bakersfield,93301,2017-05-01\n")


@pytest.fixture
async def db(live_stack: stack.StackState) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(live_stack.database_url, min_size=1, max_size=10)
    try:
        yield pool
    finally:
        await pool.close()


async def new_token(state: stack.StackState, role: str, county: str = ""
                    ) -> access_pb2.CreateTokenResponse:
    async with h.channel(state, "intake") as ch:
        r: access_pb2.CreateTokenResponse = await access_pb2_grpc.AccessServiceStub(ch).CreateToken(
            access_pb2.CreateTokenRequest(role=access_pb2.Role.Value(f"ROLE_{role.upper()}"),
                                          county=county, label="test"), timeout=10)
    return r


async def make_token(state: stack.StackState, role: str, county: str = "") -> str:
    return str((await new_token(state, role, county)).token)


async def code_of(call: object) -> grpc.StatusCode | None:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return None


def batch_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text(BATCH, encoding="utf-8")
    return path


def cli(state: stack.StackState, *argv: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SIGVERIFY_TOKEN", "DATABASE_URL")}
    env["SIGVERIFY_HOME"] = state.home
    if token is not None:
        env["SIGVERIFY_TOKEN"] = token
    return subprocess.run([sys.executable, "-c", "from sigverify_cli.main import main; main()",
                           *argv], env=env, capture_output=True, text=True, timeout=60)


async def test_calls_without_a_valid_token_are_unauthenticated(live_stack: stack.StackState) -> None:
    for token in ("", "sv_not-a-token-anyone-made", "garbage"):
        async with h.channel(live_stack, "intake", token) as ch:
            assert await code_of(intake_pb2_grpc.IntakeServiceStub(ch).GetPetition(
                intake_pb2.GetPetitionRequest(petition_id="x"), timeout=10)) == UNAUTHENTICATED
        async with h.channel(live_stack, "tally", token) as ch:
            assert await code_of(tally_pb2_grpc.TallyServiceStub(ch).GetTally(
                tally_pb2.GetTallyRequest(petition_id="x"), timeout=10)) == UNAUTHENTICATED


async def test_health_answers_without_a_token(live_stack: stack.StackState) -> None:
    for name in stack.SERVICES:
        async with h.channel(live_stack, name, "") as ch:
            reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                               timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_clerk_works_only_in_their_county(live_stack: stack.StackState,
                                                   tmp_path: Path) -> None:
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    kern = await make_token(live_stack, "clerk", "kern")
    alameda_batch = await h.submit(live_stack, batch_file(tmp_path, "a.csv"), pid, "Alameda")

    async with h.channel(live_stack, "intake", kern) as ch:
        own = await client.submit_batch(ch, batch_file(tmp_path, "k.csv"), pid, "Kern")
        assert own.county == "Kern" and own.signatures_accepted == 1
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.submit_batch(ch, batch_file(tmp_path, "k2.csv"), pid, "Alameda")
        assert e.value.code() == PERMISSION_DENIED and "Kern" in (e.value.details() or "")
        stub = intake_pb2_grpc.IntakeServiceStub(ch)
        got = await stub.GetBatch(intake_pb2.GetBatchRequest(batch_id=own.batch_id), timeout=10)
        assert got.batch_id == own.batch_id
        assert await code_of(stub.GetBatch(intake_pb2.GetBatchRequest(
            batch_id=alameda_batch.batch_id), timeout=10)) == PERMISSION_DENIED
        assert (await stub.GetPetition(intake_pb2.GetPetitionRequest(petition_id=pid),
                                       timeout=10)).petition_id == pid
        assert await code_of(stub.CreatePetition(intake_pb2.CreatePetitionRequest(
            petition_id=h.new_petition_id(), required_signatures=1, deadline="2017-07-25"),
            timeout=10)) == PERMISSION_DENIED
        assert await code_of(access_pb2_grpc.AccessServiceStub(ch).CreateToken(
            access_pb2.CreateTokenRequest(role=access_pb2.ROLE_ADMIN), timeout=10)) == PERMISSION_DENIED
    async with h.channel(live_stack, "tally", kern) as ch:
        assert await code_of(tally_pb2_grpc.TallyServiceStub(ch).GetTally(
            tally_pb2.GetTallyRequest(petition_id=pid), timeout=10)) == PERMISSION_DENIED


async def test_ops_reads_tallies_and_batches_but_does_not_submit(live_stack: stack.StackState,
                                                                  tmp_path: Path) -> None:
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    receipt = await h.submit(live_stack, batch_file(tmp_path, "b.csv"), pid, "Kern")
    ops = await make_token(live_stack, "ops")
    async with h.channel(live_stack, "tally", ops) as ch:
        t = await client.get_tally(ch, pid)
        assert t.petition_id == pid
    async with h.channel(live_stack, "intake", ops) as ch:
        got = await intake_pb2_grpc.IntakeServiceStub(ch).GetBatch(
            intake_pb2.GetBatchRequest(batch_id=receipt.batch_id), timeout=10)
        assert got.county == "Kern"
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.submit_batch(ch, batch_file(tmp_path, "c.csv"), pid, "Kern")
        assert e.value.code() == PERMISSION_DENIED


async def test_a_revoked_token_is_refused(live_stack: stack.StackState) -> None:
    made = await new_token(live_stack, "ops")
    ops, info = made.token, made.info
    request = intake_pb2.GetPetitionRequest(petition_id="none")
    async with h.channel(live_stack, "intake", ops) as ch:
        assert await code_of(intake_pb2_grpc.IntakeServiceStub(ch).GetPetition(
            request, timeout=10)) == grpc.StatusCode.NOT_FOUND  # admitted
    async with h.channel(live_stack, "intake") as ch:
        stub = access_pb2_grpc.AccessServiceStub(ch)
        revoked = await stub.RevokeToken(access_pb2.RevokeTokenRequest(token_id=info.token_id),
                                         timeout=10)
        assert revoked.revoked_at
        listed = await stub.ListTokens(access_pb2.ListTokensRequest(), timeout=10)
        assert info.token_id not in {t.token_id for t in listed.tokens}
    # Intake forgets it at once; tally never saw it.
    async with h.channel(live_stack, "intake", ops) as ch:
        assert await code_of(intake_pb2_grpc.IntakeServiceStub(ch).GetPetition(
            request, timeout=10)) == UNAUTHENTICATED
    async with h.channel(live_stack, "tally", ops) as ch:
        assert await code_of(tally_pb2_grpc.TallyServiceStub(ch).GetTally(
            tally_pb2.GetTallyRequest(petition_id="none"), timeout=10)) == UNAUTHENTICATED


async def test_token_create_prints_the_token_once_and_stores_only_its_hash(
        live_stack: stack.StackState, db: asyncpg.Pool) -> None:
    r = cli(live_stack, "token", "create", "--role", "clerk", "--county", "los  angeles",
            "--label", "LA registrar")
    assert r.returncode == 0, r.stderr
    secret = r.stdout.strip()
    assert secret.startswith("sv_") and "\n" not in secret
    row = await db.fetchrow("SELECT * FROM access.tokens WHERE token_sha256 = $1",
                            token_hash(secret))
    assert row is not None and (row["role"], row["county"]) == ("clerk", "Los Angeles")
    for table in ("access.tokens", "audit.entries"):
        assert not await db.fetchval(
            f"SELECT count(*) FROM {table} t WHERE strpos(t::text, $1) > 0", secret)
    assert not [p for p in Path(live_stack.home).rglob("*")
                if p.is_file() and p.stat().st_size < 1_000_000 and secret in p.read_text(errors="replace")]
    # The new token works; the listing shows no secret.
    listed = cli(live_stack, "token", "list")
    assert listed.returncode == 0 and row["token_id"] in listed.stdout and secret not in listed.stdout
    assert cli(live_stack, "token", "list", token=secret).returncode == 1  # a clerk is no admin
    bad = cli(live_stack, "token", "create", "--role", "clerk")
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr
    assert cli(live_stack, "token", "create", "--role", "ops", "--county", "Kern").returncode == 1
    assert cli(live_stack, "token", "list", "--token", "sv_wrong").returncode == 1
    # The stack's own admin token file is the owner's alone.
    assert (Path(live_stack.home) / "admin-token").stat().st_mode & 0o077 == 0


GET_PETITION = "/sigverify.intake.v1.IntakeService/GetPetition"


async def test_the_audit_log_is_append_only_chained_and_tamper_evident(
        live_stack: stack.StackState, db: asyncpg.Pool, tmp_path: Path) -> None:
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    receipt = await h.submit(live_stack, batch_file(tmp_path, "d.csv"), pid, "Orange")
    before = await db.fetchval("SELECT coalesce(max(id), 0) FROM audit.entries")
    async with h.channel(live_stack, "intake", "") as ch:
        await code_of(intake_pb2_grpc.IntakeServiceStub(ch).GetPetition(
            intake_pb2.GetPetitionRequest(petition_id=pid), timeout=10))
    # Refusals reach the log aggregated, every REFUSAL_AUDIT_SECONDS (1 s in the tests).
    for _ in range(100):
        if await db.fetchval("SELECT 1 FROM audit.entries WHERE action = 'access.denied' "
                             "AND id > $1 AND subject = $2", before, GET_PETITION):
            break
        await asyncio.sleep(0.1)
    # Concurrent appends from many connections keep one chain.
    await asyncio.gather(*(audit.record_now(db, "system:test", "test.append", str(i), {"i": i})
                           for i in range(40)))

    actions = {r["action"] for r in await db.fetch("SELECT DISTINCT action FROM audit.entries")}
    assert {"token.created", "petition.created", "batch.received", "access.denied"} <= actions
    batch = await db.fetchrow("SELECT * FROM audit.entries WHERE action = 'batch.received' "
                              "AND subject = $1", receipt.batch_id)
    assert batch is not None and json.loads(batch["detail"])["county"] == "Orange"
    # This test's refusal (other tests' refusals, written at their own intervals, may be
    # newer).
    denied = await db.fetchrow("SELECT * FROM audit.entries WHERE action = 'access.denied' "
                               "AND id > $1 AND subject = $2 ORDER BY id DESC LIMIT 1",
                               before, GET_PETITION)
    assert denied is not None and denied["actor"] == "anonymous"
    assert set(json.loads(denied["detail"])) == {"reason", "service", "count", "first_at",
                                                 "last_at", "peers", "other_peer_calls"}
    assert list(json.loads(denied["detail"])["peers"]) == ["ipv4:127.0.0.1"]

    ok = cli(live_stack, "audit", "verify")
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stdout + ok.stderr

    # The database refuses changes, even to its owner.
    victim = await db.fetchrow("SELECT id, detail::text AS detail FROM audit.entries "
                               "WHERE subject = $1", pid)
    assert victim is not None
    for sql in ("UPDATE audit.entries SET actor = 'someone' WHERE id = $1",
                "DELETE FROM audit.entries WHERE id = $1"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db.execute(sql, victim["id"])
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute("TRUNCATE audit.entries")

    async def force(detail: str) -> None:
        """What only a superuser can do: switch the guard off, change a row, switch it on."""
        async with db.acquire() as conn, conn.transaction():
            await conn.execute("ALTER TABLE audit.entries DISABLE TRIGGER entries_append_only")
            await conn.execute("UPDATE audit.entries SET detail = $2::jsonb WHERE id = $1",
                               victim["id"], detail)
            await conn.execute("ALTER TABLE audit.entries ENABLE TRIGGER entries_append_only")

    await force(json.dumps({"title": "forged", "required_signatures": 1, "deadline": "2017-07-25"}))
    try:
        broken = cli(live_stack, "audit", "verify")
        assert broken.returncode == 1
        assert f"BROKEN at entry {victim['id']}" in " ".join(broken.stdout.split())
        report = await audit.verify(db)
        assert not report.ok and report.first_broken_id == victim["id"]
    finally:
        await force(victim["detail"])  # put it back for the tests that follow
    assert (await audit.verify(db)).ok


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(d: Path) -> None:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "1", "-subj", "/CN=sigverify test CA", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                 "extendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text(ext)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN=sigverify {name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext",
                 cwd=d)


@pytest.mark.parametrize("mutual", [False, True])
async def test_tls_and_mutual_tls_with_tokens(live_stack: stack.StackState, db: asyncpg.Pool,
                                              tmp_path: Path, mutual: bool) -> None:
    _certificates(tmp_path)
    creds = server_credentials(str(tmp_path / "server.pem"), str(tmp_path / "server.key"),
                               str(tmp_path / "ca.pem") if mutual else "")
    auth = AuthInterceptor(db, "tls-test")
    server, _, port = build_server(0, [auth], creds)
    access_pb2_grpc.add_AccessServiceServicer_to_server(AccessService(db, auth.cache), server)
    await server.start()
    addr = f"127.0.0.1:{port}"
    env = {"SIGVERIFY_TLS_CA": str(tmp_path / "ca.pem")}
    if mutual:
        env |= {"SIGVERIFY_TLS_CERT": str(tmp_path / "client.pem"),
                "SIGVERIFY_TLS_KEY": str(tmp_path / "client.key")}
    tls = credentials.tls_from_env(env)
    request = access_pb2.ListTokensRequest()
    try:
        async with credentials.open_channel(addr, live_stack.admin_token(), tls) as ch:
            listed = await access_pb2_grpc.AccessServiceStub(ch).ListTokens(request, timeout=10)
            assert listed.tokens
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                                timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING  # no monitor here
        async with credentials.open_channel(addr, "", tls) as ch:
            assert await code_of(access_pb2_grpc.AccessServiceStub(ch).ListTokens(
                request, timeout=10)) == UNAUTHENTICATED
        # Plain text is not spoken at all; under mutual TLS, neither is TLS without a client
        # certificate.
        async with credentials.open_channel(addr, live_stack.admin_token()) as ch:
            assert await code_of(access_pb2_grpc.AccessServiceStub(ch).ListTokens(
                request, timeout=5)) == grpc.StatusCode.UNAVAILABLE
        if mutual:
            anonymous = credentials.tls_from_env({"SIGVERIFY_TLS_CA": str(tmp_path / "ca.pem")})
            async with credentials.open_channel(addr, live_stack.admin_token(), anonymous) as ch:
                assert await code_of(access_pb2_grpc.AccessServiceStub(ch).ListTokens(
                    request, timeout=5)) == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)
