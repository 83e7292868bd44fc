"""The load run: 6 nodes, 49 pods, ~100 new connections/s for two minutes, judged exactly.

Eight workloads of six replicas each, spread over six flannel-vxlan nodes; every pod calls
the next workload's ClusterIP every 0.5 s (96 new connections/s, most of them across nodes,
and client ports used again on the same tuple as a busy client does). Six agents share the
machine's two cores and one store file, so they fall seconds behind (they take turns at the
file, and each says how far it has stored in a beacon beside it). The live map, read every
second while the traffic runs, must never draw an edge the traffic did not make; then
``lab verify`` judges what every agent has reported through (``FlowStore.progress``) and
must find every connection once, with its Service and backend, and no other.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest

from podflow.lab import manager
from podflow.lab.netns import list_netns
from podflow.lab.spec import parse_spec
from podflow.lab.verify import run_verify
from podflow.lab.verify.live import LiveReport, watch

pytestmark = pytest.mark.integration

NODES, WORKLOADS, REPLICAS = 6, 8, 6
RUN = 120.0
EVERY = "500ms"


def _spec(name: str) -> dict[str, object]:
    names = [f"w{i}" for i in range(WORKLOADS)]
    return {
        "name": name, "cni": "flannel-vxlan", "nodes": NODES, "namespaces": ["load"],
        "workloads": [{"namespace": "load", "name": w, "replicas": REPLICAS,
                       "labels": {"app": w}, "ports": ["tcp/8080"]} for w in names],
        "services": [{"namespace": "load", "name": w, "selector": {"app": w},
                      "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
                     for w in names],
        "traffic": [{"from": f"load/{w}", "to": f"service/load/{names[(i + 1) % WORKLOADS]}:80",
                     "every": EVERY} for i, w in enumerate(names)],
    }


@pytest.fixture()
def load_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LiveReport]]:
    """The load lab after RUN seconds of traffic, with its live map read every second."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PODFLOW_LAB_ROOT", str(tmp_path_factory.mktemp("labs")))
    name = "ld" + secrets.token_hex(2)
    try:
        manager.up(parse_spec(_spec(name)))
        yield name, watch(name, RUN)
    finally:
        manager.down(name)
        assert list_netns(f"pf-{name}-") == []
        mp.undo()


def test_load_run_is_exact(load_run: tuple[str, LiveReport],
                           capsys: pytest.CaptureFixture[str]) -> None:
    name, live = load_run
    assert live.ok, "\n".join(live.lines())
    rc = run_verify(name, "json")
    report = json.loads(capsys.readouterr().out)
    assert report["mismatches"] == [], [(m["what"], m["reason"]) for m in report["mismatches"][:6]]
    assert rc == 0
    overall = report["categories"]["overall"]
    # ~96 connections/s: however far the slowest agent is behind, a good part is judged
    assert overall["connections_recall"]["total"] > 2_000, overall
    for metric, ratio in overall.items():
        assert ratio["value"] == 1.0, (metric, ratio)
