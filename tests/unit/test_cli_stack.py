"""``sigverify stack`` under the hostile trial's conditions, with stand-in services (a process
that answers gRPC health on GRPC_PORT and holds METRICS_PORT, as a service does, and dies on
"Address already in use" as one does) and a stand-in broker (a process listening on a port):
two restarts at once, a process left on a service's ports that stack.json does not record,
and a broker that died."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sigverify_cli import stack

FAKE_SERVICE = """\
import os, signal, socket, sys, time
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2_grpc
host = os.environ["BIND_HOST"]
server = grpc.server(futures.ThreadPoolExecutor(2))
health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
server.add_insecure_port(f"{host}:{os.environ['GRPC_PORT']}")  # SO_REUSEPORT, as services
server.start()
metrics = socket.socket()
metrics.bind((host, int(os.environ["METRICS_PORT"])))  # a second one dies here
metrics.listen()
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    time.sleep(1)
"""

FAKE_BROKER = """\
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("listening", flush=True)
while True:
    time.sleep(1)
"""

SIGVERIFY = str(Path(sys.executable).parent / "sigverify")


def run(*argv: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def detached(argv: list[str], env: dict[str, str]) -> int:
    """Start ``argv`` in a process that is not this one's child (its end is reaped by init,
    as a service's is when the ``sigverify`` that started it has exited)."""
    out = run(sys.executable, "-c",
              "import subprocess, sys; p = subprocess.Popen(sys.argv[1:], "
              "start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
              "print(p.pid)", *argv, env=env)
    return int(out.stdout)


def recorded(home: Path) -> dict[str, int]:
    raw = json.loads((home / "stack.json").read_text())
    return {name: p["pid"] for name, p in raw["services"].items()}


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    end = time.monotonic() + 10
    while time.monotonic() < end and stack.pid_alive(pid):
        time.sleep(0.05)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], list[int]]]:
    """A stack home with stand-in intake and dedupe (started by ``stack.spawn_service`` in a
    process of their own) and a stand-in broker; the environment to run ``sigverify`` in;
    the pids to kill at the end (besides those stack.json records)."""
    fakes = tmp_path / "fakes"
    for name in ("intake", "dedupe"):
        (fakes / f"sigverify_{name}").mkdir(parents=True)
        (fakes / f"sigverify_{name}" / "__init__.py").write_text("")
        (fakes / f"sigverify_{name}" / "__main__.py").write_text(FAKE_SERVICE)
    home = tmp_path / "home"
    env = dict(os.environ, SIGVERIFY_HOME=str(home),
               PYTHONPATH=os.pathsep.join([str(fakes), *filter(None, [os.environ.get(
                   "PYTHONPATH")])]))
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    broker_port = stack.free_port()
    broker = detached([sys.executable, "-c", FAKE_BROKER, str(broker_port)], env)
    assert stack.wait_port(broker_port, 10)
    extra = [broker]
    script = (
        "import sys; from pathlib import Path; from sigverify_cli import stack\n"
        "home = Path(sys.argv[1]); stack.prepare_home(home, print)\n"
        "state = stack.StackState(home=str(home), database_url='postgresql://x@127.0.0.1:9/x',"
        " kafka_bootstrap_servers=f'127.0.0.1:{sys.argv[2]}', broker_pid=int(sys.argv[3]))\n"
        "state.save()\n"
        "for name in ('intake', 'dedupe'):\n"
        "    stack.spawn_service(state, name)\n"
        "stack.wait_healthy(state, ('intake', 'dedupe'), 30)\n")
    started = run(sys.executable, "-c", script, str(home), str(broker_port), str(broker), env=env)
    try:
        assert started.returncode == 0, started.stderr
        yield home, env, extra
    finally:
        state = stack.StackState.load(home)
        # Also any process left on the stand-ins' ports unrecorded (what the race did).
        ports = [port for p in (state.services.values() if state else ())
                 for port in (p.grpc_port, p.metrics_port)]
        for pid in {*(p.pid for p in (state.services.values() if state else ())), *extra,
                    *(pid for port in ports for pid in stack.port_holders(port))}:
            kill(pid)


def test_two_restarts_at_once_both_recorded(local: tuple[Path, dict[str, str], list[int]]
                                           ) -> None:
    """The trial: intake killed, then 'restart intake & restart dedupe & wait': stack.json kept
    the dead intake (each command wrote back the whole state it had read), so 'stack status'
    showed intake down while it served, and 'stack down' would have left it running."""
    home, env, _ = local
    before = recorded(home)
    kill(before["intake"])
    procs = [subprocess.Popen([SIGVERIFY, "stack", "restart", name], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name in ("intake", "dedupe")]
    outs = [p.communicate(timeout=90) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    after = recorded(home)
    assert after["intake"] != before["intake"] and after["dedupe"] != before["dedupe"]
    for name in ("intake", "dedupe"):
        assert stack.pid_alive(after[name]), name
        state = stack.StackState.load(home)
        assert state is not None and stack.serves(state.services[name]), name
    status = run(SIGVERIFY, "stack", "status", env=env)
    assert status.returncode == 0, status.stdout + status.stderr


def test_a_process_left_on_a_services_ports_is_named_not_taken_for_the_new_one(
        local: tuple[Path, dict[str, str], list[int]]) -> None:
    """The trial's next 'restart intake' printed "intake restarted: pid N, serving" while N had
    died at once on its metrics port, the health check answered by the unrecorded older
    process on the same ports."""
    home, env, extra = local
    state = stack.StackState.load(home)
    assert state is not None
    left = state.services["intake"].pid
    extra.append(left)
    # What the lost update left: stack.json records an intake that is gone.
    gone = detached([sys.executable, "-c", "pass"], env)
    end = time.monotonic() + 10
    while stack.pid_alive(gone) and time.monotonic() < end:
        time.sleep(0.1)
    state.services["intake"].pid = gone
    state.save()
    out = run(SIGVERIFY, "stack", "restart", "intake", env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    grpc_port = state.services["intake"].grpc_port
    assert out.stderr.startswith(f"error: intake's gRPC port {grpc_port} is held by pid {left}, "
                                 "which stack.json does not record"), out.stderr
    assert f"kill {left}" in out.stderr and "serving" not in out.stdout
    assert stack.pid_alive(left) and recorded(home)["intake"] == gone  # nothing started
    # And a health answer from another process on the port is not taken for the service's.
    assert not stack.serves(stack.ServiceProc(pid=os.getpid(), grpc_port=grpc_port,
                                              metrics_port=state.services["intake"].metrics_port,
                                              log=""))
    assert stack.serves(stack.ServiceProc(pid=left, grpc_port=grpc_port,
                                          metrics_port=state.services["intake"].metrics_port,
                                          log=""))


def test_a_dead_broker_is_named_by_status_restart_and_up(
        local: tuple[Path, dict[str, str], list[int]]) -> None:
    """The trial: 'stack status' showed "broker: tansu (embedded), listening on -" with no word
    that it was down; 'stack restart dedupe' hung up to 120 s without naming the broker;
    'stack up' said only that a stack was already running."""
    home, env, _ = local
    state = stack.StackState.load(home)
    assert state is not None
    kill(state.broker_pid)
    status = run(SIGVERIFY, "stack", "status", env=env)
    text = " ".join(status.stdout.split())
    assert status.returncode == 1, text
    assert "broker: tansu (embedded), DOWN" in text, text
    assert (f"its process (pid {state.broker_pid}) is gone" in text
            and "sigverify stack down && sigverify stack up" in text
            and "re-publish from PostgreSQL" in text), text
    dedupe = recorded(home)["dedupe"]
    started = time.monotonic()
    restart = run(SIGVERIFY, "stack", "restart", "dedupe", env=env)
    assert restart.returncode == 2 and time.monotonic() - started < 30
    assert restart.stderr.startswith("error: dedupe was not restarted: the embedded broker "
                                     "(tansu) is down"), restart.stderr
    assert recorded(home)["dedupe"] == dedupe and stack.pid_alive(dedupe)  # left alone
    up = run(SIGVERIFY, "stack", "up", env=env)
    assert up.returncode == 2 and "a stack is already running" in up.stderr
    assert "the embedded broker (tansu) is down" in " ".join(up.stderr.split()), up.stderr
