"""The container health probe against real gRPC servers: plaintext, TLS and mutual TLS.

Each server is a real ``grpc.server`` on 127.0.0.1:0 with the standard health servicer and
the services' own ``server_credentials``; the certificates are made for the session with
the ``openssl`` command (the test is skipped, saying so, where there is none).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sigverify_common import healthcheck
from sigverify_common.grpc_server import LIVENESS, server_credentials

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_NAME = "intake.sigverify.svc"  # what the CA-signed server certificate names


@dataclass(frozen=True)
class Certs:
    """PEM files: a CA; a server certificate it signed (serverAuth only, for SERVICE_NAME);
    a client certificate it signed (clientAuth); a self-signed certificate for ``tally``
    (no extendedKeyUsage, so it serves as server and client certificate alike); a
    self-signed wildcard certificate that also names 127.0.0.1."""

    ca: str
    server: str
    server_key: str
    client: str
    client_key: str
    self_signed: str
    self_signed_key: str
    wildcard: str


def _openssl(d: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make the test certificates with")
    d = tmp_path_factory.mktemp("certs")
    _openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", "1", "-subj", "/CN=sigverify test CA")
    for name, ext in (("server", f"subjectAltName=DNS:{SERVICE_NAME},DNS:intake\n"
                                 "extendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text(ext, encoding="utf-8")
        _openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN=sigverify {name}")
        _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "1",
                 "-extfile", f"{name}.ext")
    _openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "self.key",
             "-out", "self.pem", "-days", "1", "-subj", "/CN=tally",
             "-addext", "subjectAltName=DNS:tally")
    _openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "wild.key",
             "-out", "wild.pem", "-days", "1", "-subj", "/CN=sigverify",
             "-addext", "subjectAltName=DNS:*.sigverify.svc,IP:127.0.0.1")
    return Certs(*(str(d / f) for f in ("ca.pem", "server.pem", "server.key", "client.pem",
                                         "client.key", "self.pem", "self.key", "wild.pem")))


@dataclass(frozen=True)
class Server:
    addr: str
    servicer: health.HealthServicer


ServerFactory = Callable[..., AbstractContextManager[Server]]


@pytest.fixture
def serve() -> ServerFactory:
    """``with serve(cert, key, client_ca) as s``: a health server, TLS when ``cert`` is given,
    answering SERVING overall and for ``liveness``."""

    @contextmanager
    def run(cert: str = "", key: str = "", client_ca: str = "") -> Iterator[Server]:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        servicer.set("", SERVING)
        servicer.set(LIVENESS, SERVING)
        port = (server.add_secure_port("127.0.0.1:0", server_credentials(cert, key, client_ca))
                if cert else server.add_insecure_port("127.0.0.1:0"))
        server.start()
        try:
            yield Server(f"127.0.0.1:{port}", servicer)
        finally:
            server.stop(None)

    return run


def probe(addr: str, *options: str, env: dict[str, str] | None = None) -> int:
    return healthcheck.main(["--addr", addr, "--timeout", "5", *options], env or {})


# ----------------------------------------------------------------------------- plaintext


def test_plaintext_is_the_default_and_only_serving_passes(
        serve: ServerFactory, capsys: pytest.CaptureFixture[str]) -> None:
    with serve() as s:
        assert probe(s.addr) == 0
        assert healthcheck.check(s.addr)
        s.servicer.set("", NOT_SERVING)
        assert probe(s.addr) == 1
        assert "NOT_SERVING" in capsys.readouterr().err
        # Liveness is its own name: still SERVING while overall health is not.
        assert probe(s.addr, "--service", LIVENESS) == 0
        assert probe(s.addr, "--service", "no-such-service") == 1
        assert "NOT_FOUND" in capsys.readouterr().err


def test_nothing_listening_fails(serve: ServerFactory) -> None:
    with serve() as s:
        addr = s.addr
    assert probe(addr, "--timeout", "1") == 1


# ----------------------------------------------------------------------------- TLS


def test_tls_server_needs_a_tls_probe_that_trusts_its_ca_and_name(
        serve: ServerFactory, certs: Certs, capsys: pytest.CaptureFixture[str]) -> None:
    with serve(certs.server, certs.server_key) as s:
        # Plaintext is not spoken at all.
        assert probe(s.addr) == 1
        assert "UNAVAILABLE" in capsys.readouterr().err
        # The system's roots do not know the test CA.
        assert probe(s.addr, "--tls", "--server-name", SERVICE_NAME) == 1
        # The certificate names the service, not 127.0.0.1.
        assert probe(s.addr, "--ca", certs.ca) == 1
        assert probe(s.addr, "--ca", certs.ca, "--server-name", SERVICE_NAME) == 0
        assert probe(s.addr, env={"SIGVERIFY_HEALTH_CA": certs.ca,
                                  "SIGVERIFY_HEALTH_SERVER_NAME": SERVICE_NAME}) == 0
        s.servicer.set("", NOT_SERVING)
        assert probe(s.addr, "--ca", certs.ca, "--server-name", SERVICE_NAME) == 1
        assert "NOT_SERVING" in capsys.readouterr().err


def test_in_the_services_container_the_probe_follows_its_tls_settings(
        serve: ServerFactory, certs: Certs) -> None:
    """GRPC_TLS_CERT alone: TLS, trusting that certificate (here one a CA signed) under a
    name it carries; no option needed."""
    own = {"GRPC_TLS_CERT": certs.server, "GRPC_TLS_KEY": certs.server_key}
    with serve(certs.server, certs.server_key) as s:
        assert probe(s.addr, env=own) == 0
        assert probe(s.addr, "--tls", env=own) == 0
        assert probe(s.addr, "--service", LIVENESS, env=own) == 0
        # An explicit CA and name win over what the probe would work out.
        assert probe(s.addr, env={**own, "SIGVERIFY_HEALTH_CA": certs.self_signed}) == 1
        assert probe(s.addr, "--server-name", "wrong.example", env=own) == 1
        s.servicer.set("", NOT_SERVING)
        assert probe(s.addr, env=own) == 1
    with serve(certs.self_signed, certs.self_signed_key) as s:
        assert probe(s.addr, env={"GRPC_TLS_CERT": certs.self_signed,
                                  "GRPC_TLS_KEY": certs.self_signed_key}) == 0


def test_tls_probe_of_a_plaintext_server_fails(serve: ServerFactory, certs: Certs) -> None:
    with serve() as s:
        assert probe(s.addr, "--ca", certs.ca, "--server-name", SERVICE_NAME) == 1


# ----------------------------------------------------------------------------- mutual TLS


def test_mutual_tls_needs_a_client_certificate(serve: ServerFactory, certs: Certs) -> None:
    tls = ("--ca", certs.ca, "--server-name", SERVICE_NAME)
    with serve(certs.server, certs.server_key, certs.ca) as s:
        assert probe(s.addr, *tls) == 1
        assert probe(s.addr, *tls, "--cert", certs.client, "--key", certs.client_key) == 0
        assert probe(s.addr, *tls, env={"SIGVERIFY_HEALTH_CERT": certs.client,
                                        "SIGVERIFY_HEALTH_KEY": certs.client_key}) == 0
        # A client certificate the server's CA did not sign is refused.
        assert probe(s.addr, *tls, "--cert", certs.self_signed,
                     "--key", certs.self_signed_key) == 1

        own = {"GRPC_TLS_CERT": certs.server, "GRPC_TLS_KEY": certs.server_key,
               "GRPC_TLS_CLIENT_CA": certs.ca}
        # The server's own certificate allows server authentication only: presented as a
        # client certificate it is refused, so SIGVERIFY_HEALTH_CERT/KEY must name one.
        assert probe(s.addr, env=own) == 1
        assert probe(s.addr, env={**own, "SIGVERIFY_HEALTH_CERT": certs.client,
                                  "SIGVERIFY_HEALTH_KEY": certs.client_key}) == 0
        s.servicer.set("", NOT_SERVING)
        assert probe(s.addr, *tls, "--cert", certs.client, "--key", certs.client_key) == 1


def test_mutual_tls_with_a_certificate_good_for_both_ends(
        serve: ServerFactory, certs: Certs) -> None:
    own = {"GRPC_TLS_CERT": certs.self_signed, "GRPC_TLS_KEY": certs.self_signed_key,
           "GRPC_TLS_CLIENT_CA": certs.self_signed}
    with serve(certs.self_signed, certs.self_signed_key, certs.self_signed) as s:
        assert probe(s.addr, env=own) == 0
        # Without the client certificate the handshake fails.
        assert probe(s.addr, "--ca", certs.self_signed, "--server-name", "tally") == 1


# ----------------------------------------------------------------------------- setup errors


def test_setup_errors_exit_1_with_the_reason(
        certs: Certs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "missing.pem")
    assert probe("127.0.0.1:1", "--ca", missing) == 1
    assert "cannot read the CA certificate" in capsys.readouterr().err
    assert probe("127.0.0.1:1", "--cert", certs.client) == 1
    assert "--cert and --key" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        healthcheck.main([], {})
    assert exc.value.code != 0


def test_certificate_name(certs: Certs, tmp_path: Path) -> None:
    assert healthcheck.certificate_name(certs.server, "127.0.0.1") == SERVICE_NAME
    assert healthcheck.certificate_name(certs.server, "intake") == ""  # already covered
    assert healthcheck.certificate_name(certs.client, "127.0.0.1") == "sigverify client"  # CN
    assert healthcheck.certificate_name(certs.wildcard, "127.0.0.1") == ""  # IP covered
    assert healthcheck.certificate_name(certs.wildcard, "::1") == "healthcheck.sigverify.svc"
    assert healthcheck.certificate_name(str(tmp_path / "missing.pem"), "127.0.0.1") == ""
    assert healthcheck.resolve_tls("127.0.0.1:1", {}) is None
    resolved = healthcheck.resolve_tls("127.0.0.1:1", {"GRPC_TLS_CERT": certs.server,
                                                       "GRPC_TLS_KEY": certs.server_key})
    assert resolved == healthcheck.ProbeTLS(ca=certs.server, server_name=SERVICE_NAME)
