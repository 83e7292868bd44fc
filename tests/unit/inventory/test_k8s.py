"""Kubernetes JSON parsing of the pods' declared container ports (the rest of the parsing is
tested with the inventory in ``test_history.py``)."""

from __future__ import annotations

from typing import Any

from podflow.inventory import k8s
from podflow.inventory.k8s import ContainerPort
from podflow.model.losses import Losses


def pod(name: str = "agent-1", **spec: Any) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "mon"},
            "spec": {"nodeName": "node2", **spec}, "status": {"podIP": "172.18.0.2"}}


def test_container_ports_with_protocol_and_host_port() -> None:
    doc = pod(hostNetwork=True, containers=[
        {"name": "exporter", "ports": [{"containerPort": 7070, "hostPort": 7070, "name": "m"},
                                       {"containerPort": 8125, "protocol": "udp"}]},
        {"name": "other", "ports": [{"containerPort": 9, "protocol": "SCTP"}]},
        {"name": "no-ports"}])
    (p,) = k8s.parse_pods(doc)
    assert p.host_network
    assert p.ports == (ContainerPort(7070, "TCP", 7070), ContainerPort(8125, "UDP", None),
                       ContainerPort(9, "SCTP", None))


def test_sidecar_ports_count_and_plain_init_containers_do_not() -> None:
    doc = pod(containers=[{"name": "app", "ports": [{"containerPort": 80}]}],
              initContainers=[
                  {"name": "setup", "ports": [{"containerPort": 9999}]},
                  {"name": "proxy", "restartPolicy": "Always",
                   "ports": [{"containerPort": 15090}]}])
    (p,) = k8s.parse_pods(doc)
    assert [cp.port for cp in p.ports] == [80, 15090]


def test_pods_without_ports_declare_none() -> None:
    assert k8s.parse_pods(pod())[0].ports == ()
    assert k8s.parse_pods(pod(containers=[{"name": "a", "ports": None}]))[0].ports == ()
    assert k8s.PodRecord("a", "b", "u").ports == ()


def test_a_malformed_port_entry_makes_the_pod_a_bad_object() -> None:
    bad_ports: list[Any] = [
        [{"containerPort": "7070"}],                     # a name where a number belongs
        [{"containerPort": 70000}],                      # out of range
        [{"containerPort": 0}],                          # no port
        [{"protocol": "TCP"}],                           # missing
        [{"containerPort": 7070, "protocol": 6}],
        [{"containerPort": 7070, "hostPort": -1}],
        [{"containerPort": 7070, "protocol": "\ud800"}],
        [{"containerPort": True}],
        ["7070"],
        "7070",
    ]
    items = [pod(f"bad-{i}", containers=[{"name": "c", "ports": ports}])
             for i, ports in enumerate(bad_ports)]
    items += [pod("bad-containers", containers="oops"),
              pod("bad-init", initContainers=[{"name": "i", "restartPolicy": 1}]),
              pod("good", containers=[{"name": "c", "ports": [{"containerPort": 7070}]}])]
    losses = Losses()
    pods = k8s.parse_pods({"kind": "List", "items": items}, losses)
    assert [(p.name, p.ports) for p in pods] == [("good", (ContainerPort(7070),))]
    assert losses.by_reason() == {"bad_object": len(items) - 1}


def test_service_frontends_from_external_ips_and_load_balancer_status() -> None:
    doc = {"kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.20",
                    "externalIPs": ["192.0.2.7"], "externalTrafficPolicy": "Local",
                    "ports": [{"name": "https", "port": 443, "targetPort": 8443,
                               "nodePort": 30443}]},
           "status": {"loadBalancer": {"ingress": [
               {"ip": "172.18.0.240", "ipMode": "VIP"},
               {"hostname": "web.lb.example.com"},       # a hostname-only ingress has no IP
               {"ip": "172.18.0.241", "ports": [{"port": 443, "protocol": "TCP"}]}]}}}
    (svc,) = k8s.parse_services(doc)
    assert (svc.type, svc.cluster_ips, svc.external_traffic_policy) == (
        "LoadBalancer", ("10.96.0.20",), "Local")
    assert svc.external_ips == ("192.0.2.7", "172.18.0.240", "172.18.0.241")
    assert svc.ports[0].node_port == 30443
    pending = {**doc, "status": {"loadBalancer": {}}}      # no VIP assigned yet
    assert k8s.parse_services(pending)[0].external_ips == ("192.0.2.7",)
