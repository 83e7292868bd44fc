"""The load run: 6 nodes, 49 pods, ~100 new connections/s for two minutes, judged exactly.

Eight workloads of six replicas each, spread over six flannel-vxlan nodes; every pod calls
the next workload's ClusterIP every 0.5 s (96 new connections/s, most of them across nodes,
and client ports used again on the same tuple as a busy client does). Six agents share the
machine's two cores and one store file, so they fall seconds behind: ``lab verify`` judges
only what every agent has reported through (``FlowStore.progress``) and must then find every
connection once, with its Service and backend, and no other.

The live map is not judged here: under this load one agent can be starved of the shared
store file for tens of seconds and then the map draws the other end's views alone (issue 14
stays open for it; the traffic matrix judges the live map on every datapath).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import pytest

from podflow.lab import manager
from podflow.lab.netns import list_netns
from podflow.lab.spec import parse_spec
from podflow.lab.verify import run_verify

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
def load_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The load lab after RUN seconds of traffic."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PODFLOW_LAB_ROOT", str(tmp_path_factory.mktemp("labs")))
    name = "ld" + secrets.token_hex(2)
    try:
        manager.up(parse_spec(_spec(name)))
        time.sleep(RUN)
        yield name
    finally:
        manager.down(name)
        assert list_netns(f"pf-{name}-") == []
        mp.undo()


def test_load_run_is_exact(load_run: str, capsys: pytest.CaptureFixture[str]) -> None:
    name = load_run
    rc = run_verify(name, "json")
    report = json.loads(capsys.readouterr().out)
    assert report["mismatches"] == [], [(m["what"], m["reason"]) for m in report["mismatches"][:6]]
    assert rc == 0
    overall = report["categories"]["overall"]
    # ~96 connections/s: however far the slowest agent is behind, a good part is judged
    assert overall["connections_recall"]["total"] > 2_000, overall
    for metric, ratio in overall.items():
        assert ratio["value"] == 1.0, (metric, ratio)
