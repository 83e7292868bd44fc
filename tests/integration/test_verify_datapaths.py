"""`lab verify` at 100% on every lab datapath, with the agents' default sources.

For each ``cni:`` value a 2-node lab runs real traffic of every category the datapath can
carry (same node, cross node, ClusterIP, NodePort with both traffic policies, pod IP, egress,
a host-network client, a restarted pod), with the agents choosing their sources from the
detected CNI profile: conntrack + sockets + packets on the bridge and routed datapaths,
sockets + packets (inside the pods) on macvlan, where the nodes' conntrack sees nothing.
(flannel-vxlan has the same check with 3 nodes in test_end_to_end.py.)
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

CNIS = ["flannel-host-gw", "calico-bgp", "calico-vxlan", "macvlan"]
RUN = 18.0
SETTLE = 8.0


def _spec(name: str, cni: str) -> dict[str, object]:
    workloads: list[dict[str, object]] = [
        {"namespace": "app", "name": "web", "replicas": 2, "labels": {"app": "web"},
         "ports": ["tcp/8080"]},
        {"namespace": "app", "name": "api", "replicas": 2, "labels": {"app": "api"},
         "ports": ["tcp/9000"]},
        {"namespace": "app", "name": "hostclient", "labels": {"app": "hostclient"},
         "hostNetwork": True, "node": 1},
    ]
    traffic: list[dict[str, object]] = [
        {"from": "app/web", "to": "pod/app/api:9000", "every": "700ms"},
        {"from": "app/api", "to": "external/db:5432", "every": "1s"},
        {"from": "app/hostclient", "to": "pod/app/web:8080", "every": "1s"},
    ]
    services: list[dict[str, object]] = []
    if cni != "macvlan":
        services = [
            {"namespace": "app", "name": "api", "selector": {"app": "api"},
             "ports": [{"name": "http", "port": 80, "targetPort": 9000}]},
            {"namespace": "app", "name": "web", "type": "NodePort", "selector": {"app": "web"},
             "externalTrafficPolicy": "Cluster",
             "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]},
            {"namespace": "app", "name": "web-local", "type": "NodePort",
             "selector": {"app": "web"}, "externalTrafficPolicy": "Local",
             "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30081}]},
        ]
        traffic += [
            {"from": "app/web", "to": "service/app/api:80", "every": "700ms"},
            {"from": "external/visitor", "to": "nodeport/30080", "every": "1s"},
            {"from": "external/visitor", "to": "nodeport/30081", "every": "1s"},
            {"from": "app/hostclient", "to": "service/app/api:80", "every": "1s"},
        ]
    return {"name": name, "cni": cni, "nodes": 2, "namespaces": ["app"],
            "workloads": workloads, "services": services,
            "externals": [{"name": "db", "ip": "192.168.100.10", "ports": ["tcp/5432"]},
                          {"name": "visitor", "ip": "192.168.100.20"}],
            "traffic": traffic}


@pytest.fixture(params=CNIS)
def lab_name(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    mp = pytest.MonkeyPatch()
    mp.setenv("PODFLOW_LAB_ROOT", str(tmp_path_factory.mktemp("labs")))
    name = "vd" + secrets.token_hex(2)
    try:
        first = manager.up(parse_spec(_spec(name, str(request.param))))
        time.sleep(RUN / 2)
        api = first.pods_of("app", "api")[0]
        manager.restart_pod(name, "app", api.name)
        time.sleep(RUN / 2)
        yield name
    finally:
        manager.down(name)
        assert list_netns(f"pf-{name}-") == []
        mp.undo()


def test_verify_is_exact(lab_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = run_verify(lab_name, "json", settle=SETTLE)
    report = json.loads(capsys.readouterr().out)
    assert report["mismatches"] == [], [(m["what"], m["reason"]) for m in report["mismatches"][:6]]
    assert rc == 0
    cats = report["categories"]
    for cat in ("podip", "egress", "same-node", "cross-node", "restarted-pods"):
        assert cats[cat]["connections_recall"]["total"] > 0, f"no {cat} traffic was checked"
    for cat, scores in cats.items():
        for metric, ratio in scores.items():
            assert ratio["value"] == 1.0, (cat, metric, ratio)
