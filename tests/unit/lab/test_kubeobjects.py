"""Cluster-state directory: the JSON shape ``kubectl get KIND -A -o json`` prints."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from podflow.lab.kubeobjects import stable_uid, write_cluster_state
from podflow.lab.state import (
    ExternalState,
    LabState,
    NodeState,
    PodState,
    ServicePortState,
    ServiceState,
)

T0 = 1_700_000_000.0
TRAFFIC = [
    {"from": "shop/frontend", "to": "service/shop/backend:9000", "every": "1s"},
    {"from": "shop/backend", "to": "service/data/cache:6379", "every": "2s"},
    {"from": "shop/backend", "to": "external/db:5432", "every": "5s"},
    {"from": "external/visitor", "to": "nodeport/30080", "every": "2s"},
    {"from": "shop/frontend", "to": "pod/data/cache:6379", "every": "1s"},
]


def _pod(ns: str, wl: str, suffix: str, node: int, ip: str, ports: list[str]) -> PodState:
    return PodState(ns, f"{wl}-7c9f8d6b5-{suffix}", wl, f"node{node}", ip,
                    f"pf-shop-{wl}-{suffix}", {"app": wl}, uid=f"uid-{wl}-{suffix}",
                    replicaset=f"{wl}-7c9f8d6b5", ports=ports, created=T0 + 10)


def lab_state() -> LabState:
    """The issue's example ``shop`` lab, hand-built (shared by the unit tests)."""
    nodes = [NodeState(f"node{i}", i, f"pf-shop-node{i}", f"172.18.0.{i + 1}",
                       f"10.244.{i - 1}.0/24", f"10.244.{i - 1}.0",
                       None if i == 3 else f"aa:bb:cc:00:00:0{i}") for i in (1, 2, 3)]
    pods = [_pod("shop", "frontend", "aaaaa", 1, "10.244.0.2", ["tcp/8080"]),
            _pod("shop", "frontend", "bbbbb", 2, "10.244.1.2", ["tcp/8080"]),
            _pod("shop", "backend", "ccccc", 1, "10.244.0.3", ["tcp/9000"]),
            _pod("shop", "backend", "ddddd", 2, "10.244.1.3", ["tcp/9000"]),
            _pod("shop", "backend", "eeeee", 3, "10.244.2.2", ["tcp/9000"]),
            _pod("data", "cache", "fffff", 3, "10.244.2.3", ["tcp/6379"])]
    services = [
        ServiceState("shop", "frontend", "NodePort", "10.96.0.10", {"app": "frontend"},
                     [ServicePortState("http", 80, 8080, "TCP", 30080)]),
        ServiceState("shop", "backend", "ClusterIP", "10.96.0.11", {"app": "backend"},
                     [ServicePortState("api", 9000, 9000)]),
        ServiceState("data", "cache", "ClusterIP", "10.96.0.12", {"app": "cache"},
                     [ServicePortState("redis", 6379, 6379)])]
    externals = [ExternalState("db", "192.168.100.10", "pf-shop-ext-db", ["tcp/5432"],
                               dns_names=["db.example.com", "postgres.example.com"]),
                 ExternalState("visitor", "192.168.100.20", "pf-shop-ext-visitor")]
    spec = {"namespaces": ["shop", "data"], "traffic": TRAFFIC,
            "workloads": [{"namespace": "shop", "name": "frontend", "replicas": 2,
                           "labels": {"app": "frontend"}},
                          {"namespace": "shop", "name": "backend", "replicas": 3,
                           "labels": {"app": "backend"}},
                          {"namespace": "data", "name": "cache", "replicas": 1,
                           "labels": {"app": "cache"}}]}
    return LabState("shop", "flannel-vxlan", None, "10.244.0.0/16", "10.96.0.0/16",
                    "172.18.0.0/24", T0, nodes, pods, services, externals, [], spec)


def _load(d: Path, name: str) -> list[dict[str, Any]]:
    doc = json.loads((d / name).read_text())
    assert doc["apiVersion"] == "v1" and doc["kind"] == "List"
    assert doc["metadata"] == {"resourceVersion": ""}
    for item in doc["items"]:
        assert {"apiVersion", "kind", "metadata"} <= item.keys()
        assert item["metadata"]["uid"] and item["metadata"]["name"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
                            item["metadata"]["creationTimestamp"])
    items: list[dict[str, Any]] = doc["items"]
    return items


def test_pods_and_owner_chain(tmp_path: Path) -> None:
    write_cluster_state(lab_state(), tmp_path)
    pods = {p["metadata"]["name"]: p for p in _load(tmp_path, "pods.json")}
    assert len(pods) == 6
    p = pods["frontend-7c9f8d6b5-aaaaa"]
    md = p["metadata"]
    assert md["namespace"] == "shop" and md["uid"] == "uid-frontend-aaaaa"
    assert md["labels"] == {"app": "frontend", "pod-template-hash": "7c9f8d6b5"}
    assert md["creationTimestamp"] == "2023-11-14T22:13:30Z"
    (owner,) = md["ownerReferences"]
    assert owner["kind"] == "ReplicaSet" and owner["name"] == "frontend-7c9f8d6b5"
    assert owner["controller"] is True
    assert p["spec"]["nodeName"] == "node1"
    assert p["spec"]["containers"][0]["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    st = p["status"]
    assert st["phase"] == "Running" and st["podIP"] == "10.244.0.2"
    assert st["podIPs"] == [{"ip": "10.244.0.2"}] and st["hostIP"] == "172.18.0.2"
    assert st["startTime"] == "2023-11-14T22:13:30Z"

    rsets = {r["metadata"]["name"]: r for r in _load(tmp_path, "replicasets.json")}
    rs = rsets["frontend-7c9f8d6b5"]
    assert rs["kind"] == "ReplicaSet" and rs["apiVersion"] == "apps/v1"
    assert rs["metadata"]["uid"] == owner["uid"]
    (dep_ref,) = rs["metadata"]["ownerReferences"]
    assert dep_ref["kind"] == "Deployment" and dep_ref["name"] == "frontend"
    deps = {d["metadata"]["name"]: d for d in _load(tmp_path, "deployments.json")}
    assert deps["frontend"]["metadata"]["uid"] == dep_ref["uid"]
    assert deps["backend"]["spec"]["replicas"] == 3


def test_services_and_endpointslices(tmp_path: Path) -> None:
    write_cluster_state(lab_state(), tmp_path)
    svcs = {(s["metadata"]["namespace"], s["metadata"]["name"]): s
            for s in _load(tmp_path, "services.json")}
    fe = svcs[("shop", "frontend")]["spec"]
    assert fe["type"] == "NodePort" and fe["externalTrafficPolicy"] == "Cluster"
    assert fe["clusterIP"] == "10.96.0.10" and fe["clusterIPs"] == ["10.96.0.10"]
    assert fe["ports"] == [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080,
                            "nodePort": 30080}]
    assert fe["selector"] == {"app": "frontend"} and fe["sessionAffinity"] == "None"
    be = svcs[("shop", "backend")]["spec"]
    assert be["type"] == "ClusterIP" and "externalTrafficPolicy" not in be
    assert "nodePort" not in be["ports"][0]

    slices = _load(tmp_path, "endpointslices.json")
    by_svc = {(s["metadata"]["namespace"], s["metadata"]["labels"]["kubernetes.io/service-name"]):
              s for s in slices}
    sl = by_svc[("shop", "backend")]
    assert sl["apiVersion"] == "discovery.k8s.io/v1" and sl["addressType"] == "IPv4"
    assert sorted(a for e in sl["endpoints"] for a in e["addresses"]) == [
        "10.244.0.3", "10.244.1.3", "10.244.2.2"]
    ep = sl["endpoints"][0]
    assert ep["conditions"]["ready"] is True and ep["nodeName"] == "node1"
    assert ep["targetRef"] == {"kind": "Pod", "namespace": "shop",
                               "name": "backend-7c9f8d6b5-ccccc", "uid": "uid-backend-ccccc"}
    assert sl["ports"] == [{"name": "api", "port": 9000, "protocol": "TCP"}]


def test_load_balancer_service_as_metallb_leaves_it_and_the_agent_reads_it(
        tmp_path: Path) -> None:
    from podflow.inventory import k8s
    from podflow.inventory.history import Inventory

    st = lab_state()
    st.services.append(ServiceState(
        "shop", "frontend-lb", "LoadBalancer", "10.96.0.13", {"app": "frontend"},
        [ServicePortState("https", 443, 8080, "TCP", 30443)], "Local",
        loadBalancerIP="172.18.0.240", lb_holder="node2"))
    write_cluster_state(st, tmp_path)
    svcs = {s["metadata"]["name"]: s for s in _load(tmp_path, "services.json")}
    lb = svcs["frontend-lb"]
    assert (lb["spec"]["type"], lb["spec"]["externalTrafficPolicy"],
            lb["spec"]["allocateLoadBalancerNodePorts"]) == ("LoadBalancer", "Local", True)
    assert lb["spec"]["ports"] == [{"name": "https", "protocol": "TCP", "port": 443,
                                    "targetPort": 8080, "nodePort": 30443}]
    assert lb["status"] == {"loadBalancer": {"ingress": [{"ip": "172.18.0.240",
                                                          "ipMode": "VIP"}]}}
    assert svcs["frontend"]["status"] == {"loadBalancer": {}}
    assert "allocateLoadBalancerNodePorts" not in svcs["frontend"]["spec"]
    slices = {s["metadata"]["labels"]["kubernetes.io/service-name"]: s
              for s in _load(tmp_path, "endpointslices.json")}
    assert {e["nodeName"] for e in slices["frontend-lb"]["endpoints"]} == {"node1", "node2"}

    # what the agent makes of it: the VIP is a LoadBalancer frontend, the nodePort a NodePort
    doc = json.loads((tmp_path / "services.json").read_text())
    rec = {r.name: r for r in k8s.parse_services(doc)}["frontend-lb"]
    assert (rec.type, rec.external_ips, rec.external_traffic_policy) == (
        "LoadBalancer", ("172.18.0.240",), "Local")
    assert rec.ports[0].node_port == 30443
    inv = Inventory()
    inv.apply(k8s.ClusterObjects(services=tuple(k8s.parse_services(doc))), at=T0 + 100)
    fe = inv.service_by_frontend("172.18.0.240", 443, "TCP", T0 + 100)
    assert fe is not None and (fe.service.name, fe.type) == ("frontend-lb", "LoadBalancer")
    np = inv.service_by_nodeport(30443, "TCP", T0 + 100)
    assert np is not None and (np.service.name, np.type) == ("frontend-lb", "NodePort")


def test_nodes_namespaces_configmap(tmp_path: Path) -> None:
    write_cluster_state(lab_state(), tmp_path)
    nodes = {n["metadata"]["name"]: n for n in _load(tmp_path, "nodes.json")}
    n1 = nodes["node1"]
    assert n1["spec"] == {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}
    assert n1["status"]["addresses"] == [{"type": "InternalIP", "address": "172.18.0.2"},
                                         {"type": "Hostname", "address": "node1"}]
    assert n1["metadata"]["labels"]["kubernetes.io/hostname"] == "node1"
    ann = n1["metadata"]["annotations"]
    assert ann["flannel.alpha.coreos.com/public-ip"] == "172.18.0.2"
    assert ann["flannel.alpha.coreos.com/backend-type"] == "vxlan"
    assert ann["flannel.alpha.coreos.com/kube-subnet-manager"] == "true"
    assert json.loads(ann["flannel.alpha.coreos.com/backend-data"]) == {
        "VNI": 1, "VtepMAC": "aa:bb:cc:00:00:01"}
    assert "flannel.alpha.coreos.com/backend-data" not in nodes["node3"]["metadata"][
        "annotations"]
    ns = {n["metadata"]["name"] for n in _load(tmp_path, "namespaces.json")}
    assert {"shop", "data", "podflow", "default"} <= ns
    cm, hosts = _load(tmp_path, "configmaps.json")
    assert cm["kind"] == "ConfigMap"
    assert (cm["metadata"]["namespace"], cm["metadata"]["name"]) == ("podflow", "external-names")
    assert cm["data"] == {"db": "192.168.100.10", "visitor": "192.168.100.20"}
    assert (hosts["metadata"]["namespace"], hosts["metadata"]["name"]) == ("kube-system",
                                                                           "coredns-hosts")
    assert hosts["data"] == {"hosts": "192.168.100.10 db.example.com postgres.example.com\n"}


def test_datapath_annotations_and_host_network_pods(tmp_path: Path) -> None:
    state = lab_state()
    state.cni = "calico-vxlan"
    node = state.nodes[0]
    state.pods.append(PodState("shop", "agent-x", "agent", "node1", node.ip, node.netns,
                               {"app": "agent"}, uid="u-agent", host_network=True))
    write_cluster_state(state, tmp_path)
    ann = _load(tmp_path, "nodes.json")[0]["metadata"]["annotations"]
    assert ann == {"projectcalico.org/IPv4Address": "172.18.0.2/24",
                   "projectcalico.org/IPv4VXLANTunnelAddr": "10.244.0.0",
                   "projectcalico.org/VXLANTunnelMACAddr": "aa:bb:cc:00:00:01"}
    pod = next(p for p in _load(tmp_path, "pods.json")
               if p["metadata"]["name"] == "agent-x")
    assert pod["spec"]["hostNetwork"] is True
    assert pod["status"]["podIP"] == pod["status"]["hostIP"] == "172.18.0.2"
    state.cni = "flannel-host-gw"
    write_cluster_state(state, tmp_path)
    ann = _load(tmp_path, "nodes.json")[0]["metadata"]["annotations"]
    assert ann["flannel.alpha.coreos.com/backend-type"] == "host-gw"
    assert "flannel.alpha.coreos.com/backend-data" not in ann
    state.cni = "macvlan"
    write_cluster_state(state, tmp_path)
    assert "annotations" not in _load(tmp_path, "nodes.json")[0]["metadata"]


def test_host_network_pods_declare_their_ports_as_host_ports(tmp_path: Path) -> None:
    from podflow.inventory.history import Inventory
    from podflow.inventory.k8s import ClusterObjects, ContainerPort, parse_nodes, parse_pods
    from podflow.model.flow import EndpointKind

    state = lab_state()
    node = state.nodes[1]
    state.pods.append(PodState("mon", "exporter-x", "exporter", "node2", node.ip, node.netns,
                               {"app": "exporter"}, uid="u-exp", ports=["tcp/7070", "udp/8125"],
                               created=T0 + 10, host_network=True))
    write_cluster_state(state, tmp_path)
    pods = {p["metadata"]["name"]: p for p in _load(tmp_path, "pods.json")}
    assert pods["exporter-x"]["spec"]["containers"][0]["ports"] == [
        {"containerPort": 7070, "hostPort": 7070, "protocol": "TCP"},
        {"containerPort": 8125, "hostPort": 8125, "protocol": "UDP"}]
    # other pods declare their container ports only, as before
    assert pods["cache-7c9f8d6b5-fffff"]["spec"]["containers"][0]["ports"] == [
        {"containerPort": 6379, "protocol": "TCP"}]
    # what the agent reads from it: the pod owns node2's 7070/TCP and 8125/UDP
    docs = {n: json.loads((tmp_path / n).read_text()) for n in ("pods.json", "nodes.json")}
    records = {p.name: p for p in parse_pods(docs["pods.json"])}
    assert records["exporter-x"].ports == (ContainerPort(7070, "TCP", 7070),
                                           ContainerPort(8125, "UDP", 8125))
    inv = Inventory()
    inv.apply(ClusterObjects(pods=tuple(records.values()),
                             nodes=tuple(parse_nodes(docs["nodes.json"]))), at=T0 + 20)
    ident = inv.identity(node.ip, T0 + 15, port=7070, proto="TCP")
    assert (ident.kind, ident.namespace, ident.pod_name) == (EndpointKind.HOST_NETWORK_POD,
                                                             "mon", "exporter-x")
    assert inv.identity(node.ip, T0 + 15, port=8125, proto="UDP").pod_name == "exporter-x"
    assert inv.identity(node.ip, T0 + 15, port=8125, proto="TCP").kind is EndpointKind.NODE


def test_stable_and_only_changed_files_rewritten(tmp_path: Path) -> None:
    state = lab_state()
    write_cluster_state(state, tmp_path)
    before = {p.name: (p.stat().st_ino, p.read_text()) for p in tmp_path.iterdir()}
    assert len(before) == 8
    write_cluster_state(state, tmp_path)
    assert {p.name: (p.stat().st_ino, p.read_text()) for p in tmp_path.iterdir()} == before

    gone = state.pods.pop(2)  # a backend pod is deleted
    write_cluster_state(state, tmp_path)
    after = {p.name: (p.stat().st_ino, p.read_text()) for p in tmp_path.iterdir()}
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {"pods.json", "endpointslices.json", "deployments.json",
                       "replicasets.json"}
    assert gone.name not in after["pods.json"][1]
    assert not list(tmp_path.glob(".*.tmp"))


def test_uids_stable_without_state_uids() -> None:
    assert stable_uid("Pod", "a", "b") == stable_uid("Pod", "a", "b")
    assert stable_uid("Pod", "a", "b") != stable_uid("Pod", "a", "c")


def test_node_annotations_are_each_datapaths_own() -> None:
    from podflow.lab.datapath import DATAPATHS, datapath_for
    from podflow.lab.kubeobjects import node_annotations

    state = lab_state()
    node = state.nodes[0]
    for cni in DATAPATHS:
        state.cni = cni
        assert node_annotations(state, node) == datapath_for(cni).node_annotations(state, node)
    state.cni = "calico-bgp"
    assert node_annotations(state, node) == {"projectcalico.org/IPv4Address": "172.18.0.2/24"}
    state.cni = "flannel-vxlan"
    data = json.loads(node_annotations(state, node)["flannel.alpha.coreos.com/backend-data"])
    assert data == {"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:01"}
    assert "flannel.alpha.coreos.com/backend-data" not in node_annotations(state,
                                                                           state.nodes[2])
