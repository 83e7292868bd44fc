"""Workload processes in real network namespaces: servers, clients and their ground truth.

Builds two bare namespaces joined by a veth pair (no lab manager needed), starts a server
pod and a client pod with :func:`start_pod`, and checks the truth both sides wrote.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podflow.lab.state import LabState, NodeState, PodState
from podflow.lab.truth import read_truth
from podflow.lab.workload import start_pod

pytestmark = pytest.mark.integration

NS_A, NS_B = "pf-wtest-a", "pf-wtest-b"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def netns_pair() -> Iterator[None]:
    for ns in (NS_A, NS_B):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", NS_A, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", NS_B)
    _ip("-n", NS_A, "addr", "add", "10.250.0.1/24", "dev", "eth0")
    _ip("-n", NS_B, "addr", "add", "10.250.0.2/24", "dev", "eth0")
    _ip("-n", NS_A, "link", "set", "eth0", "up")
    _ip("-n", NS_B, "link", "set", "eth0", "up")
    try:
        yield
    finally:
        for ns in (NS_A, NS_B):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _state() -> LabState:
    traffic = [
        {"from": "shop/frontend", "to": "pod/shop/backend:9000", "every": "200ms"},
        {"from": "shop/frontend", "to": "pod/shop/backend:9001", "every": 0.3},
        {"from": "shop/frontend", "to": "pod/shop/backend:9002", "every": "500ms"},
    ]
    return LabState(
        name="wtest", cni="flannel-vxlan", spec_path=None, podCIDR="10.250.0.0/16",
        serviceCIDR="10.96.0.0/16", underlay="172.18.0.0/24", created=time.time(),
        nodes=[NodeState("node1", 1, "pf-wtest-node1", "172.18.0.2", "10.250.0.0/24")],
        pods=[PodState("shop", "frontend-abc-1", "frontend", "node1", "10.250.0.1", NS_A,
                       {"app": "frontend"}),
              PodState("shop", "backend-def-1", "backend", "node1", "10.250.0.2", NS_B,
                       {"app": "backend"}, ports=["tcp/9000", "udp/9001"])],
        spec={"traffic": traffic})


def _stop(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def test_servers_clients_and_truth(netns_pair: None, tmp_path: Path) -> None:
    state = _state()
    state.save(tmp_path / "state.json")
    pids = start_pod(state, state.pods[1], tmp_path)
    time.sleep(0.5)
    pids += start_pod(state, state.pods[0], tmp_path, client_start_delay=0)
    time.sleep(2.5)
    _stop(pids)

    truth = read_truth(tmp_path)
    assert truth.bad_lines == 0
    assert {s.who for s in truth.starts} == {"shop/frontend-abc-1", "shop/backend-def-1"}
    by_port: dict[int, list[str]] = {}
    for c in truth.connects:
        assert c.client == "shop/frontend-abc-1" and c.workload == "shop/frontend"
        assert c.category == "podip" and c.client_ip == "10.250.0.1" and c.node == "node1"
        by_port.setdefault(c.remote_port, []).append(c.outcome)
    assert by_port[9000] and set(by_port[9000]) == {"ok"}
    assert by_port[9001] and set(by_port[9001]) == {"ok"}
    assert by_port[9002] and set(by_port[9002]) == {"refused"}
    assert all(c.local_port for c in truth.connects)

    ok = [c for c in truth.connects if c.outcome == "ok"]
    peers = {(a.peer_ip, a.peer_port, a.proto) for a in truth.accepts}
    for c in ok:
        assert c.local_ip == "10.250.0.1"
        assert (c.local_ip, c.local_port, c.proto) in peers
    assert {a.proto for a in truth.accepts} == {"tcp", "udp"}
    assert all(a.server == "shop/backend-def-1" for a in truth.accepts)


def test_demo_lab_truth_every_category(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the real lab (no agents): every client category succeeds and is accepted."""
    monkeypatch.setenv("PODFLOW_LAB_ROOT", str(tmp_path))
    manager = pytest.importorskip("podflow.lab.manager")
    spec_mod = pytest.importorskip("podflow.lab.spec")
    from dataclasses import replace

    from podflow.lab.state import lab_dir

    spec = replace(spec_mod.load_default_spec(), name="pfwltest")
    try:
        state = manager.up(spec, agents=False)
        up_done = time.time()
        time.sleep(7)
        old = state.pods[0]
        restart_start = time.time()
        manager.restart_pod(spec.name, old.namespace, old.name)
        restart_end = time.time()
        time.sleep(5)
        end = time.time()
        truth = read_truth(lab_dir(spec.name))
    finally:
        manager.down(spec.name)
    cats = {c.category for c in truth.connects if c.outcome == "ok"}
    assert cats == {"clusterip", "nodeport", "egress"}
    # connections in flight while a pod is deleted may fail, as in a real cluster; outside
    # that window (and older than the 2 s connect timeout at the end) every one succeeds
    quiet = [c for c in truth.connects
             if up_done + 1 < c.time < restart_start - 2.5 or restart_end + 1 < c.time < end - 2.5]
    assert quiet and [c for c in quiet if c.outcome != "ok"] == []
    servers = {a.server for a in truth.accepts}
    assert f"{old.namespace}/{old.name}" in {s.who for s in truth.starts}
    assert "external/db" in servers
    node_ips = {n.ip for n in state.nodes}
    for c in truth.connects:
        if c.outcome == "ok" and c.category == "egress":
            assert any(a.peer_ip in node_ips for a in truth.accepts if a.server == "external/db")
