"""The lab on the real kernel: Flannel-VXLAN datapath, kube-proxy NAT, teardown.

Builds a 2-node lab (agents and workload processes off) under a temporary lab root and
checks with real connections made from the tests: pod -> pod across nodes over flannel.1,
ClusterIP DNAT, NodePort from an external host, pod egress masqueraded to the node IP,
restart-pod, ``lab status -o json`` and ``lab exec``. Then: ``down`` leaves nothing (no
pf-<lab>- netns, no process, root netns unchanged) and is idempotent, and a failing ``up``
cleans up after itself. Traffic only ever goes to addresses inside the lab's namespaces.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podflow.lab import manager
from podflow.lab.netns import LabError, list_netns, netns_pids
from podflow.lab.spec import LabSpec, parse_spec
from podflow.lab.state import LabState, lab_dir
from tests.integration.netprobe import Listener, connect

pytestmark = pytest.mark.integration


def _spec(name: str) -> LabSpec:
    return parse_spec({
        "name": name, "nodes": 2, "namespaces": ["app"],
        "workloads": [
            {"namespace": "app", "name": "web", "labels": {"app": "web"}, "ports": ["tcp/8080"],
             "node": 1},
            {"namespace": "app", "name": "api", "labels": {"app": "api"}, "ports": ["tcp/9000"],
             "node": 2},
        ],
        "services": [
            {"namespace": "app", "name": "api", "selector": {"app": "api"},
             "ports": [{"name": "http", "port": 80, "targetPort": 9000}]},
            {"namespace": "app", "name": "web", "type": "NodePort", "selector": {"app": "web"},
             "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]},
        ],
        "externals": [{"name": "db", "ip": "192.168.77.10", "ports": ["tcp/5432"]},
                      {"name": "client", "ip": "192.168.77.20"}],
    })


def _root_snapshot() -> dict[str, str]:
    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    ipt = "\n".join(re.sub(r"\[\d+:\d+\]", "", x) for x in out("iptables-save").splitlines()
                    if not x.startswith("#"))
    return {"links": out("ip", "-o", "link"), "routes": out("ip", "route", "show", "table", "all"),
            "addrs": out("ip", "-o", "addr"), "iptables": ipt,
            "netns": "\n".join(n for n in out("ip", "netns", "list").splitlines()
                               if n.startswith("pf-it"))}


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("labs")
    old = os.environ.get("PODFLOW_LAB_ROOT")
    os.environ["PODFLOW_LAB_ROOT"] = str(root)
    try:
        yield root
    finally:
        if old is None:
            os.environ.pop("PODFLOW_LAB_ROOT", None)
        else:
            os.environ["PODFLOW_LAB_ROOT"] = old


@pytest.fixture(scope="module")
def lab(lab_root: Path) -> Iterator[LabState]:
    name = f"it{secrets.token_hex(3)}"
    try:
        yield manager.up(_spec(name), agents=False, workloads=False)
    finally:
        manager.down(name)


@pytest.fixture
def servers(lab: LabState) -> Iterator[dict[str, Listener]]:
    web, api = lab.pods_of("app", "web")[0], lab.pods_of("app", "api")[0]
    started: dict[str, Listener] = {}
    try:
        started["web"] = Listener(web.netns, 8080, "web")
        started["api"] = Listener(api.netns, 9000, "api")
        started["db"] = Listener(lab.external("db").netns, 5432, "db")
        yield started
    finally:
        for s in started.values():
            s.stop()


def test_pod_to_pod_across_nodes_over_flannel(lab: LabState,
                                              servers: dict[str, Listener]) -> None:
    web, api = lab.pods_of("app", "web")[0], lab.pods_of("app", "api")[0]
    assert (web.node, api.node) == ("node1", "node2")
    route = subprocess.run(["ip", "-n", lab.node("node1").netns, "route", "get", api.ip],
                           capture_output=True, text=True, check=True).stdout
    assert "dev flannel.1" in route and "via 10.244.1.0" in route
    assert connect(web.netns, api.ip, 9000) == ("api", web.ip)


def test_clusterip_dnat_reaches_backend(lab: LabState, servers: dict[str, Listener]) -> None:
    web = lab.pods_of("app", "web")[0]
    vip = lab.service("app", "api").clusterIP
    assert vip.startswith("10.96.") and vip not in ("10.96.0.0", "10.96.0.1", "10.96.0.10")
    assert connect(web.netns, vip, 80) == ("api", web.ip)


def test_nodeport_from_external(lab: LabState, servers: dict[str, Listener]) -> None:
    client = lab.external("client").netns
    for node in lab.nodes:
        tag, peer = connect(client, node.ip, 30080)
        assert tag == "web"
        assert peer != lab.external("client").ip   # externalTrafficPolicy Cluster: SNAT


def test_pod_egress_is_masqueraded_to_node_ip(lab: LabState,
                                              servers: dict[str, Listener]) -> None:
    api = lab.pods_of("app", "api")[0]
    assert connect(api.netns, "192.168.77.10", 5432) == ("db", lab.node(api.node).ip)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podflow", "lab", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_status_json_shape_and_exec(lab: LabState) -> None:
    res = _cli("status", lab.name, "-o", "json")
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    assert st == LabState.load(lab.name).to_status()
    assert set(st) == {"name", "cni", "nodes", "pods", "services", "externals", "hub"}
    assert st["hub"] is None   # no agents, no hub (up with agents=False)
    assert set(st["nodes"][0]) == {"name", "netns", "ip", "podCIDR", "metrics", "observer"}
    for node in st["nodes"]:   # each node's agent serves /metrics and its flows on loopback
        for served in ("metrics", "observer"):
            assert node[served] is None or re.fullmatch(r"127\.0\.0\.1:[0-9]+",
                                                        node[served]), node
    assert set(st["pods"][0]) == {"namespace", "name", "workload", "node", "ip", "netns",
                                  "labels"}
    assert set(st["services"][0]) == {"namespace", "name", "type", "clusterIP", "ports"}
    assert set(st["services"][1]["ports"][0]) == {"name", "port", "targetPort", "nodePort",
                                                  "protocol"}
    assert st["services"][1]["ports"][0]["nodePort"] == 30080
    assert set(st["externals"][0]) == {"name", "ip", "netns"}
    assert _cli("exec", lab.name, "node/node1", "--", "sh", "-c", "exit 7").returncode == 7
    pod = lab.pods_of("app", "web")[0]
    res = _cli("exec", lab.name, f"app/{pod.name}", "--", "ip", "-o", "-4", "addr", "show",
               "eth0")
    assert res.returncode == 0 and f"{pod.ip}/24" in res.stdout
    bad = _cli("exec", lab.name, "app/nope", "--", "true")
    assert bad.returncode == 2 and "no 'app/nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_restart_pod_gets_new_netns_and_ip(lab: LabState) -> None:
    old = LabState.load(lab.name).pods_of("app", "api")[0]
    new = manager.restart_pod(lab.name, "app", old.name)
    assert new.name != old.name and new.name.startswith("api-") and new.node == old.node
    assert new.netns != old.netns and old.netns not in list_netns(f"pf-{lab.name}-")
    assert new.ip != old.ip
    state = LabState.load(lab.name)
    assert [p.name for p in state.pods_of("app", "api")] == [new.name]
    web = state.pods_of("app", "web")[0]
    listener = Listener(new.netns, 9000, "api2")
    try:
        assert connect(web.netns, state.service("app", "api").clusterIP, 80) == ("api2", web.ip)
    finally:
        listener.stop()


def test_down_leaves_nothing_and_is_idempotent(lab_root: Path) -> None:
    name = f"it{secrets.token_hex(3)}"
    before = _root_snapshot()
    try:
        state = manager.up(_spec(name), agents=False, workloads=False)
        with pytest.raises(LabError, match="already exists"):
            manager.up(_spec(name), agents=False, workloads=False)
        sleeper = subprocess.Popen(["ip", "netns", "exec", state.pods[0].netns, "sleep", "60"],
                                   start_new_session=True)
        deadline = time.monotonic() + 5
        while sleeper.pid not in netns_pids(state.pods[0].netns):
            assert time.monotonic() < deadline, "sleep never showed up in the pod netns"
            time.sleep(0.05)
        manager.down(name)
        assert sleeper.wait(timeout=5) != 0
        assert list_netns(f"pf-{name}-") == []
        assert not lab_dir(name).exists()
        assert _root_snapshot() == before
        manager.down(name)
        res = _cli("down", name)  # already gone: said so, not "removed"
        assert res.returncode == 1 and "does not exist" in res.stderr, res.stderr
    finally:
        manager.down(name)


def test_failing_up_removes_everything(lab_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"it{secrets.token_hex(3)}"
    before = _root_snapshot()

    def boom(state: LabState) -> None:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(manager, "_apply_iptables", boom)
    try:
        with pytest.raises(LabError, match="failed while programming services: injected"):
            manager.up(_spec(name), agents=False, workloads=False)
        assert list_netns(f"pf-{name}-") == []
        assert not lab_dir(name).exists()
        assert _root_snapshot() == before
    finally:
        manager.down(name)
