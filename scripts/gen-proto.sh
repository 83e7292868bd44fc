#!/usr/bin/env bash
# Regenerate the Python modules of podflow's protobuf definitions (podflow/*/proto).
# The generated *_pb2.py, *_pb2.pyi and *_pb2_grpc.py are committed, so installing podflow
# needs no protoc; tests/unit/observer/test_proto.py fails when they are out of date.
# Usage: scripts/gen-proto.sh [OUTDIR]   (default: in place)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.}
PY=${PODFLOW_PYTHON:-.venv/bin/python}
"$PY" -m grpc_tools.protoc -I . --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  podflow/observer/proto/hubble/flow.proto podflow/observer/proto/hubble/observer.proto \
  podflow/cluster/proto/feed.proto
rm -f "$out/podflow/observer/proto/hubble/flow_pb2_grpc.py"   # flow.proto has no service
