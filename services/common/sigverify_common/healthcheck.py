"""Container health probe: exits 0 when the gRPC health service at --addr says SERVING.

    python -m sigverify_common.healthcheck --addr 127.0.0.1:50051 [--service liveness]

Anything else (NOT_SERVING, an unknown service name, no answer within --timeout, a TLS
handshake that fails, a certificate file that cannot be read) exits 1 with the reason on
stderr; never 2, which Docker's HEALTHCHECK reserves.

Plaintext unless something asks for TLS. Each option falls back to the variable in brackets:

    --tls                    speak TLS
    --ca PATH                trust this CA certificate (PEM)        [SIGVERIFY_HEALTH_CA]
    --cert PATH --key PATH   present this client certificate        [SIGVERIFY_HEALTH_CERT,
                             (mutual TLS)                            SIGVERIFY_HEALTH_KEY]
    --server-name NAME       verify the server's certificate for    [SIGVERIFY_HEALTH_SERVER_NAME]
                             NAME, not for the host in --addr

Any of them turns TLS on. The probe runs in the service's own container, so it also follows
the service's TLS settings: when ``GRPC_TLS_CERT`` is set (the service serves TLS only) the
probe speaks TLS and, for whatever the options above leave unset,

- trusts that certificate itself (enough for a self-signed certificate and for one a CA
  signed: the chain is anchored at the certificate the service presents);
- verifies it for a name the certificate carries: the probe dials 127.0.0.1 while the
  certificate names the service;
- when ``GRPC_TLS_CLIENT_CA`` is also set (the service requires client certificates),
  presents ``GRPC_TLS_CERT``/``GRPC_TLS_KEY`` as its own client certificate. That works only
  when the client CA signed it and it allows client authentication (no extendedKeyUsage, or
  one with clientAuth); otherwise set ``SIGVERIFY_HEALTH_CERT``/``SIGVERIFY_HEALTH_KEY`` to a
  client certificate that does.

Without ``GRPC_TLS_CERT`` and with no CA given, ``--tls`` trusts the system's roots.
"""

from __future__ import annotations

import _ssl
import argparse
import ipaddress
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sigverify_common.errors import ConfigError

SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True, slots=True)
class ProbeTLS:
    """How the probe speaks TLS: PEM file paths (empty: not given) and the name to verify."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials from the files; the system's roots when no CA is given."""

        def read(name: str, path: str) -> bytes | None:
            if not path:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read the {name} {path!r}: {exc.strerror}") from None

        return grpc.ssl_channel_credentials(
            root_certificates=read("CA certificate", self.ca),
            private_key=read("client key", self.key),
            certificate_chain=read("client certificate", self.cert),
        )

    def options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def _host(addr: str) -> str:
    """The host part of ``host:port`` (``[v6]:port`` too)."""
    host = addr.rsplit(":", 1)[0] if ":" in addr else addr
    return host.strip("[]")


def certificate_name(cert_path: str, host: str) -> str:
    """A name that ``cert_path``'s (first) certificate is valid for, to verify it under when
    dialling ``host``: empty when the certificate already covers ``host`` or cannot be read.

    The first DNS name in subjectAltName (a wildcard ``*.x`` gives ``healthcheck.x``), else
    the subject's common name.
    """
    # The standard library's certificate decoder (CPython's own tests use it); it returns
    # the same dictionary as SSLSocket.getpeercert(). Absent elsewhere: no override.
    decode = getattr(_ssl, "_test_decode_cert", None)
    if decode is None:
        return ""
    try:
        info: dict[str, Any] = decode(cert_path)
    except (OSError, ValueError):  # ssl.SSLError is an OSError
        return ""
    sans: list[tuple[str, str]] = list(info.get("subjectAltName", ()))
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for kind, value in sans:
        if kind == "DNS" and value.lower() == host.lower():
            return ""
        if kind == "IP Address" and ip is not None:
            try:
                if ipaddress.ip_address(value.strip()) == ip:
                    return ""
            except ValueError:
                continue
    for kind, value in sans:
        if kind == "DNS":
            return "healthcheck." + value[2:] if value.startswith("*.") else value
    for rdn in info.get("subject", ()):
        for attribute, value in rdn:
            if attribute == "commonName":
                return str(value)
    return ""


def resolve_tls(addr: str, env: Mapping[str, str], *, tls: bool = False, ca: str = "",
                cert: str = "", key: str = "", server_name: str = "") -> ProbeTLS | None:
    """The probe's TLS settings from its options, then ``SIGVERIFY_HEALTH_*``, then the
    service's own ``GRPC_TLS_*`` (see the module docstring); None for plaintext."""

    def var(name: str) -> str:
        return env.get(name, "").strip()

    ca = ca or var("SIGVERIFY_HEALTH_CA")
    cert = cert or var("SIGVERIFY_HEALTH_CERT")
    key = key or var("SIGVERIFY_HEALTH_KEY")
    server_name = server_name or var("SIGVERIFY_HEALTH_SERVER_NAME")
    own_cert, own_key = var("GRPC_TLS_CERT"), var("GRPC_TLS_KEY")
    if own_cert:
        ca = ca or own_cert
        if not (cert or key) and var("GRPC_TLS_CLIENT_CA"):
            cert, key = own_cert, own_key
        server_name = server_name or certificate_name(own_cert, _host(addr))
    elif not (tls or ca or cert or key or server_name):
        return None
    if bool(cert) != bool(key):
        raise ConfigError("a client certificate needs both --cert and --key "
                          "(SIGVERIFY_HEALTH_CERT and SIGVERIFY_HEALTH_KEY)")
    return ProbeTLS(ca=ca, cert=cert, key=key, server_name=server_name)


def probe(addr: str, service: str = "", timeout: float = 3.0,
          tls: ProbeTLS | None = None) -> tuple[bool, str]:
    """(SERVING?, what was seen): one Check call on ``addr`` with a deadline."""
    channel = (grpc.insecure_channel(addr) if tls is None
               else grpc.secure_channel(addr, tls.credentials(), options=tls.options()))
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            return False, f"{code.name if code else 'error'}: {details}"
    return bool(reply.status == SERVING), str(
        health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def check(addr: str, service: str = "", timeout: float = 3.0,
          tls: ProbeTLS | None = None) -> bool:
    return probe(addr, service, timeout, tls)[0]


def parser() -> argparse.ArgumentParser:
    """The probe's command line (tests check the deploy manifests' probes against it)."""
    p = argparse.ArgumentParser(
        prog="python -m sigverify_common.healthcheck", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--addr", required=True, help="host:port, e.g. 127.0.0.1:50051")
    p.add_argument("--service", default="",
                        help="health service name (default: overall; 'liveness' for liveness)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    p.add_argument("--tls", action="store_true", help="speak TLS")
    p.add_argument("--ca", default="", metavar="PATH", help="trust this CA (PEM)")
    p.add_argument("--cert", default="", metavar="PATH", help="client certificate (PEM)")
    p.add_argument("--key", default="", metavar="PATH", help="client key (PEM)")
    p.add_argument("--server-name", default="", metavar="NAME",
                        help="name to verify the server's certificate for")
    return p


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    name = f"{args.addr} {args.service or '(overall)'}"
    try:
        tls = resolve_tls(args.addr, os.environ if env is None else env, tls=args.tls,
                          ca=args.ca, cert=args.cert, key=args.key, server_name=args.server_name)
        ok, seen = probe(args.addr, args.service, args.timeout, tls)
    except ConfigError as exc:
        ok, seen = False, str(exc)
    if not ok:
        sys.stderr.write(f"healthcheck {name}: {seen}\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
