"""MetalLB's L2 election (which node announces a LoadBalancer VIP) and how the lab places
the VIP on that node, without touching the kernel (``ip``/``sysctl`` are recorded)."""

from __future__ import annotations

import hashlib

import pytest

from podflow.lab import metallb
from podflow.lab.state import LabState, ServicePortState, ServiceState
from tests.unit.lab.test_kubeobjects import lab_state

VIP = "172.18.0.240"


def _state(policy: str = "Cluster", app: str = "frontend") -> tuple[LabState, ServiceState]:
    st = lab_state()   # frontend pods on node1 and node2, cache on node3
    svc = ServiceState("shop", "web", "LoadBalancer", "10.96.0.20", {"app": app},
                       [ServicePortState("http", 80, 8080, "TCP", 30100)], policy,
                       loadBalancerIP=VIP)
    st.services.append(svc)
    return st, svc


def _metallb_order(nodes: list[str], vip: str) -> list[str]:
    """MetalLB's ShouldAnnounce order: by sha256(node + "#" + ip), lowest first."""
    return sorted(nodes, key=lambda n: hashlib.sha256((n + "#" + vip).encode()).digest())


def test_cluster_policy_elects_among_all_nodes_by_hash() -> None:
    st, svc = _state()
    assert metallb.candidates(st, svc) == _metallb_order(["node1", "node2", "node3"], VIP)
    assert metallb.elect(st, svc) == _metallb_order(["node1", "node2", "node3"], VIP)[0]
    other = ServiceState(**{**svc.__dict__, "loadBalancerIP": "172.18.0.241"})
    assert metallb.candidates(st, other) == _metallb_order(["node1", "node2", "node3"],
                                                           "172.18.0.241")


def test_local_policy_elects_a_node_with_a_ready_endpoint() -> None:
    st, svc = _state("Local")
    assert metallb.candidates(st, svc) == _metallb_order(["node1", "node2"], VIP)
    st, svc = _state("Local", app="cache")                # data/cache is another namespace
    assert metallb.elect(st, svc) is None
    svc.namespace = "data"
    assert metallb.elect(st, svc) == "node3"
    for p in st.pods:
        p.ip = ""                                         # not ready: no address yet
    assert metallb.elect(st, svc) is None


def test_nobody_announces_without_endpoints_or_vip() -> None:
    st, svc = _state(app="nothing")
    assert metallb.elect(st, svc) is None                 # even with policy Cluster
    st, svc = _state()
    svc.loadBalancerIP = None
    assert metallb.elect(st, svc) is None
    assert metallb.elect(st, st.services[0]) is None      # a NodePort service


def test_announce_places_moves_and_withdraws_the_vip(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, object]] = []
    monkeypatch.setattr(metallb, "ip_batch", lambda ns, cmds: calls.append(("ip", ns, cmds)))
    monkeypatch.setattr(metallb, "sysctl", lambda ns, values: calls.append(("sysctl", ns,
                                                                            dict(values))))
    st, svc = _state("Local", app="cache")
    svc.namespace = "data"
    assert metallb.announce(st) == [svc] and svc.lb_holder == "node3"
    assert calls == [
        ("sysctl", "pf-shop-node3", {"net.ipv4.conf.all.arp_ignore": "0",
                                     "net.ipv4.conf.eth0.arp_ignore": "0"}),
        ("ip", "pf-shop-node3", [f"addr replace {VIP}/32 dev lo"])]
    calls.clear()
    assert metallb.announce(st) == [] and calls == []     # nothing changed: nothing done
    cache = next(p for p in st.pods if p.workload == "cache")
    cache.node = "node1"                                  # its replacement runs elsewhere
    assert metallb.announce(st) == [svc] and svc.lb_holder == "node1"
    assert calls[:2] == [("ip", "pf-shop-node3", [f"addr del {VIP}/32 dev lo"]),
                         ("ip", "pf-shop-fabric", [f"neigh flush to {VIP}"])]
    assert calls[-1] == ("ip", "pf-shop-node1", [f"addr replace {VIP}/32 dev lo"])
    calls.clear()
    st.pods.remove(cache)
    assert metallb.announce(st) == [svc] and svc.lb_holder is None
    assert [c[1] for c in calls] == ["pf-shop-node1", "pf-shop-fabric"]   # withdrawn only
