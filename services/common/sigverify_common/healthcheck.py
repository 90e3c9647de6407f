"""Container health probe: exits 0 when the gRPC health service at --addr says SERVING.

    python -m sigverify_common.healthcheck --addr 127.0.0.1:50051
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(addr: str, service: str = "", timeout: float = 3.0) -> bool:
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", required=True)
    parser.add_argument("--service", default="")
    args = parser.parse_args()
    sys.exit(0 if check(args.addr, args.service) else 1)


if __name__ == "__main__":
    main()
