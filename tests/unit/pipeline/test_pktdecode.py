"""PacketFlow -> Flow: the server end is named by its declared port, the client is not."""

from __future__ import annotations

from podflow.cni.profile import CniProfile
from podflow.model.flow import EndpointKind, Protocol
from podflow.pipeline.context import DecodeContext
from podflow.pipeline.pktdecode import packet_flow_to_flow
from podflow.pipeline.pkttrack import PacketFlow
from tests.unit.inventory.test_history import T_POD, host_network_inventory

CTX = DecodeContext("node2", host_network_inventory(), CniProfile("generic", "node2"))
AT = T_POD + 60


def test_packets_to_a_host_network_pod_name_it_as_destination() -> None:
    f = packet_flow_to_flow(PacketFlow(6, "10.244.0.2", 41000, "172.18.0.2", 7070, AT, AT + 1),
                            CTX, True)
    assert f is not None and f.protocol is Protocol.TCP
    assert (f.source.kind, f.source.pod_name) == (EndpointKind.POD, "frontend-6d8f9c7b5-x2k4p")
    assert (f.destination.kind, f.destination.pod_name, f.destination.port) == (
        EndpointKind.HOST_NETWORK_POD, "node-exporter-x7k2p", 7070)
    u = packet_flow_to_flow(PacketFlow(17, "10.244.0.2", 41000, "172.18.0.2", 8125, AT, AT),
                            CTX, True)
    assert u is not None and u.destination.kind is EndpointKind.HOST_NETWORK_POD
    tcp_at_udp_port = packet_flow_to_flow(
        PacketFlow(6, "10.244.0.2", 41000, "172.18.0.2", 8125, AT, AT), CTX, True)
    assert tcp_at_udp_port is not None
    assert (tcp_at_udp_port.destination.kind, tcp_at_udp_port.destination.name) == (
        EndpointKind.NODE, "node2")


def test_packets_from_the_node_at_a_declared_port_keep_the_node_as_client() -> None:
    f = packet_flow_to_flow(PacketFlow(6, "172.18.0.2", 7070, "10.244.0.3", 9000, AT, AT + 1),
                            CTX, True)
    assert f is not None
    assert (f.source.kind, f.source.name, f.source.port) == (EndpointKind.NODE, "node2", 7070)
    assert (f.destination.kind, f.destination.pod_name) == (EndpointKind.POD,
                                                            "backend-5c7d8b9f4-a1b2c")
