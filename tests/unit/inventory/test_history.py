"""Kubernetes JSON parsing, owner resolution, the time-indexed Inventory and the state dir."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from podflow.inventory import k8s
from podflow.inventory.history import Identity, Inventory, IPNetwork
from podflow.inventory.snapshot_dir import ClusterStateDir
from podflow.model.flow import EndpointKind, Workload

K8S = Path(__file__).parents[2] / "data" / "k8s"


def T(text: str) -> float:
    """An RFC 3339 time as Unix seconds."""
    value = k8s.parse_time(text)
    assert value is not None
    return value


T_POD = T("2026-11-20T10:00:00Z")  # creation of most pods
T_RESTART = T("2026-11-20T12:00:00Z")  # creation of the replacement backend pod


def load(name: str) -> Any:
    return json.loads((K8S / name).read_text())


def objects(pods: str = "pods.json") -> k8s.ClusterObjects:
    return k8s.ClusterObjects(
        pods=tuple(k8s.parse_pods(load(pods))),
        controllers=tuple(k8s.parse_controllers(load("replicasets.json"), "ReplicaSet")
                          + k8s.parse_controllers(load("jobs.json"), "Job")),
        services=tuple(k8s.parse_services(load("services.json"))),
        nodes=tuple(k8s.parse_nodes(load("nodes.json"))),
        external_names=tuple(k8s.parse_external_names(load("configmaps.json"))))


def inventory(**kw: Any) -> Inventory:
    inv = Inventory(**kw)
    inv.apply(objects(), at=T("2026-11-20T11:45:00Z"))
    return inv


def host_network_pod(**kw: Any) -> k8s.PodRecord:
    """A DaemonSet pod with ``hostNetwork: true`` on node2 (172.18.0.2) serving TCP 7070 and
    UDP 8125 there."""
    base = k8s.PodRecord(
        "monitoring", "node-exporter-x7k2p", "uid-ne-x7k2p", ("172.18.0.2",), "node2",
        host_network=True, labels=(("app", "node-exporter"),),
        owners=(k8s.OwnerRef("DaemonSet", "node-exporter", True),), created=T_POD,
        phase="Running",
        ports=(k8s.ContainerPort(7070, "TCP", 7070), k8s.ContainerPort(8125, "UDP", 8125)))
    return dataclasses.replace(base, **kw)


METRICS = k8s.ServiceRecord("monitoring", "node-exporter", cluster_ips=("10.96.77.7",),
                            ports=(k8s.ServicePort(80, "TCP", "metrics", 7070),),
                            selector=(("app", "node-exporter"),))
"""ClusterIP 10.96.77.7:80 whose backend is the host-network pod, at node2's 172.18.0.2:7070."""


def with_host_network_pod(objs: k8s.ClusterObjects | None = None,
                          pod: k8s.PodRecord | None = None) -> k8s.ClusterObjects:
    """The test cluster plus a host-network pod (``host_network_pod()``) and its Service."""
    objs = objects() if objs is None else objs
    return dataclasses.replace(objs, pods=(*objs.pods, pod or host_network_pod()),
                               services=(*objs.services, METRICS))


def host_network_inventory() -> Inventory:
    """``inventory()`` with the host-network pod and its Service."""
    inv = Inventory()
    inv.apply(with_host_network_pod(), at=T("2026-11-20T11:45:00Z"))
    return inv


# ---- parsing ------------------------------------------------------------------------------

def test_items_accept_list_object_and_plain_list() -> None:
    doc = load("nodes.json")
    assert len(k8s.parse_nodes(doc)) == 3
    assert [n.name for n in k8s.parse_nodes(doc["items"][1])] == ["node2"]
    assert len(k8s.parse_nodes(doc["items"])) == 3
    with pytest.raises(ValueError):
        k8s.items_of("not kubernetes")


def test_malformed_item_is_skipped_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    doc = load("pods.json")
    doc["items"].append({"metadata": {"namespace": "x"}})  # no name
    with caplog.at_level(logging.WARNING):
        pods = k8s.parse_pods(doc)
    assert len(pods) == len(doc["items"]) - 1
    assert "malformed pod" in caplog.text


def test_pod_fields() -> None:
    pods = {p.name: p for p in k8s.parse_pods(load("pods.json"))}
    p = pods["backend-5c7d8b9f4-a1b2c"]
    assert (p.namespace, p.ips, p.node_name, p.created) == ("shop", ("10.244.0.3",), "node1", T_POD)
    assert dict(p.labels)["tier"] == "api"
    assert pods["kube-flannel-ds-7xk2m"].host_network
    assert pods["frontend-6d8f9c7b5-pend1"].ips == ()


def test_services_nodes_and_external_names() -> None:
    svcs = {s.name: s for s in k8s.parse_services(load("services.json"))}
    fe = svcs["frontend"]
    assert (fe.type, fe.cluster_ips, fe.external_traffic_policy) == (
        "NodePort", ("10.96.120.10",), "Cluster")
    port = fe.ports[0]
    assert (port.name, port.target_port, port.node_port) == ("http", 8080, 30080)
    assert svcs["frontend-lb"].external_ips == ("192.168.200.50",)
    assert svcs["frontend-lb"].ports[0].target_port == "http"
    assert {p.protocol for p in svcs["kube-dns"].ports} == {"UDP", "TCP"}
    n1 = k8s.parse_nodes(load("nodes.json"))[0]
    assert (n1.internal_ips, n1.pod_cidrs, n1.vtep_mac) == (
        ("172.18.0.1",), ("10.244.0.0/24",), "6e:1f:0b:00:00:01")
    names = dict(k8s.parse_external_names(load("configmaps.json")))
    assert names == {"db": "192.168.100.10", "visitor": "192.168.100.20",
                     "partner-net": "203.0.113.0/24", "partner-gw": "203.0.113.1"}


def test_top_owner_rules() -> None:
    objs = objects()
    ctl = {(c.kind, c.namespace, c.name): c for c in objs.controllers}
    pods = {p.name: p for p in objs.pods}
    assert k8s.top_owner(pods["backend-5c7d8b9f4-a1b2c"], ctl) == Workload("Deployment", "backend")
    # ReplicaSet missing from replicasets.json: pod-template-hash heuristic
    assert k8s.top_owner(pods["worker-84b7c9d5f6-zz9yy"], ctl) == Workload("Deployment", "worker")
    assert k8s.top_owner(pods["queue-0"], ctl) == Workload("StatefulSet", "queue")
    assert k8s.top_owner(pods["kube-flannel-ds-7xk2m"], ctl) == Workload("DaemonSet",
                                                                          "kube-flannel-ds")
    assert k8s.top_owner(pods["report-29390400-h4x7q"], ctl) == Workload("CronJob", "report")
    assert k8s.top_owner(pods["debug"], ctl) is None
    # an unknown ReplicaSet whose name does not end in the hash stays a ReplicaSet
    odd = k8s.PodRecord("x", "p", "u", owners=(k8s.OwnerRef("ReplicaSet", "standalone", True),),
                        labels=(("pod-template-hash", "abc"),))
    assert k8s.top_owner(odd, {}) == Workload("ReplicaSet", "standalone")


# ---- time-indexed identity ----------------------------------------------------------------

def test_pod_identity_and_interval_start() -> None:
    inv = inventory()
    ident = inv.identity("10.244.1.3", T_POD + 60)
    assert (ident.kind, ident.namespace, ident.pod_name, ident.node_name) == (
        EndpointKind.POD, "shop", "backend-5c7d8b9f4-d3e4f", "node2")
    assert ident.workload == Workload("Deployment", "backend")
    assert ident.labels == (("app", "backend"), ("pod-template-hash", "5c7d8b9f4"),
                            ("tier", "api"))
    # before the pod was created the IP was nobody's (inside the pod range: unknown)
    assert inv.identity("10.244.1.3", T_POD - 1).kind is EndpointKind.UNKNOWN


def test_ip_reused_by_new_pod_after_restart() -> None:
    inv = inventory()
    inv.apply(objects("pods-restarted.json"), at=T("2026-11-20T12:05:00Z"))
    old, new = "backend-5c7d8b9f4-a1b2c", "backend-5c7d8b9f4-r8s9t"
    assert inv.identity("10.244.0.3", T("2026-11-20T11:00:00Z")).pod_name == old
    assert inv.identity("10.244.0.3", T_RESTART - 0.5).pod_name == old
    assert inv.identity("10.244.0.3", T_RESTART + 0.5).pod_name == new
    assert inv.identity("10.244.0.3", T("2026-11-21T00:00:00Z")).pod_name == new
    assert inv.pod("10.244.0.3", T_POD - 10) is None


def test_vanished_pod_ends_at_apply_time_or_deletion_timestamp() -> None:
    inv = inventory()
    objs = objects()
    gone = objs.pods[9]
    assert gone.name == "debug"
    rest = tuple(p for p in objs.pods if p.name != "debug")
    inv.apply(k8s.ClusterObjects(pods=rest, nodes=objs.nodes), at=T("2026-11-20T12:10:00Z"))
    assert inv.identity("10.244.2.4", T("2026-11-20T12:09:59Z")).pod_name == "debug"
    assert inv.identity("10.244.2.4", T("2026-11-20T12:10:01Z")).kind is EndpointKind.UNKNOWN
    # a deletionTimestamp seen before the pod vanished ends it there
    inv2 = Inventory()
    p = k8s.PodRecord("a", "p", "u1", ("10.244.0.50",), created=100.0)
    inv2.apply(k8s.ClusterObjects(pods=(p,)), at=150.0)
    inv2.apply(k8s.ClusterObjects(pods=(k8s.PodRecord("a", "p", "u1", ("10.244.0.50",),
                                                      created=100.0, deleted=160.0),)), at=155.0)
    inv2.apply(k8s.ClusterObjects(), at=200.0)
    assert inv2.pod("10.244.0.50", 159.0) is not None
    assert inv2.pod("10.244.0.50", 161.0) is None


def test_missing_creation_timestamp_first_snapshot_vs_later() -> None:
    inv = Inventory()
    a = k8s.PodRecord("a", "first", "u1", ("10.244.0.60",))
    inv.apply(k8s.ClusterObjects(pods=(a,)), at=100.0)
    assert inv.pod("10.244.0.60", -1e9) is not None  # predates us: open since -inf
    b = k8s.PodRecord("a", "later", "u2", ("10.244.0.61",))
    inv.apply(k8s.ClusterObjects(pods=(a, b)), at=200.0)
    assert inv.pod("10.244.0.61", 199.0) is None
    assert inv.pod("10.244.0.61", 200.0) is not None


def test_completed_and_host_network_pods_not_indexed_by_ip() -> None:
    inv = inventory()
    now = T("2026-11-20T11:40:00Z")
    assert inv.identity("10.244.0.9", now).kind is EndpointKind.UNKNOWN  # Succeeded job pod
    node = inv.identity("172.18.0.1", now)  # flannel DaemonSet pod, hostNetwork
    assert (node.kind, node.node_name, node.name) == (EndpointKind.NODE, "node1", "node1")
    assert inv.node_by_ip("172.18.0.3", now) == "node3"


class Gateways:
    """Address rules where flannel's VTEP address of node2, 10.244.1.0, stands for node2."""

    cluster_networks: tuple[IPNetwork, ...] = ()

    def node_for_address(self, ip: str, inv: Inventory, at: float) -> str | None:
        return "node2" if ip == "10.244.1.0" else None


def test_host_network_pod_is_named_by_the_port_it_declared() -> None:
    inv = host_network_inventory()
    now = T_POD + 60
    pod = inv.identity("172.18.0.2", now, port=7070, proto="TCP")
    assert (pod.kind, pod.namespace, pod.pod_name, pod.node_name, pod.name) == (
        EndpointKind.HOST_NETWORK_POD, "monitoring", "node-exporter-x7k2p", "node2", None)
    assert pod.workload == Workload("DaemonSet", "node-exporter")
    assert pod.labels == (("app", "node-exporter"),)
    assert inv.host_network_pod("node2", 7070, "tcp", now) == pod
    node = inv.identity("172.18.0.2", now)
    assert (node.kind, node.node_name, node.name) == (EndpointKind.NODE, "node2", "node2")
    assert inv.identity("172.18.0.2", now, port=22, proto="TCP") == node      # not declared
    assert inv.identity("172.18.0.2", now, port=7070) == node                 # no protocol
    assert inv.identity("172.18.0.2", now, proto="TCP") == node               # no port
    other = inv.identity("172.18.0.3", now, port=7070, proto="TCP")          # another node
    assert (other.kind, other.name) == (EndpointKind.NODE, "node3")
    # pods, VIPs and externals are what they are whatever the port
    assert inv.identity("10.244.1.3", now, port=7070, proto="TCP").kind is EndpointKind.POD
    vip = inv.identity("10.96.77.7", now, port=80, proto="TCP")
    assert (vip.kind, vip.name) == (EndpointKind.SERVICE, "node-exporter")
    assert inv.identity("192.168.100.10", now, port=7070, proto="TCP").name == "db"


def test_host_network_ports_are_per_protocol() -> None:
    inv = host_network_inventory()
    now = T_POD + 60
    node = inv.identity("172.18.0.2", now)
    assert node == Identity(EndpointKind.NODE, labels=node.labels, node_name="node2",
                            name="node2")
    assert inv.identity("172.18.0.2", now, port=8125, proto="UDP").pod_name == \
        "node-exporter-x7k2p"
    assert inv.identity("172.18.0.2", now, port=8125, proto="TCP") == node
    assert inv.identity("172.18.0.2", now, port=7070, proto="UDP") == node
    assert inv.identity("172.18.0.2", now, port=7070, proto="SCTP") == node


def test_a_gateway_address_of_the_node_is_named_by_port_too() -> None:
    inv = host_network_inventory()
    now = T_POD + 60
    pod = inv.identity("10.244.1.0", now, Gateways(), port=7070, proto="TCP")
    assert (pod.kind, pod.pod_name) == (EndpointKind.HOST_NETWORK_POD, "node-exporter-x7k2p")
    node = inv.identity("10.244.1.0", now, Gateways(), port=22, proto="TCP")
    assert (node.kind, node.name) == (EndpointKind.NODE, "node2")
    assert inv.identity("10.244.1.0", now, Gateways()) == node
    # without the rule the VTEP address is just an address in the pod range
    assert inv.identity("10.244.1.0", now, port=7070, proto="TCP").kind is EndpointKind.UNKNOWN


def test_host_network_port_held_from_creation_to_deletion() -> None:
    inv = Inventory()
    inv.apply(with_host_network_pod(), at=T_POD + 100)

    def at(t: float) -> str | None:
        ident = inv.identity("172.18.0.2", t, port=7070, proto="TCP")
        assert ident.kind in (EndpointKind.NODE, EndpointKind.HOST_NETWORK_POD)
        return ident.pod_name

    assert at(T_POD - 1) is None                      # before creation: the node
    assert at(T_POD + 1) == "node-exporter-x7k2p"
    # deletion requested (deletionTimestamp), then the pod vanishes: it ends at the timestamp
    inv.apply(with_host_network_pod(pod=host_network_pod(deleted=T_POD + 250)), at=T_POD + 200)
    assert inv.apply(with_host_network_pod(pod=host_network_pod(deleted=T_POD + 250)),
                     at=T_POD + 210) is False
    inv.apply(objects(), at=T_POD + 300)
    assert at(T_POD + 249) == "node-exporter-x7k2p"
    assert at(T_POD + 251) is None
    assert at(T_POD + 400) is None
    # its replacement holds the port from its own creation on
    new = host_network_pod(name="node-exporter-q1w2e", uid="uid-ne-q1w2e", created=T_POD + 500)
    assert inv.apply(with_host_network_pod(pod=new), at=T_POD + 600) is True
    assert at(T_POD + 499) is None
    assert at(T_POD + 501) == "node-exporter-q1w2e"
    assert at(T_POD + 260) is None                    # history kept: nobody then
    assert at(T_POD + 200) == "node-exporter-x7k2p"


def test_host_network_port_without_creation_timestamp() -> None:
    inv = Inventory()
    nodes = objects().nodes
    first = host_network_pod(created=None)
    inv.apply(k8s.ClusterObjects(pods=(first,), nodes=nodes), at=100.0)
    assert inv.host_network_pod("node2", 7070, "TCP", -1e9) is not None   # predates us
    later = host_network_pod(name="late", uid="u-late", node_name="node3", created=None)
    inv.apply(k8s.ClusterObjects(pods=(first, later), nodes=nodes), at=200.0)
    assert inv.host_network_pod("node3", 7070, "TCP", 199.0) is None
    assert inv.host_network_pod("node3", 7070, "TCP", 200.0) is not None
    assert inv.identity("172.18.0.3", 250.0, port=7070, proto="TCP").pod_name == "late"


def test_only_live_scheduled_host_network_pods_own_node_ports() -> None:
    cp = k8s.ContainerPort
    pods = (host_network_pod(phase="Succeeded"),
            host_network_pod(name="failed", uid="u-f", phase="Failed", ports=(cp(9100),)),
            host_network_pod(name="unscheduled", uid="u-p", node_name=None, ports=(cp(9200),),
                             phase="Pending"),
            # a pod of its own network with a hostPort: the node forwards (DNAT) to the pod
            # IP, so connections show the pod's address, and the node port is not the pod's
            k8s.PodRecord("shop", "web", "u-w", ("10.244.1.50",), "node2", created=T_POD,
                          ports=(cp(8080, "TCP", 9300),)))
    inv = Inventory()
    inv.apply(k8s.ClusterObjects(pods=pods, nodes=objects().nodes), at=T_POD + 100)
    for port in (7070, 9100, 9200, 9300, 8080):
        ident = inv.identity("172.18.0.2", T_POD + 50, port=port, proto="TCP")
        assert (ident.kind, ident.name) == (EndpointKind.NODE, "node2"), port
    assert inv.identity("10.244.1.50", T_POD + 50, port=8080, proto="TCP").pod_name == "web"


def test_host_network_ports_pruned_with_the_rest() -> None:
    inv = Inventory(retention=100.0)
    nodes = objects().nodes
    inv.apply(k8s.ClusterObjects(pods=(host_network_pod(created=0.0),), nodes=nodes), at=10.0)
    inv.apply(k8s.ClusterObjects(nodes=nodes), at=20.0)
    inv.apply(k8s.ClusterObjects(nodes=nodes), at=110.0)
    assert inv.host_network_pod("node2", 7070, "TCP", 15.0) is not None  # ended 90 s ago
    inv.apply(k8s.ClusterObjects(nodes=nodes), at=130.0)
    assert inv.host_network_pod("node2", 7070, "TCP", 15.0) is None      # ended 110 s ago
    assert inv.identity("172.18.0.2", 15.0, port=7070, proto="TCP").kind is EndpointKind.NODE


def test_external_and_unknown() -> None:
    inv = inventory(service_cidrs=["10.96.0.0/16"])
    now = T("2026-11-20T11:40:00Z")
    db = inv.identity("192.168.100.10", now)
    assert (db.kind, db.name) == (EndpointKind.EXTERNAL, "db")
    assert inv.identity("203.0.113.77", now).name == "partner-net"
    assert inv.identity("203.0.113.1", now).name == "partner-gw"  # exact beats CIDR
    assert inv.identity("192.168.100.99", now).name is None  # a decoy ConfigMap elsewhere
    assert inv.identity("8.8.8.8", now).kind is EndpointKind.EXTERNAL
    assert inv.identity("10.244.2.200", now).kind is EndpointKind.UNKNOWN
    assert inv.identity("10.96.99.99", now).kind is EndpointKind.UNKNOWN
    assert inventory().identity("10.96.99.99", now).kind is EndpointKind.EXTERNAL
    vip = inv.identity("10.96.45.7", now)
    assert (vip.kind, vip.namespace, vip.name) == (EndpointKind.SERVICE, "shop", "backend")


def test_service_lookups() -> None:
    inv = inventory()
    now = T("2026-11-20T11:40:00Z")
    fe = inv.service_by_frontend("10.96.45.7", 9000, "TCP", now)
    assert fe is not None
    assert (fe.service.name, fe.port.name, fe.port.target_port, fe.type) == (
        "backend", "api", 9000, "ClusterIP")
    assert inv.service_by_frontend("10.96.45.7", 9001, "TCP", now) is None
    dns = inv.service_by_frontend("10.96.0.10", 53, "udp", now)
    assert dns is not None and dns.port.name == "dns"
    np = inv.service_by_nodeport(30080, "TCP", now)
    assert np is not None and (np.service.name, np.type) == ("frontend", "NodePort")
    assert inv.service_by_nodeport(30080, "UDP", now) is None
    lb = inv.service_by_frontend("192.168.200.50", 443, "TCP", now)
    assert lb is not None and (lb.service.name, lb.type) == ("frontend-lb", "LoadBalancer")


def test_service_removed_later_keeps_history() -> None:
    inv = inventory()
    objs = objects()
    keep = tuple(s for s in objs.services if s.name != "backend")
    inv.apply(k8s.ClusterObjects(pods=objs.pods, services=keep, nodes=objs.nodes),
              at=T("2026-11-20T13:00:00Z"))
    assert inv.service_by_frontend("10.96.45.7", 9000, "TCP", T("2026-11-20T12:00:00Z"))
    assert inv.service_by_frontend("10.96.45.7", 9000, "TCP", T("2026-11-20T13:00:01Z")) is None


def test_retention_drops_old_intervals() -> None:
    inv = Inventory(retention=100.0)
    p = k8s.PodRecord("a", "p", "u1", ("10.244.0.70",), created=0.0)
    inv.apply(k8s.ClusterObjects(pods=(p,)), at=10.0)
    inv.apply(k8s.ClusterObjects(), at=20.0)
    inv.apply(k8s.ClusterObjects(), at=110.0)
    assert inv.pod("10.244.0.70", 15.0) is not None  # ended at 20, 90 s ago: kept
    inv.apply(k8s.ClusterObjects(), at=130.0)
    assert inv.pod("10.244.0.70", 15.0) is None  # ended 110 s ago: dropped


# ---- the cluster-state directory ----------------------------------------------------------

def _fill(d: Path) -> None:
    for f in K8S.glob("*.json"):
        if f.name != "pods-restarted.json":
            shutil.copy(f, d / f.name)


def _replace(d: Path, name: str, text: str) -> None:
    tmp = d / f".{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, d / name)


def test_state_dir_poll_and_atomic_replace(tmp_path: Path) -> None:
    _fill(tmp_path)
    state = ClusterStateDir(tmp_path)
    assert state.poll(T("2026-11-20T11:45:00Z")) is True
    assert state.poll(T("2026-11-20T11:46:00Z")) is False  # nothing changed
    inv = state.inventory
    assert inv.identity("10.244.0.3", T_POD + 1).pod_name == "backend-5c7d8b9f4-a1b2c"
    assert inv.identity("10.244.2.5", T_POD + 1).workload == Workload("Deployment", "worker")
    assert inv.identity("192.168.100.20", T_POD).name == "visitor"
    _replace(tmp_path, "pods.json", (K8S / "pods-restarted.json").read_text())
    assert state.poll(T("2026-11-20T12:05:00Z")) is True
    assert inv.identity("10.244.0.3", T_RESTART + 1).pod_name == "backend-5c7d8b9f4-r8s9t"
    assert inv.identity("10.244.0.3", T_RESTART - 1).pod_name == "backend-5c7d8b9f4-a1b2c"


def test_state_dir_bad_file_keeps_last_good(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    _fill(tmp_path)
    state = ClusterStateDir(tmp_path)
    state.poll(100.0)
    with caplog.at_level(logging.WARNING):
        _replace(tmp_path, "pods.json", '{"items": [')  # truncated
        assert state.poll(200.0) is False
        _replace(tmp_path, "services.json", '"just a string"')
        assert state.poll(300.0) is False
    assert "pods.json" in caplog.text and "services.json" in caplog.text
    assert state.errors == 2
    assert state.inventory.identity("10.244.0.3", T_POD + 1).pod_name is not None
    assert state.inventory.service_by_nodeport(30080, "TCP", T_POD) is not None
    (tmp_path / "nodes.json").unlink()
    assert state.poll(400.0) is False
    assert state.inventory.node_by_ip("172.18.0.1", 400.0) == "node1"


def test_state_dir_missing_dir_and_files(tmp_path: Path) -> None:
    state = ClusterStateDir(tmp_path / "nope")
    assert state.poll(1.0) is False
    (tmp_path / "nope").mkdir()
    assert state.poll(2.0) is False  # empty directory: nothing to apply
    shutil.copy(K8S / "nodes.json", tmp_path / "nope" / "nodes.json")
    assert state.poll(3.0) is True
    assert state.inventory.node_by_ip("172.18.0.2", 3.0) == "node2"


# ---- hostile input (issue 8): bad objects are counted and skipped, poll never raises -------

GOOD_POD = {"metadata": {"name": "ok-1", "namespace": "shop"}, "status": {"podIP": "10.9.0.1"}}


def _list(*items: Any) -> dict[str, Any]:
    return {"kind": "List", "items": list(items)}


def test_objects_of_the_wrong_shape_are_counted_and_skipped() -> None:
    from podflow.model.losses import Losses

    doc = _list(
        {"metadata": "oops"},                                        # AttributeError before
        {"metadata": {"name": 5}},
        {"metadata": {"name": "x", "labels": {"app": ["web"]}}},
        {"metadata": {"name": "y"}, "status": "oops"},
        {"metadata": {"name": "z"}, "status": {"podIPs": ["10.9.0.2"]}},
        {"metadata": {"name": "w", "ownerReferences": "oops"}},
        {"metadata": {"name": "v", "labels": {"app": "\ud800"}}},  # the store cannot take it
        "not an object", 7, None,
        GOOD_POD)
    assert [p.name for p in k8s.parse_pods(doc)] == ["ok-1"]
    losses = Losses()
    pods = k8s.parse_pods(doc, losses)
    assert [p.name for p in pods] == ["ok-1"]
    assert losses.by_reason() == {"bad_object": 10}
    assert losses.as_stats() == {"lost_bad_object": 10}


def test_service_and_node_fields_are_type_checked() -> None:
    from podflow.model.losses import Losses

    svc = {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}
    doc = _list(
        svc,
        {"metadata": {"name": "inf"}, "spec": {"ports": [{"port": float("inf")}]}},
        {"metadata": {"name": "big"}, "spec": {"ports": [{"port": 70000}]}},
        {"metadata": {"name": "tp"}, "spec": {"ports": [{"port": 80, "targetPort": {}}]}},
        {"metadata": {"name": "ip"}, "spec": {"clusterIPs": [1]}},
        {"metadata": {"name": "lb"}, "status": {"loadBalancer": []}})
    assert [s.name for s in k8s.parse_services(doc)] == ["s"]    # OverflowError before
    losses = Losses()
    services = k8s.parse_services(doc, losses)
    assert [s.name for s in services] == ["s"] and losses.by_reason() == {"bad_object": 5}
    doc = _list(
        {"metadata": {"name": "n1", "annotations": {
            "flannel.alpha.coreos.com/backend-data": "[" * 3000}}},   # RecursionError before
        {"metadata": {"name": "n2"}, "spec": {"podCIDRs": "10.0.0.0/24"}})
    assert [(n.name, n.vtep_mac) for n in k8s.parse_nodes(doc)] == [("n1", None)]
    nodes = k8s.parse_nodes(doc, losses)
    assert [(n.name, n.vtep_mac) for n in nodes] == [("n1", None)]
    assert losses.by_reason() == {"bad_object": 6}


def test_odd_timestamps_are_no_time() -> None:
    assert k8s.parse_time("0001-01-01T00:00:00") is None     # year 0 in local time
    assert k8s.parse_time("2026-11-20T10:00:00Z" * 10) is None
    assert k8s.parse_time(["2026-11-20T10:00:00Z"]) is None


def test_non_string_kind_is_a_bad_object_not_an_unhashable_key(tmp_path: Path) -> None:
    _fill(tmp_path)
    rs = load("replicasets.json")
    rs["items"][0]["kind"] = ["ReplicaSet"]          # TypeError in Inventory.apply before
    (tmp_path / "replicasets.json").write_text(json.dumps(rs))
    state = ClusterStateDir(tmp_path)
    assert state.poll(100.0) is True
    assert state.losses.by_reason() == {"bad_object": 1}
    assert state.inventory.identity("10.244.0.3", T_POD + 1).pod_name is not None


def _nested(depth: int) -> str:
    return '{"items": ' + "[" * depth + "]" * depth + "}"


def test_deeply_nested_json_is_refused_and_last_good_kept(tmp_path: Path) -> None:
    _fill(tmp_path)
    state = ClusterStateDir(tmp_path)
    assert state.poll(100.0) is True
    _replace(tmp_path, "pods.json", _nested(100_000))      # RecursionError before
    assert state.poll(200.0) is False
    _replace(tmp_path, "services.json", _nested(200))
    assert state.poll(300.0) is False
    assert state.losses.by_reason() == {"too_deep": 2} and state.errors == 2
    assert state.inventory.identity("10.244.0.3", T_POD + 1).pod_name is not None
    assert state.inventory.service_by_nodeport(30080, "TCP", T_POD) is not None


def test_poll_never_raises_and_keeps_the_last_good_state(tmp_path: Path) -> None:
    _fill(tmp_path)
    state = ClusterStateDir(tmp_path)
    state.max_file_bytes = 64 * 1024
    assert state.poll(100.0) is True
    svc = load("services.json")
    front = next(s for s in svc["items"] if s["metadata"]["name"] == "frontend")
    front["spec"]["ports"][0]["port"] = float("inf")          # OverflowError before
    _replace(tmp_path, "services.json", json.dumps(svc))
    pods = load("pods.json")
    pods["items"][0]["metadata"]["creationTimestamp"] = "0001-01-01T00:00:00"
    pods["items"][1]["metadata"] = "oops"                       # AttributeError before
    _replace(tmp_path, "pods.json", json.dumps(pods))
    assert state.poll(200.0) is True
    (tmp_path / "nodes.json").unlink()
    (tmp_path / "nodes.json").mkdir()                            # not a file
    (tmp_path / "jobs.json").write_bytes(b'{"items": [], "x": "\xff\xfe"}')   # not UTF-8
    (tmp_path / "namespaces.json").write_text(" " * (64 * 1024 + 1))        # too large
    _replace(tmp_path, "configmaps.json", '{"items": {"a": 1}}')             # not a List
    assert state.poll(300.0) is False
    assert state.poll(400.0) is False                          # counted once per version
    assert state.losses.by_reason() == {
        "bad_object": 2, "unreadable_file": 1, "bad_json": 1, "oversized_file": 1,
        "not_kubernetes": 1}
    assert state.errors == 4
    inv = state.inventory
    assert inv.node_by_ip("172.18.0.1", 400.0) == "node1"
    assert inv.identity("192.168.100.20", 400.0).name == "visitor"
    assert inv.service_by_nodeport(30080, "TCP", 400.0) is None   # that service was bad


def test_a_fifo_in_place_of_a_file_does_not_hang_the_poll(tmp_path: Path) -> None:
    import threading

    _fill(tmp_path)
    (tmp_path / "pods.json").unlink()
    os.mkfifo(tmp_path / "pods.json")
    state = ClusterStateDir(tmp_path)
    done: list[bool] = []
    t = threading.Thread(target=lambda: done.append(state.poll(100.0)), daemon=True)
    t.start()
    t.join(5.0)
    if t.is_alive():   # release the reader blocked in open() before failing
        os.close(os.open(tmp_path / "pods.json", os.O_WRONLY | os.O_NONBLOCK))
    assert done == [True]
    assert state.losses.by_reason() == {"unreadable_file": 1}


def test_poll_counts_a_defect_instead_of_raising(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(tmp_path)
    state = ClusterStateDir(tmp_path)

    def boom(*_: Any) -> bool:
        raise RuntimeError("a defect")

    monkeypatch.setattr(state.inventory, "apply", boom)
    assert state.poll(100.0) is False
    assert state.losses.by_reason() == {"poll_failed": 1}


def test_nesting_depth_ignores_brackets_in_strings() -> None:
    from podflow.inventory.snapshot_dir import decode_document, nesting_depth

    assert nesting_depth('{"a": "[[[[", "b": [["\\"]"]]}') == 3
    assert nesting_depth("[" * 10 + "]" * 10) == 10
    assert decode_document(b'{"items": []}') == {"items": []}
    with pytest.raises(ValueError, match="too_deep"):
        decode_document(b"[" * 101 + b"]" * 101)


def test_many_holders_of_one_address_apply_in_near_linear_time() -> None:
    import time

    # a hostile snapshot: 10k pods claiming one IP (append + sort per pod took ~20 s)
    pods = tuple(k8s.PodRecord("ns", f"p{i}", f"u{i}", ("10.9.0.1",), created=float(i))
                 for i in range(10_000))
    inv = Inventory()
    started = time.process_time()
    inv.apply(k8s.ClusterObjects(pods=pods), at=20_000.0)
    assert time.process_time() - started < 5.0
    assert inv.identity("10.9.0.1", 5000.5).pod_name == "p5000"


KIND_FILES = ("pods.json", "replicasets.json", "jobs.json", "deployments.json", "services.json",
              "endpointslices.json", "nodes.json", "namespaces.json", "configmaps.json")


def _per_kind_dir(tmp: Path) -> Path:
    d = tmp / "per-kind"
    d.mkdir()
    for name in KIND_FILES:
        shutil.copy(K8S / name, d / name)
    return d


def test_one_mixed_list_reads_as_the_per_kind_files(tmp_path: Path) -> None:
    """``kubectl get pods,services,... -A -o json > cluster.json``: one List of mixed kinds,
    sorted by each item's kind (before: every endpoint ``unknown``, and not a word)."""
    items: list[Any] = []
    for name in KIND_FILES:
        doc = load(name)
        kind = {"pods.json": "Pod", "replicasets.json": "ReplicaSet", "jobs.json": "Job",
                "deployments.json": "Deployment", "services.json": "Service",
                "endpointslices.json": "EndpointSlice", "nodes.json": "Node",
                "namespaces.json": "Namespace", "configmaps.json": "ConfigMap"}[name]
        items += [{**item, "kind": kind} for item in doc["items"]]
    items.append({"kind": "Secret", "metadata": {"name": "s", "namespace": "shop"}})
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "cluster.json").write_text(json.dumps({"kind": "List", "items": items}))
    one, ref = ClusterStateDir(mixed), ClusterStateDir(_per_kind_dir(tmp_path))
    assert one.poll(T("2026-11-21T10:10:00Z")) and ref.poll(T("2026-11-21T10:10:00Z"))
    assert one.objects() == ref.objects()
    assert one.pod_count == ref.pod_count > 0
    assert one.losses.total() == 0, "a kind podflow does not read is not a loss"
    pod = ref.objects().pods[0]
    at = T("2026-11-21T10:10:00Z")
    got = one.inventory.identity(pod.ips[0], at)
    assert got.kind is EndpointKind.POD and got == ref.inventory.identity(pod.ips[0], at)


def test_items_without_a_kind_take_the_lists_kind(tmp_path: Path) -> None:
    doc = load("pods.json")
    doc["kind"] = "PodList"
    for item in doc["items"]:
        item.pop("kind", None)
    (tmp_path / "whatever.json").write_text(json.dumps(doc))
    (tmp_path / ".half-written.json").write_text("{")  # an atomic writer's temporary file
    state = ClusterStateDir(tmp_path)
    state.poll(T("2026-11-21T10:10:00Z"))
    assert state.pod_count == len(doc["items"]) > 0
    assert state.losses.total() == 0


def test_items_of_no_known_kind_are_counted(tmp_path: Path) -> None:
    doc = load("pods.json")
    for item in doc["items"]:
        item.pop("kind", None)
    (tmp_path / "cluster.json").write_text(json.dumps(doc))  # a plain List, no kinds
    state = ClusterStateDir(tmp_path)
    state.poll(T("2026-11-21T10:10:00Z"))
    assert state.pod_count == 0
    assert state.losses.by_reason() == {"no_kind": len(doc["items"])}
