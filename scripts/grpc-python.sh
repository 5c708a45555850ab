#!/usr/bin/env bash
# A Python with grpcio and grpcio-tools (from PyPI, in a virtualenv kept between runs), and Python stubs
# generated from issuer/proto/api.proto into OUT_DIR. Idempotent: the virtualenv is made and filled once;
# the stubs are generated again on every call, so they always match the .proto.
#
#   scripts/grpc-python.sh OUT_DIR      prints the virtualenv's python on stdout
set -euo pipefail
out="${1:?usage: scripts/grpc-python.sh OUT_DIR}"
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${TOKENGATE_GRPC_VENV:-${CARGO_TARGET_DIR:-$root/target}/grpc-python}"
python="$venv/bin/python"
if ! "$python" -c 'import grpc, grpc_tools' 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$python" -m pip install --quiet --disable-pip-version-check 'grpcio>=1.62' 'grpcio-tools>=1.62' 'protobuf>=5.26' >&2
fi
mkdir -p "$out"
"$python" -m grpc_tools.protoc -I "$root/issuer/proto" --python_out="$out" --grpc_python_out="$out" \
  "$root/issuer/proto/api.proto" >&2
echo "$python"
