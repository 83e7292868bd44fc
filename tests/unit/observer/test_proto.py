"""The committed protobuf modules are what scripts/gen-proto.sh makes of the .proto files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
GENERATED = (ROOT / "podflow" / "observer" / "proto" / "hubble",
             ROOT / "podflow" / "cluster" / "proto")


def test_generated_modules_are_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (a dev package) is not installed")
    subprocess.run(["bash", str(ROOT / "scripts" / "gen-proto.sh"), str(tmp_path)], check=True,
                   env={"PODFLOW_PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    fresh = sorted(p for d in GENERATED for p in (tmp_path / d.relative_to(ROOT)).glob("*_pb2*"))
    committed = sorted(p for d in GENERATED for p in d.glob("*_pb2*"))
    assert [p.name for p in fresh] == [p.name for p in committed]
    stale = [p.name for p, q in zip(fresh, committed, strict=True)
             if p.read_bytes() != q.read_bytes()]
    assert not stale, f"run scripts/gen-proto.sh: {stale} differ from the .proto files"


def test_the_wire_names_hubble_clients_call() -> None:
    from podflow.observer.proto.hubble import flow_pb2, observer_pb2

    svc = observer_pb2.DESCRIPTOR.services_by_name["Observer"]
    assert svc.full_name == "observer.Observer"
    assert {m.name for m in svc.methods} >= {"GetFlows", "ServerStatus", "GetNodes"}
    flow = flow_pb2.Flow.DESCRIPTOR
    assert flow.full_name == "flow.Flow"
    numbers = {f.name: f.number for f in flow.fields}
    assert (numbers["time"], numbers["verdict"], numbers["source"], numbers["destination"],
            numbers["node_name"], numbers["is_reply"], numbers["Summary"]) == \
        (1, 2, 8, 9, 11, 26, 100000)
    # podflow's own fields sit far above every number Hubble uses
    assert all(n >= 180000 for name, n in numbers.items() if name.startswith("podflow_"))
