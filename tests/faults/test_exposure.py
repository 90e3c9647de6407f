"""What the local stack exposes, and to whom: bind addresses, private files, token expiry,
refused calls in the audit log, and the embedded PostgreSQL's durability.

Through the session's real stack (tests/conftest.py), real processes and a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import grp
import ipaddress
import json
import math
import os
import socket
import struct
import subprocess
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest

from sigverify.access.v1 import access_pb2, access_pb2_grpc
from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify.tally.v1 import tally_pb2, tally_pb2_grpc
from sigverify_cli import stack
from tests.conftest import REFUSAL_AUDIT_SECONDS
from tests.integration import helpers as h

pytestmark = pytest.mark.integration

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
LIST_COUNTIES = "/sigverify.intake.v1.IntakeService/ListCounties"
GET_TALLY = "/sigverify.tally.v1.TallyService/GetTally"


@pytest.fixture
async def db(live_stack: stack.StackState) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(live_stack.database_url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


def cli(state: stack.StackState, *argv: str, token: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SIGVERIFY_TOKEN", "DATABASE_URL")}
    env["SIGVERIFY_HOME"] = state.home
    if token is not None:
        env["SIGVERIFY_TOKEN"] = token
    return subprocess.run([sys.executable, "-c", "from sigverify_cli.main import main; main()",
                           *argv], env=env, capture_output=True, text=True, timeout=60)


# -- 1. bind addresses -----------------------------------------------------------------------

def non_loopback_addresses() -> list[str]:
    """This machine's addresses other than loopback (IPv4 from the interfaces, global IPv6
    from /proc/net/if_inet6)."""
    found: list[str] = []
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915,  # SIOCGIFADDR
                                     struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
        ip = ipaddress.ip_address(socket.inet_ntoa(packed[20:24]))
        if not ip.is_loopback:
            found.append(str(ip))
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            hexaddr, _, _, scope, *_ = line.split()
            ip6 = ipaddress.IPv6Address(bytes.fromhex(hexaddr))
            if scope == "00" and not ip6.is_loopback:
                found.append(str(ip6))
    return found


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_the_stack_listens_on_loopback_only_and_status_says_so(
        live_stack: stack.StackState) -> None:
    outside = non_loopback_addresses()
    if not outside:
        pytest.skip("this machine has no address other than loopback to probe from")
    ports = {f"{name} {kind}": port for name, p in live_stack.services.items()
             for kind, port in (("gRPC", p.grpc_port), ("metrics", p.metrics_port))}
    ports["broker"] = int(live_stack.kafka_bootstrap_servers.rsplit(":", 1)[-1])
    for what, port in ports.items():
        assert reachable("127.0.0.1", port), f"{what} ({port}) does not answer on loopback"
        for addr in outside:
            assert not reachable(addr, port), f"{what} is reachable on {addr}:{port}"

    status = cli(live_stack, "stack", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    out = status.stdout
    for name, p in live_stack.services.items():
        row = next(line for line in out.splitlines() if line.strip("│ ").startswith(name))
        assert f"127.0.0.1:{p.grpc_port}" in row and f"127.0.0.1:{p.metrics_port}" in row, row
    assert "0.0.0.0" not in out and "every interface" not in out, out


def test_status_reports_a_port_bound_to_every_interface() -> None:
    """`stack status` reads what is listening, not what it expects."""
    with socket.socket() as wide, socket.socket() as narrow:
        wide.bind(("0.0.0.0", 0))
        wide.listen()
        narrow.bind(("127.0.0.1", 0))
        narrow.listen()
        wport, nport = wide.getsockname()[1], narrow.getsockname()[1]
        assert stack.bound(wport, "127.0.0.1") == f"0.0.0.0:{wport} (every interface)"
        assert stack.bound(nport, "0.0.0.0") == f"127.0.0.1:{nport}"
    assert stack.bound(nport, "127.0.0.1") == "-"


# -- 2. private files ------------------------------------------------------------------------

def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_stack_home_and_its_secrets_are_private(live_stack: stack.StackState) -> None:
    home = Path(live_stack.home)
    if live_stack.pg_data and os.geteuid() == 0:
        # PostgreSQL runs as its own user, which may pass through (only) to its data.
        assert mode(home) == 0o710
        assert home.stat().st_gid == grp.getgrnam(stack.PG_USER).gr_gid
    else:
        assert mode(home) == 0o700
    assert mode(home / "stack.json") == 0o600
    assert "database_url" in json.loads((home / "stack.json").read_text())
    assert mode(home / "admin-token") == 0o600
    assert mode(home / "logs") == 0o700
    logs = list((home / "logs").iterdir())
    assert {f"{n}.log" for n in stack.SERVICES} <= {p.name for p in logs}
    assert all(mode(p) == 0o600 for p in logs), {p.name: oct(mode(p)) for p in logs}


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_stack_json_is_never_readable_by_others_even_for_a_moment(tmp_path: Path) -> None:
    home = tmp_path / "new-home"
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(home):
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat().st_mode & 0o077:
                            seen.add(f"{entry.name} {oct(entry.stat().st_mode & 0o777)}")

    with umask(0):  # the most permissive umask: only explicit modes protect the files
        stack.prepare_home(home, lambda m: None)
        assert mode(home) == 0o700 and mode(home / "logs") == 0o700
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            state = stack.StackState(home=str(home), database_url="postgresql://u:secret@db/x",
                                     kafka_bootstrap_servers="127.0.0.1:1")
            for i in range(300):
                state.pg_port = i
                state.save()
        finally:
            done.set()
            watcher.join()
    assert mode(home / "stack.json") == 0o600
    assert stack.StackState.load(home) == state
    assert not seen, f"readable by others at some moment: {sorted(seen)}"
    assert sorted(p.name for p in home.iterdir()) == ["logs", "stack.json"]  # no temporaries


def test_an_older_home_left_readable_is_made_private(tmp_path: Path) -> None:
    home = tmp_path / "old-home"
    (home / "logs").mkdir(parents=True)
    home.chmod(0o755)
    (home / "logs").chmod(0o755)
    for f in (home / "stack.json", home / "logs" / "intake.log"):
        f.write_text("{}")
        f.chmod(0o644)
    stack.prepare_home(home, lambda m: None)
    assert mode(home) == 0o700 and mode(home / "logs") == 0o700
    assert mode(home / "stack.json") == 0o600 and mode(home / "logs" / "intake.log") == 0o600


# -- 3. token expiry -------------------------------------------------------------------------

async def create_token(state: stack.StackState, role: str, county: str = "",
                       **expiry: object) -> access_pb2.CreateTokenResponse:
    async with h.channel(state, "intake") as ch:
        r: access_pb2.CreateTokenResponse = await access_pb2_grpc.AccessServiceStub(
            ch).CreateToken(access_pb2.CreateTokenRequest(
                role=access_pb2.Role.Value(f"ROLE_{role.upper()}"), county=county,
                label="exposure test", **expiry), timeout=10)  # type: ignore[arg-type]
    return r


async def get_petition(state: stack.StackState, token: str, petition_id: str
                       ) -> grpc.aio.AioRpcError | None:
    async with h.channel(state, "intake", token) as ch:
        try:
            await intake_pb2_grpc.IntakeServiceStub(ch).GetPetition(
                intake_pb2.GetPetitionRequest(petition_id=petition_id), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc
    return None


async def test_an_expired_token_is_refused_saying_it_expired(
        live_stack: stack.StackState, db: asyncpg.Pool) -> None:
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    made = await create_token(live_stack, "clerk", "Kern")
    # A token whose expiry passed yesterday (no RPC may make one: see below).
    await db.execute("UPDATE access.tokens SET expires_at = now() - interval '1 day' "
                     "WHERE token_id = $1", made.info.token_id)
    refused = await get_petition(live_stack, made.token, pid)
    assert refused is not None and refused.code() == UNAUTHENTICATED
    assert f"token {made.info.token_id} expired at" in (refused.details() or "")
    async with h.channel(live_stack, "tally", made.token) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await tally_pb2_grpc.TallyServiceStub(ch).GetTally(
                tally_pb2.GetTallyRequest(petition_id=pid), timeout=10)
        assert e.value.code() == UNAUTHENTICATED and "expired" in (e.value.details() or "")

    listed = cli(live_stack, "token", "list")
    assert made.info.token_id not in listed.stdout
    listed_all = cli(live_stack, "token", "list", "--all")
    row = next(line for line in listed_all.stdout.splitlines() if made.info.token_id in line)
    assert "expired 20" in row, row

    with pytest.raises(grpc.aio.AioRpcError) as past:
        await create_token(live_stack, "ops", expires_at="2020-01-01T00:00:00Z")
    assert past.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not in the future" in (past.value.details() or "")


async def test_a_token_expiring_in_two_seconds_works_before_and_not_after(
        live_stack: stack.StackState, db: asyncpg.Pool) -> None:
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    made = await create_token(live_stack, "ops", expires_in_seconds=2)
    expires_at = datetime.fromisoformat(made.info.expires_at)
    stored = await db.fetchval("SELECT expires_at FROM access.tokens WHERE token_id = $1",
                               made.info.token_id)
    assert stored == expires_at
    # Used at once: admitted, and remembered by each service's token cache (30 s).
    assert await get_petition(live_stack, made.token, pid) is None
    async with h.channel(live_stack, "tally", made.token) as ch:
        await tally_pb2_grpc.TallyServiceStub(ch).GetTally(
            tally_pb2.GetTallyRequest(petition_id=pid), timeout=10)
    await asyncio.sleep((expires_at - datetime.now(UTC)).total_seconds() + 0.2)
    refused = await get_petition(live_stack, made.token, pid)
    assert refused is not None and refused.code() == UNAUTHENTICATED, refused
    assert "expired at" in (refused.details() or "")
    async with h.channel(live_stack, "tally", made.token) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await tally_pb2_grpc.TallyServiceStub(ch).GetTally(
                tally_pb2.GetTallyRequest(petition_id=pid), timeout=10)
    assert e.value.code() == UNAUTHENTICATED and "expired" in (e.value.details() or "")


def test_token_create_expires_defaults_and_limits(live_stack: stack.StackState) -> None:
    clerk = cli(live_stack, "token", "create", "--role", "clerk", "--county", "Kern")
    assert clerk.returncode == 0, clerk.stderr
    in_90_days = (datetime.now(UTC) + timedelta(days=90)).date().isoformat()
    assert f"expires {in_90_days}" in clerk.stderr, clerk.stderr

    dated = cli(live_stack, "token", "create", "--role", "reviewer", "--expires",
                (datetime.now(UTC) + timedelta(days=10)).date().isoformat())
    assert dated.returncode == 0, dated.stderr
    day_after = (datetime.now(UTC) + timedelta(days=11)).date().isoformat()
    assert f"expires {day_after}T00:00:00Z" in dated.stderr, dated.stderr

    never = cli(live_stack, "token", "create", "--role", "admin", "--expires", "never")
    assert never.returncode == 0 and "expires never" in never.stderr, never.stderr
    token_id = never.stderr.split("token ", 1)[1].split(" ", 1)[0]
    listed = cli(live_stack, "token", "list")
    row = next(line for line in listed.stdout.splitlines() if token_id in line)
    assert "never" in row

    for argv, message in (
            (("--role", "clerk", "--county", "Kern", "--expires", "never"),
             "only admin tokens may be made to never expire"),
            (("--role", "ops", "--expires", "400d"), "at most 366 days"),
            (("--role", "ops", "--expires", "2020-01-01"), "not in the future"),
            (("--role", "ops", "--expires", "soon"), "give a lifetime such as 90d")):
        bad = cli(live_stack, "token", "create", *argv)
        assert bad.returncode != 0 and message in " ".join(bad.stderr.split()), bad.stderr
        assert "Traceback" not in bad.stderr


# -- 4. refused calls ------------------------------------------------------------------------

async def flood(state: stack.StackState, service: str, n: int) -> None:
    """``n`` calls without a token, 50 at a time, each refused UNAUTHENTICATED."""
    async with h.channel(state, service, "") as ch:
        if service == "intake":
            stub = intake_pb2_grpc.IntakeServiceStub(ch)

            async def one() -> grpc.StatusCode:
                try:
                    await stub.ListCounties(intake_pb2.ListCountiesRequest(petition_id="x"),
                                            timeout=10)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return grpc.StatusCode.OK
        else:
            tstub = tally_pb2_grpc.TallyServiceStub(ch)

            async def one() -> grpc.StatusCode:
                try:
                    await tstub.GetTally(tally_pb2.GetTallyRequest(petition_id="x"), timeout=10)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return grpc.StatusCode.OK
        for start in range(0, n, 50):
            codes = await asyncio.gather(*(one() for _ in range(min(50, n - start))))
            assert set(codes) == {UNAUTHENTICATED}


async def refusal_rows(db: asyncpg.Pool, after: int, rpc: str) -> list[asyncpg.Record]:
    return list(await db.fetch(
        "SELECT id, actor, detail FROM audit.entries WHERE id > $1 AND action = 'access.denied' "
        "AND subject = $2 ORDER BY id", after, rpc))


def refusals_metric(state: stack.StackState, service: str, kind: str) -> float:
    url = f"http://127.0.0.1:{state.services[service].metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("sigverify_access_refusals_total{") and f'kind="{kind}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_flood_of_anonymous_calls_makes_a_handful_of_audit_entries(
        live_stack: stack.StackState, db: asyncpg.Pool) -> None:
    before = await db.fetchval("SELECT coalesce(max(id), 0) FROM audit.entries")
    metric_before = refusals_metric(live_stack, "intake", "no_token")
    await flood(live_stack, "intake", 300)
    assert refusals_metric(live_stack, "intake", "no_token") - metric_before == 300
    rows: list[asyncpg.Record] = []
    for _ in range(200):   # written every REFUSAL_AUDIT_SECONDS (1 s here)
        rows = await refusal_rows(db, before, LIST_COUNTIES)
        if sum(json.loads(r["detail"])["count"] for r in rows) >= 300:
            break
        await asyncio.sleep(0.1)
    details = [json.loads(r["detail"]) for r in rows]
    assert sum(d["count"] for d in details) == 300
    assert {r["actor"] for r in rows} == {"anonymous"}
    assert {d["reason"] for d in details} == {"no bearer token"}
    assert {d["service"] for d in details} == {"intake"}
    assert all(d["peers"] == {"ipv4:127.0.0.1": d["count"]} for d in details)
    assert all(d["other_peer_calls"] == 0 for d in details)
    # One entry per flush interval that saw refusals: the span the entries cover bounds them.
    first = min(datetime.fromisoformat(d["first_at"]) for d in details)
    last = max(datetime.fromisoformat(d["last_at"]) for d in details)
    intervals = math.ceil((last - first).total_seconds() / float(REFUSAL_AUDIT_SECONDS))
    assert len(rows) <= intervals + 1, [(d["count"], d["first_at"]) for d in details]
    assert len(rows) <= 30, f"{len(rows)} entries for 300 refusals"

    verified = cli(live_stack, "audit", "verify")
    assert verified.returncode == 0 and "chain intact" in verified.stdout, verified.stdout


async def test_refusals_counted_since_the_last_write_reach_the_log_at_shutdown(
        live_stack: stack.StackState, db: asyncpg.Pool) -> None:
    tally = live_stack.services["tally"]
    stack.stop_pid(tally.pid)
    # An hour between writes: only the shutdown can write these refusals.
    stack.spawn_service(live_stack, "tally", {"REFUSAL_AUDIT_SECONDS": "3600"}, ports=tally)
    try:
        await asyncio.to_thread(stack.wait_healthy, live_stack, ("tally",))
        before = await db.fetchval("SELECT coalesce(max(id), 0) FROM audit.entries")
        await flood(live_stack, "tally", 300)
        assert refusals_metric(live_stack, "tally", "no_token") == 300
        await asyncio.sleep(1.0)
        assert await refusal_rows(db, before, GET_TALLY) == []
        await asyncio.to_thread(stack.stop_pid, live_stack.services["tally"].pid)  # SIGTERM
        rows = await refusal_rows(db, before, GET_TALLY)
        assert len(rows) == 1, rows
        detail = json.loads(rows[0]["detail"])
        assert rows[0]["actor"] == "anonymous" and detail["count"] == 300
        assert detail["service"] == "tally" and detail["reason"] == "no bearer token"
        assert datetime.fromisoformat(detail["first_at"]) <= datetime.fromisoformat(
            detail["last_at"])
    finally:
        stack.stop_pid(live_stack.services["tally"].pid)
        stack.spawn_service(live_stack, "tally", ports=tally)
        await asyncio.to_thread(stack.wait_healthy, live_stack, ("tally",))
    verified = cli(live_stack, "audit", "verify")
    assert verified.returncode == 0 and "chain intact" in verified.stdout, verified.stdout


# -- 5. the embedded PostgreSQL is durable ---------------------------------------------------

async def show(url: str, setting: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval(f"SHOW {setting}"))
    finally:
        await conn.close()


async def test_embedded_postgres_runs_with_fsync_on(live_stack: stack.StackState,
                                                    tmp_path: Path) -> None:
    if live_stack.pg_data:   # the session's stack is embedded (SIGVERIFY_TEST_EMBEDDED_PG=1)
        url = live_stack.database_url
        started = None
    else:                    # start one the way `stack up` does
        started = tmp_path / "pg"
        url, _ = await asyncio.to_thread(stack.start_embedded_postgres, started, lambda m: None)
    try:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            assert await show(url, setting) == "on", setting
    finally:
        if started is not None:
            await asyncio.to_thread(stack.stop_embedded_postgres, started)
