#!/usr/bin/env bash
# Regenerates the gRPC stubs in node/pb (importable as taskward.pb) from proto/. Never edit the output by hand.
# Usage: scripts/gen_protos.sh [--check]   (--check fails when the committed stubs are stale)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
python -m grpc_tools.protoc -Itaskward/pb=proto --python_out="$out" --pyi_out="$out" \
  --grpc_python_out="$out" proto/taskward/v1/*.proto
for d in "$out/taskward/pb" "$out/taskward/pb/taskward" "$out/taskward/pb/taskward/v1"; do
  : >"$d/__init__.py"
done
if [[ "${1:-}" == "--check" ]]; then
  if ! diff -r -q "$out/taskward/pb" node/pb; then
    echo "node/pb is stale: run scripts/gen_protos.sh" >&2
    exit 1
  fi
  exit 0
fi
rm -rf node/pb
cp -r "$out/taskward/pb" node/pb
