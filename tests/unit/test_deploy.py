"""The deployment files agree with the services: docker-compose.yml and deploy/k8s, and the
optional TLS layers over them (deploy/compose.tls.yml, deploy/compose.mtls.yml,
deploy/k8s-overlays/tls and mtls).

Reads only the repository's files (and renders the overlays with kustomize when it is
installed). Each service's required environment comes from its ``Config.REQUIRED_ENV``, so a
variable added there must be added to both deployments; the TLS layers may set only
variables that the service's ``Config.from_env`` or the health probe actually reads.
"""

from __future__ import annotations

import base64
import importlib
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from sigverify_common import healthcheck
from sigverify_common.grpc_server import LIVENESS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "k8s"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
#: Optional TLS layers. The Kubernetes overlays live beside deploy/k8s, not inside it:
#: kustomize refuses a base directory that contains its overlay.
K8S_OVERLAYS_DIR = ROOT / "deploy" / "k8s-overlays"
TLS_SECRET_EXAMPLE = K8S_OVERLAYS_DIR / "tls" / "secret-grpc-tls.example.yaml"
COMPOSE_TLS_FILE = ROOT / "deploy" / "compose.tls.yml"
COMPOSE_MTLS_FILE = ROOT / "deploy" / "compose.mtls.yml"

#: Service name -> (gRPC port, metrics port), as documented for the project.
PORTS: dict[str, tuple[int, int]] = {
    "intake": (50051, 9101),
    "matching": (50052, 9102),
    "dedupe": (50053, 9103),
    "tally": (50054, 9104),
}
SERVICES = tuple(PORTS)
NON_ROOT_UID = 10001

Doc = dict[str, Any]


# ----------------------------------------------------------------------------- loading


def required_env(service: str) -> tuple[str, ...]:
    module_name = f"sigverify_{service}.config"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pytest.fail(f"cannot import {module_name} to read Config.REQUIRED_ENV: {exc}")
    names = tuple(module.Config.REQUIRED_ENV)
    assert names, f"{module_name}.Config.REQUIRED_ENV is empty"
    return names


@cache
def compose() -> Doc:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict), (
        "docker-compose.yml has no services mapping"
    )
    return doc


def compose_service(name: str) -> Doc:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return services[name]


def compose_env(name: str) -> dict[str, str | None]:
    """A compose service's environment, as a mapping whichever form it is written in."""
    env = compose_service(name).get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        return {key: value for key, value in pairs}
    return {key: None if value is None else str(value) for key, value in env.items()}


@cache
def k8s_docs() -> tuple[tuple[str, Doc], ...]:
    """(file name, document) for every YAML document under deploy/k8s."""
    files = sorted([*K8S_DIR.rglob("*.yaml"), *K8S_DIR.rglob("*.yml")])
    assert files, f"no YAML under {K8S_DIR}"
    docs = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
                docs.append((path.relative_to(K8S_DIR).as_posix(), doc))
    return tuple(docs)


def k8s_objects(kind: str) -> dict[str, Doc]:
    found: dict[str, Doc] = {}
    for file, doc in k8s_docs():
        if doc.get("kind") == kind:
            name = doc["metadata"]["name"]
            assert name not in found, f"two {kind} objects named {name!r} (second in {file})"
            found[name] = doc
    return found


def deployment(service: str) -> Doc:
    deployments = k8s_objects("Deployment")
    assert service in deployments, (
        f"deploy/k8s has no Deployment {service!r} (found: {sorted(deployments)})"
    )
    return deployments[service]


def container(service: str) -> Doc:
    containers = deployment(service)["spec"]["template"]["spec"]["containers"]
    matching = [c for c in containers if c["name"] == service]
    assert len(matching) == 1, f"Deployment {service}: expected one container named {service!r}"
    return matching[0]


def config_map_data(name: str) -> dict[str, str]:
    maps = k8s_objects("ConfigMap")
    assert name in maps, f"a container refers to ConfigMap {name!r}, not found in deploy/k8s"
    return {k: str(v) for k, v in (maps[name].get("data") or {}).items()}


def secret_data(name: str) -> dict[str, str]:
    secrets = k8s_objects("Secret")
    assert name in secrets, f"a container refers to Secret {name!r}, not found in deploy/k8s"
    secret = secrets[name]
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update({k: str(v) for k, v in (secret.get("stringData") or {}).items()})
    return data


def _lookup(source: Mapping[str, str], key: str, what: str, optional: bool) -> str | None:
    if key not in source:
        assert optional, f"{what} has no key {key!r}"
        return None
    return source[key]


def k8s_env(service: str) -> dict[str, str | None]:
    """The container's environment with ConfigMap/Secret references resolved.

    A variable whose value cannot be known from the manifests (fieldRef, resourceFieldRef)
    maps to None; one from an optional reference whose key is missing is left out.
    """
    c = container(service)
    env: dict[str, str | None] = {}
    for source in c.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data = config_map_data(source["configMapRef"]["name"])
        elif "secretRef" in source:
            data = secret_data(source["secretRef"]["name"])
        else:
            pytest.fail(f"{service}: unknown envFrom source {source}")
        env.update({prefix + key: value for key, value in data.items()})
    for var in c.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = str(var["value"])
            continue
        ref = var.get("valueFrom") or {}
        if "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            value = _lookup(config_map_data(r["name"]), r["key"],
                            f"ConfigMap {r['name']}", r.get("optional", False))
        elif "secretKeyRef" in ref:
            r = ref["secretKeyRef"]
            value = _lookup(secret_data(r["name"]), r["key"],
                            f"Secret {r['name']}", r.get("optional", False))
        elif "fieldRef" in ref or "resourceFieldRef" in ref:
            value = None
        else:
            pytest.fail(f"{service}: env {name} has neither value nor a known valueFrom")
        if value is not None or "fieldRef" in ref or "resourceFieldRef" in ref:
            env[name] = value
        else:
            env.pop(name, None)
    return env


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def memory_bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    text = str(quantity)
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


# ----------------------------------------------------------------------------- compose


@pytest.mark.parametrize("service", SERVICES)
def test_compose_sets_required_env(service: str) -> None:
    env = compose_env(service)
    missing = [name for name in required_env(service) if not env.get(name)]
    assert not missing, f"docker-compose.yml service {service} does not set {missing}"
    grpc, metrics = PORTS[service]
    assert env["GRPC_PORT"] == str(grpc), f"compose {service}: GRPC_PORT should be {grpc}"
    assert env["METRICS_PORT"] == str(metrics), (
        f"compose {service}: METRICS_PORT should be {metrics}"
    )


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_waits_for_healthy_dependencies_and_is_probed(service: str) -> None:
    svc = compose_service(service)
    assert svc.get("restart") == "unless-stopped", f"compose {service}: restart policy"
    depends = svc.get("depends_on")
    assert isinstance(depends, dict), f"compose {service}: depends_on must carry conditions"
    for dep in ("postgres", "kafka"):
        assert dep in compose()["services"], f"docker-compose.yml has no {dep} service"
        assert depends.get(dep, {}).get("condition") == "service_healthy", (
            f"compose {service} must wait for {dep} to be service_healthy"
        )
        assert compose_service(dep).get("healthcheck", {}).get("test"), (
            f"compose {dep} has no healthcheck, so service_healthy would never hold"
        )
    test = svc.get("healthcheck", {}).get("test")
    assert isinstance(test, list) and test, f"compose {service}: no healthcheck test"
    command = " ".join(str(part) for part in test)
    assert "sigverify_common.healthcheck" in command, (
        f"compose {service}: healthcheck must use the gRPC health probe"
    )
    grpc, _ = PORTS[service]
    assert f"127.0.0.1:{grpc}" in command, f"compose {service}: healthcheck must probe {grpc}"
    build = svc.get("build") or {}
    assert build.get("dockerfile") == "deploy/Dockerfile", (
        f"compose {service}: must build from deploy/Dockerfile"
    )
    assert (build.get("args") or {}).get("SERVICE") == service, (
        f"compose {service}: build arg SERVICE must be {service!r}"
    )


def test_compose_matching_runs_replicas_without_fixed_host_ports() -> None:
    svc = compose_service("matching")
    replicas = (svc.get("deploy") or {}).get("replicas", 1)
    assert replicas > 1, "compose matching must run more than one replica"
    assert "container_name" not in svc, "a container_name stops matching from scaling"
    for port in svc.get("ports") or []:
        published = port.get("published") if isinstance(port, dict) else (
            str(port).rsplit(":", 1)[0] if ":" in str(port) else None
        )
        assert not published, f"compose matching publishes a fixed host port ({port})"


def test_compose_kafka_runs_kraft_without_zookeeper() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        assert "zookeeper" not in name.lower(), f"compose has a ZooKeeper service {name!r}"
        assert "zookeeper" not in str(svc.get("image", "")).lower(), (
            f"compose service {name} runs a ZooKeeper image"
        )
    env = compose_env("kafka")
    roles = {r.strip() for r in str(env.get("KAFKA_PROCESS_ROLES") or "").split(",")}
    assert {"broker", "controller"} <= roles, (
        f"compose kafka: KAFKA_PROCESS_ROLES must include broker and controller, got {roles}"
    )
    for key in ("KAFKA_NODE_ID", "KAFKA_CONTROLLER_QUORUM_VOTERS",
                "KAFKA_CONTROLLER_LISTENER_NAMES", "KAFKA_LISTENERS"):
        assert env.get(key), f"compose kafka: {key} must be set for KRaft"
    assert "kafka:9092" in str(env.get("KAFKA_ADVERTISED_LISTENERS")), (
        "compose kafka must advertise kafka:9092 (the services' KAFKA_BOOTSTRAP_SERVERS)"
    )
    zk = [key for key in env if "ZOOKEEPER" in key.upper()]
    assert not zk, f"compose kafka still configures ZooKeeper: {zk}"
    for service in SERVICES:
        assert compose_env(service).get("KAFKA_BOOTSTRAP_SERVERS") == "kafka:9092", (
            f"compose {service} must reach the broker at kafka:9092"
        )


# ----------------------------------------------------------------------------- kubernetes


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_container_gets_required_env(service: str) -> None:
    env = k8s_env(service)
    missing = [name for name in required_env(service) if name not in env]
    assert not missing, f"deploy/k8s Deployment {service} does not set {missing}"
    empty = [name for name in required_env(service) if env[name] == ""]
    assert not empty, f"deploy/k8s Deployment {service} sets {empty} to an empty value"


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_probes_grpc_health_on_its_grpc_port(service: str) -> None:
    env = k8s_env(service)
    grpc, metrics = PORTS[service]
    assert env.get("GRPC_PORT") == str(grpc), f"k8s {service}: GRPC_PORT should be {grpc}"
    assert env.get("METRICS_PORT") == str(metrics), (
        f"k8s {service}: METRICS_PORT should be {metrics}"
    )
    c = container(service)
    for probe_name in ("livenessProbe", "readinessProbe"):
        probe = c.get(probe_name)
        assert probe, f"k8s {service}: no {probe_name}"
        assert "grpc" in probe, f"k8s {service}: {probe_name} must be a native gRPC probe"
        assert probe["grpc"].get("port") == int(env["GRPC_PORT"]), (
            f"k8s {service}: {probe_name} probes port {probe['grpc'].get('port')}, "
            f"but GRPC_PORT is {env['GRPC_PORT']}"
        )
        # Readiness follows Postgres and Kafka (overall health, name ""); liveness only asks
        # whether the process runs, so a dependency outage does not restart every pod.
        want = LIVENESS if probe_name == "livenessProbe" else ""
        assert probe["grpc"].get("service", "") == want, (
            f"k8s {service}: {probe_name} must check health service name {want!r}"
        )
    startup = c.get("startupProbe")
    if startup:
        assert startup.get("grpc", {}).get("port") == grpc, f"k8s {service}: startupProbe port"
    container_ports = {p["containerPort"] for p in c.get("ports") or []}
    assert {grpc, metrics} <= container_ports, (
        f"k8s {service}: container must declare ports {grpc} and {metrics}"
    )
    pod = deployment(service)["spec"]["template"]
    annotations = pod.get("metadata", {}).get("annotations") or {}
    assert annotations.get("prometheus.io/scrape") == "true", f"k8s {service}: not scraped"
    assert annotations.get("prometheus.io/port") == str(metrics), (
        f"k8s {service}: prometheus.io/port should be {metrics}"
    )


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_container_is_locked_down_and_bounded(service: str) -> None:
    pod_spec = deployment(service)["spec"]["template"]["spec"]
    pod_sc = pod_spec.get("securityContext") or {}
    c = container(service)
    sc = c.get("securityContext") or {}

    def effective(key: str) -> Any:
        return sc.get(key, pod_sc.get(key))

    assert effective("runAsNonRoot") is True, f"k8s {service}: runAsNonRoot must be true"
    assert effective("runAsUser") == NON_ROOT_UID, (
        f"k8s {service}: runAsUser must be {NON_ROOT_UID} (the image's user)"
    )
    assert sc.get("readOnlyRootFilesystem") is True, (
        f"k8s {service}: readOnlyRootFilesystem must be true"
    )
    assert sc.get("allowPrivilegeEscalation") is False, (
        f"k8s {service}: allowPrivilegeEscalation must be false"
    )
    assert "ALL" in (sc.get("capabilities") or {}).get("drop", []), (
        f"k8s {service}: capabilities must drop ALL"
    )
    resources = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            assert (resources.get(kind) or {}).get(resource), (
                f"k8s {service}: resources.{kind}.{resource} is not set"
            )
    assert pod_spec.get("terminationGracePeriodSeconds") == 30, (
        f"k8s {service}: terminationGracePeriodSeconds should be 30"
    )
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    tmp = [m for m in c.get("volumeMounts") or [] if m.get("mountPath") == "/tmp"]
    assert tmp and "emptyDir" in volumes.get(tmp[0]["name"], {}), (
        f"k8s {service}: /tmp must be a writable emptyDir (the root filesystem is read-only)"
    )


def test_k8s_matching_has_replicas_and_the_most_memory() -> None:
    assert deployment("matching")["spec"].get("replicas", 1) >= 2, (
        "k8s matching must run at least two replicas"
    )

    def memory(service: str) -> float:
        return memory_bytes(container(service)["resources"]["requests"]["memory"])

    for other in SERVICES:
        if other != "matching":
            assert memory("matching") > memory(other), (
                f"k8s matching (holds the roll index) should request more memory than {other}"
            )


def test_k8s_services_and_kustomization_cover_every_deployment() -> None:
    services = k8s_objects("Service")
    for service in SERVICES:
        grpc, _ = PORTS[service]
        assert service in services, f"deploy/k8s has no Service {service!r}"
        ports = {p["port"] for p in services[service]["spec"]["ports"]}
        assert grpc in ports, f"k8s Service {service} does not expose {grpc}"
        selector = services[service]["spec"]["selector"]
        labels = deployment(service)["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), (
            f"k8s Service {service} does not select the Deployment's pods"
        )
    for name, doc in (*k8s_objects("Deployment").items(), *k8s_objects("Service").items()):
        assert doc["metadata"].get("namespace") == "sigverify", f"{name}: namespace sigverify"
    assert "sigverify" in k8s_objects("Namespace"), "deploy/k8s has no Namespace sigverify"
    kustomizations = [doc for _, doc in k8s_docs() if doc.get("kind") == "Kustomization"]
    assert len(kustomizations) == 1, "deploy/k8s needs one kustomization.yaml"
    resources = kustomizations[0].get("resources") or []
    for resource in resources:
        assert (K8S_DIR / resource).is_file(), f"kustomization lists missing {resource}"
    listed = {file for file, doc in k8s_docs() if file in resources}
    for file, doc in k8s_docs():
        if doc.get("kind") in {"Deployment", "Service", "ConfigMap", "Namespace"}:
            assert file in listed, f"kustomization.yaml does not list {file}"


# ----------------------------------------------------------------------------- TLS layers

#: What each layer turns on: TLS needs certificate and key; mutual TLS adds the client CA.
TLS_ENV = ("GRPC_TLS_CERT", "GRPC_TLS_KEY")
MTLS_ENV = ("GRPC_TLS_CLIENT_CA",)
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
PROBE_MODULE = ["python", "-m", "sigverify_common.healthcheck"]


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers every variable asked for (``get``, ``in``, ``[]``)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@cache
def config_reads(service: str) -> frozenset[str]:
    """Every variable the service's ``Config.from_env`` reads."""
    module = importlib.import_module(f"sigverify_{service}.config")
    env = RecordingEnv({name: "1" for name in required_env(service)})
    module.Config.from_env(env)
    assert set(TLS_ENV + MTLS_ENV) <= env.asked, (
        f"sigverify_{service}.config no longer reads {set(TLS_ENV + MTLS_ENV) - env.asked}"
    )
    return frozenset(env.asked)


@cache
def probe_reads() -> frozenset[str]:
    """Every variable the health probe reads (the service's GRPC_TLS_* and its own)."""
    env = RecordingEnv({"GRPC_TLS_CERT": "/nonexistent/tls.crt", "GRPC_TLS_KEY": "/nonexistent/tls.key",
                        "GRPC_TLS_CLIENT_CA": "/nonexistent/ca.crt"})
    healthcheck.resolve_tls("127.0.0.1:1", env)
    return frozenset(env.asked)


@cache
def tls_secret_example() -> Doc:
    assert TLS_SECRET_EXAMPLE.is_file(), f"{TLS_SECRET_EXAMPLE.relative_to(ROOT)} is missing"
    doc = yaml.safe_load(TLS_SECRET_EXAMPLE.read_text(encoding="utf-8"))
    assert doc.get("kind") == "Secret" and doc.get("type") == "kubernetes.io/tls", (
        "the TLS Secret example must be a kubernetes.io/tls Secret"
    )
    return doc


def tls_secret_keys() -> set[str]:
    doc = tls_secret_example()
    return {*(doc.get("data") or {}), *(doc.get("stringData") or {})}


@cache
def overlay(name: str) -> tuple[Doc, dict[str, Doc]]:
    """An overlay's kustomization and its Deployment patches by name."""
    directory = K8S_OVERLAYS_DIR / name
    kustomization = directory / "kustomization.yaml"
    assert kustomization.is_file(), f"{kustomization.relative_to(ROOT)} is missing"
    kust = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
    patches: dict[str, Doc] = {}
    for entry in kust.get("patches") or []:
        path = directory / entry["path"]
        assert path.is_file(), f"overlay {name} lists the missing patch {entry['path']}"
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc.get("kind") == "Deployment":
                assert doc["metadata"]["name"] not in patches, f"overlay {name}: two patches"
                patches[doc["metadata"]["name"]] = doc
    return kust, patches


def overlay_container(name: str, service: str) -> tuple[Doc, Doc]:
    """(pod spec, container) of the overlay's patch for ``service``."""
    _, patches = overlay(name)
    assert service in patches, f"overlay {name} does not patch Deployment {service}"
    pod = patches[service]["spec"]["template"]["spec"]
    containers = [c for c in pod.get("containers") or [] if c["name"] == service]
    assert len(containers) == 1, f"overlay {name}: patch {service} must name container {service!r}"
    return pod, containers[0]


def check_probe_command(command: list[Any], service: str, what: str, liveness: bool) -> float:
    """The command runs the health probe with TLS on the service's port; its --timeout."""
    command = [str(part) for part in command]
    assert command[:3] == PROBE_MODULE, f"{what}: must run {' '.join(PROBE_MODULE)}"
    try:
        args = healthcheck.parser().parse_args(command[3:])
    except SystemExit:
        pytest.fail(f"{what}: the health probe does not accept {command[3:]}")
    grpc, _ = PORTS[service]
    assert args.addr == f"127.0.0.1:{grpc}", f"{what}: must probe 127.0.0.1:{grpc}"
    assert args.tls or args.ca, f"{what}: must ask for TLS (--tls or --ca)"
    want = LIVENESS if liveness else ""
    assert args.service == want, f"{what}: must check health service name {want!r}"
    return float(args.timeout)


def test_k8s_tls_overlays_build_on_the_base() -> None:
    tls, tls_patches = overlay("tls")
    mtls, mtls_patches = overlay("mtls")
    base = [(K8S_OVERLAYS_DIR / "tls" / r).resolve() for r in tls.get("resources") or []]
    assert base == [K8S_DIR.resolve()], "overlay tls must build on deploy/k8s alone"
    on_tls = [(K8S_OVERLAYS_DIR / "mtls" / r).resolve() for r in mtls.get("resources") or []]
    assert on_tls == [(K8S_OVERLAYS_DIR / "tls").resolve()], "overlay mtls must build on tls"
    assert set(tls_patches) == set(SERVICES) == set(mtls_patches), (
        "the TLS overlays must patch every service's Deployment"
    )
    for name, patches in (("tls", tls_patches), ("mtls", mtls_patches)):
        for service, doc in patches.items():
            assert doc["metadata"].get("namespace") == "sigverify", f"{name}/{service}: namespace"
    listed = " ".join(str(r) for r in tls.get("resources") or [])
    assert TLS_SECRET_EXAMPLE.name not in listed, (
        "the placeholder TLS Secret must not be applied by the overlay"
    )
    assert {"tls.crt", "tls.key", "ca.crt"} <= tls_secret_keys(), (
        "the TLS Secret example must show tls.crt, tls.key and ca.crt"
    )


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_tls_overlays_mount_the_secret_and_set_what_the_service_reads(service: str) -> None:
    known = config_reads(service) | probe_reads()
    pod, c = overlay_container("tls", service)
    _, mtls_c = overlay_container("mtls", service)
    env = {var["name"]: var.get("value") for var in c.get("env") or []}
    mtls_env = {var["name"]: var.get("value") for var in mtls_c.get("env") or []}
    for layer, names, wanted in (("tls", env, TLS_ENV), ("mtls", mtls_env, MTLS_ENV)):
        unknown = set(names) - known
        assert not unknown, f"overlay {layer} {service} sets {unknown}, which nothing reads"
        missing = set(wanted) - set(names)
        assert not missing, f"overlay {layer} {service} does not set {missing}"
    secret_name = tls_secret_example()["metadata"]["name"]
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mounts = {m["mountPath"].rstrip("/"): m for m in c.get("volumeMounts") or []}
    for name, path in {**env, **mtls_env}.items():
        assert path, f"overlay {service}: {name} must be a file path"
        directory, _, file = str(path).rpartition("/")
        assert directory in mounts, f"overlay tls {service}: {name}={path} is not under a mount"
        mount = mounts[directory]
        assert mount.get("readOnly") is True, f"overlay tls {service}: mount it read-only"
        volume = volumes.get(mount["name"], {})
        assert (volume.get("secret") or {}).get("secretName") == secret_name, (
            f"overlay tls {service}: {name} must come from the Secret {secret_name}"
        )
        assert file in tls_secret_keys(), (
            f"overlay {service}: {name} reads {file}, which the Secret example does not hold"
        )


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_tls_overlay_probes_run_the_health_probe_with_tls(service: str) -> None:
    base = container(service)
    _, c = overlay_container("tls", service)
    for probe_name in PROBES:
        probe = c.get(probe_name)
        what = f"overlay tls {service} {probe_name}"
        assert probe, f"{what}: missing (native gRPC probes cannot speak TLS)"
        if "grpc" in (base.get(probe_name) or {}):
            assert "grpc" in probe and probe["grpc"] is None, (
                f"{what}: must delete the base's gRPC handler (grpc: null)"
            )
        command = (probe.get("exec") or {}).get("command")
        assert isinstance(command, list), f"{what}: must be an exec probe"
        timeout = check_probe_command(command, service, what, probe_name == "livenessProbe")
        assert probe.get("timeoutSeconds", 1) > timeout, (
            f"{what}: timeoutSeconds must exceed the probe's own --timeout ({timeout} s)"
        )
    _, mtls_c = overlay_container("mtls", service)
    assert not set(PROBES) & set(mtls_c), f"overlay mtls {service}: probes belong to tls"


def test_k8s_tls_overlays_render_with_kustomize() -> None:
    kubectl, kustomize = shutil.which("kubectl"), shutil.which("kustomize")
    if kustomize:
        command = [kustomize, "build"]
    elif kubectl:
        command = [kubectl, "kustomize"]
    else:
        pytest.skip("neither kustomize nor kubectl is installed to render the overlays")
    out = subprocess.run([*command, str(K8S_OVERLAYS_DIR / "mtls")], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, f"kustomize cannot build deploy/k8s-overlays/mtls: {out.stderr}"
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d and d.get("kind") == "Deployment"]
    assert {d["metadata"]["name"] for d in rendered} == set(SERVICES)
    for doc in rendered:
        service = doc["metadata"]["name"]
        pod = doc["spec"]["template"]["spec"]
        (c,) = [c for c in pod["containers"] if c["name"] == service]
        names = {var["name"] for var in c.get("env") or []}
        assert set(TLS_ENV + MTLS_ENV) <= names, f"rendered {service}: TLS env missing"
        for probe_name in PROBES:
            probe = c[probe_name]
            assert set(probe) & {"grpc", "httpGet", "tcpSocket"} == set(), (
                f"rendered {service} {probe_name}: more than the exec handler"
            )
            check_probe_command(probe["exec"]["command"], service,
                                f"rendered {service} {probe_name}", probe_name == "livenessProbe")
        assert any((v.get("secret") or {}).get("secretName") == "sigverify-grpc-tls"
                   for v in pod.get("volumes") or []), f"rendered {service}: no TLS Secret volume"


@pytest.mark.parametrize("service", SERVICES)
def test_compose_tls_overrides_mount_certificates_and_probe_with_tls(service: str) -> None:
    known = config_reads(service) | probe_reads()
    files = {}
    for path in (COMPOSE_TLS_FILE, COMPOSE_MTLS_FILE):
        assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        unknown = set(doc.get("services") or {}) - set(compose()["services"])
        assert not unknown, f"{path.name} overrides services the stack does not have: {unknown}"
        assert service in (doc.get("services") or {}), f"{path.name} does not cover {service}"
        files[path.name] = doc["services"][service]
    tls, mtls = files[COMPOSE_TLS_FILE.name], files[COMPOSE_MTLS_FILE.name]
    env = {str(k): str(v) for k, v in (tls.get("environment") or {}).items()}
    mtls_env = {str(k): str(v) for k, v in (mtls.get("environment") or {}).items()}
    for name, names, wanted in ((COMPOSE_TLS_FILE.name, env, TLS_ENV),
                                (COMPOSE_MTLS_FILE.name, mtls_env, MTLS_ENV)):
        unknown = set(names) - known
        assert not unknown, f"{name} {service} sets {unknown}, which nothing reads"
        missing = set(wanted) - set(names)
        assert not missing, f"{name} {service} does not set {missing}"
    volumes = [v for v in tls.get("volumes") or [] if isinstance(v, dict)]
    targets = {str(v["target"]).rstrip("/"): v for v in volumes}
    for name, path in {**env, **mtls_env}.items():
        directory, _, file = path.rpartition("/")
        assert directory in targets, f"compose {service}: {name}={path} is not under a mount"
        volume = targets[directory]
        assert volume.get("read_only") is True, f"compose {service}: mount {directory} read-only"
        assert "${SIGVERIFY_TLS_DIR" in str(volume.get("source")), (
            f"compose {service}: the certificates come from $SIGVERIFY_TLS_DIR"
        )
        assert file in tls_secret_keys(), (
            f"compose {service}: {name} reads {file}; use the Kubernetes Secret's file names"
        )
    test = (tls.get("healthcheck") or {}).get("test")
    assert isinstance(test, list) and test[0] == "CMD", f"compose {service}: healthcheck test"
    check_probe_command(test[1:], service, f"{COMPOSE_TLS_FILE.name} {service} healthcheck",
                        liveness=False)
    assert "healthcheck" not in mtls, f"{COMPOSE_MTLS_FILE.name} {service}: probes belong to tls"


# ----------------------------------------------------------------------------- images, scraping


def test_dockerfiles_select_the_service_and_run_as_non_root() -> None:
    main = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert "ARG SERVICE" in main and "ENV SERVICE=${SERVICE}" in main, (
        "deploy/Dockerfile must take ARG SERVICE into ENV SERVICE"
    )
    assert f"USER {NON_ROOT_UID}" in main, f"deploy/Dockerfile must run as uid {NON_ROOT_UID}"
    assert "FROM python:3.11-slim" in main or "PYTHON_IMAGE=python:3.11-slim" in main
    for service in SERVICES:
        path = ROOT / "services" / service / "Dockerfile"
        assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
        text = path.read_text(encoding="utf-8")
        assert f"ENV SERVICE={service}\n" in text, f"{path.relative_to(ROOT)} must set SERVICE"
        assert f"127.0.0.1:{PORTS[service][0]}" in text, (
            f"{path.relative_to(ROOT)}: HEALTHCHECK must probe its gRPC port"
        )


def test_prometheus_scrapes_every_service_metrics_port() -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text(encoding="utf-8"))
    targets: set[tuple[str, int]] = set()
    for job in config["scrape_configs"]:
        for node in _walk(job):
            if isinstance(node, dict) and "names" in node and "port" in node:
                targets.update((name, int(node["port"])) for name in node["names"])
            if isinstance(node, dict) and "targets" in node:
                for target in node["targets"]:
                    host, _, port = str(target).rpartition(":")
                    targets.add((host, int(port)))
    for service, (_, metrics) in PORTS.items():
        assert (service, metrics) in targets, (
            f"deploy/prometheus/prometheus.yml does not scrape {service}:{metrics}"
        )
