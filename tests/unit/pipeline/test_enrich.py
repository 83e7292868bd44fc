"""Address -> Endpoint: identity at the flow's start; host-network servers named by port."""

from __future__ import annotations

from podflow.model.flow import Address, EndpointKind
from podflow.pipeline.enrich import endpoint
from tests.unit.inventory.test_history import T_POD, Gateways, host_network_inventory

INV = host_network_inventory()
NOW = T_POD + 60


def test_server_end_at_a_declared_port_is_the_host_network_pod() -> None:
    e = endpoint(Address("172.18.0.2", 7070), INV, None, NOW, "TCP")
    assert (e.ip, e.port, e.kind, e.namespace, e.pod_name, e.node_name, e.name) == (
        "172.18.0.2", 7070, EndpointKind.HOST_NETWORK_POD, "monitoring", "node-exporter-x7k2p",
        "node2", None)
    assert e.display() == "monitoring/node-exporter-x7k2p"
    assert endpoint(Address("172.18.0.2", 8125), INV, None, NOW, "UDP").pod_name == \
        "node-exporter-x7k2p"
    # through a gateway address the profile says stands for the node
    gw = endpoint(Address("10.244.1.0", 7070), INV, Gateways(), NOW, "TCP")
    assert (gw.ip, gw.kind, gw.pod_name) == ("10.244.1.0", EndpointKind.HOST_NETWORK_POD,
                                             "node-exporter-x7k2p")


def test_without_a_protocol_or_at_another_port_it_is_the_node() -> None:
    for e in (endpoint(Address("172.18.0.2", 7070), INV, None, NOW),         # a client end
              endpoint(Address("172.18.0.2", 22), INV, None, NOW, "TCP"),
              endpoint(Address("172.18.0.2", 7070), INV, None, NOW, "UDP"),
              endpoint(Address("172.18.0.2"), INV, None, NOW, "TCP"),        # no port
              endpoint(Address("172.18.0.2", 7070), INV, None, T_POD - 1, "TCP")):
        assert (e.kind, e.name, e.node_name, e.pod_name) == (EndpointKind.NODE, "node2",
                                                             "node2", None)
