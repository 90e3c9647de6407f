#!/usr/bin/env bash
# Generate the sigverify.*.v1 Python package from protos/ with grpcio-tools and mypy-protobuf.
# Usage: gen-proto.sh PYTHON OUT_DIR [--check COMMITTED_DIR]
set -euo pipefail
py="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; out=$2
mkdir -p "$out"
out="$(cd "$out" && pwd)"
mapfile -t files < <(cd protos && find sigverify -name '*.proto' | sort)
bindir=$(dirname "$py")
(cd protos && "$py" -m grpc_tools.protoc -I . \
  --python_out="$out" --grpc_python_out="$out" \
  --plugin=protoc-gen-mypy="$bindir/protoc-gen-mypy" --mypy_out="$out" \
  --plugin=protoc-gen-mypy_grpc="$bindir/protoc-gen-mypy_grpc" --mypy_grpc_out="$out" \
  "${files[@]}" >/dev/null)
# Regular packages, so that the tree imports as sigverify.<area>.v1 everywhere.
find "$out/sigverify" -type d -exec sh -c 'touch "$1/__init__.py"' _ {} \;
if [ "${3:-}" = "--check" ]; then
  if ! diff -r -x __pycache__ "$4/sigverify" "$out/sigverify"; then
    echo "generated code is out of date: run 'make proto' and commit" >&2
    exit 1
  fi
  echo "proto-check: generated code matches protos/"
fi
