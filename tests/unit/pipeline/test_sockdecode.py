"""Socket connection -> Flow, and the multi-vantage scenarios the correlation tests reuse."""

from __future__ import annotations

import dataclasses

from podflow.cni.profile import CniProfile
from podflow.model.conntrack import CtEntry, CtEventType, CtStatus, CtTuple
from podflow.model.flow import Counters, EndpointKind, Flow, FlowState, Protocol, Traffic
from podflow.model.sockets import TcpStats
from podflow.pipeline.context import DecodeContext
from podflow.pipeline.ctdecode import conntrack_to_flow
from podflow.pipeline.keys import flow_id_for
from podflow.pipeline.keys import socket_keys as keys
from podflow.pipeline.sockdecode import socket_to_flow
from podflow.pipeline.socktrack import SockConn
from tests.unit.inventory.test_history import T, host_network_inventory, inventory
from tests.unit.pipeline.test_nat import DNAT, NODE1, SNAT

AT = T("2026-11-20T11:30:00Z")
NODE2 = CniProfile("flannel-vxlan", "node2", ("10.244.1.0/24",), ("10.244.0.0/16",),
                   gateway_offsets=(0, 1))
CTX1 = DecodeContext("node1", inventory(), NODE1)
CTX2 = DecodeContext("node2", inventory(), NODE2)
TCP = TcpStats(1, 250, 40, 0, 2, 1000, 5000, 8, 9)


def conn(local: tuple[str, int], remote: tuple[str, int], side: str, t: float = AT + 0.6,
         **kw: object) -> SockConn:
    base = SockConn("pod", 1, 6, local[0], local[1], remote[0], remote[1], side, t, t + 1,
                    "ESTABLISHED", TCP, 42, "curl", 7)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def _ct(orig: tuple[str, int, str, int], reply: tuple[str, int, str, int], status: CtStatus,
        start: float = AT) -> CtEntry:
    ns = int(start * 1e9)
    return CtEntry(CtEventType.DESTROY, CtTuple(orig[0], orig[2], 6, orig[1], orig[3]),
                   CtTuple(reply[0], reply[2], 6, reply[1], reply[3]), status=status,
                   orig_packets=10, orig_bytes=1600, reply_packets=9, reply_bytes=5600,
                   start_ns=ns, stop_ns=ns + 2_000_000_000, received_at=start + 3)


def clusterip_views() -> list[Flow]:
    """frontend (node1) -> backend VIP 10.96.45.7:9000 -> backend pod 10.244.1.3 (node2):
    client socket, node1 conntrack (DNAT), node2 conntrack (plain), server socket."""
    client = socket_to_flow(conn(("10.244.0.2", 41000), ("10.96.45.7", 9000), "client"), CTX1)
    ct1 = conntrack_to_flow(_ct(("10.244.0.2", 41000, "10.96.45.7", 9000),
                                ("10.244.1.3", 9000, "10.244.0.2", 41000), DNAT), CTX1)
    ct2 = conntrack_to_flow(_ct(("10.244.0.2", 41000, "10.244.1.3", 9000),
                                ("10.244.1.3", 9000, "10.244.0.2", 41000), CtStatus(0), AT + 0.001),
                            CTX2)
    server = socket_to_flow(conn(("10.244.1.3", 9000), ("10.244.0.2", 41000), "server",
                                 AT + 0.9), CTX2)
    out = [client, ct1, ct2, server]
    assert all(f is not None for f in out)
    return [f for f in out if f is not None]


def nodeport_views() -> list[Flow]:
    """visitor -> node1:30080 (DNAT + SNAT to VTEP 10.244.0.0) -> frontend 10.244.1.2 on node2:
    node1 conntrack and the frontend's server socket, which sees the VTEP."""
    ct1 = conntrack_to_flow(_ct(("192.168.100.20", 51000, "172.18.0.1", 30080),
                                ("10.244.1.2", 8080, "10.244.0.0", 62000), DNAT | SNAT), CTX1)
    server = socket_to_flow(conn(("10.244.1.2", 8080), ("10.244.0.0", 62000), "server"), CTX2)
    assert ct1 is not None and server is not None
    return [server, ct1]


def macvlan_views() -> list[Flow]:
    """frontend -> backend pod IP directly, nodes see nothing: only the two sockets."""
    client = socket_to_flow(conn(("10.244.0.2", 41001), ("10.244.1.3", 9000), "client"), CTX1)
    server = socket_to_flow(conn(("10.244.1.3", 9000), ("10.244.0.2", 41001), "server",
                                 AT + 0.4, tcp=dataclasses.replace(TCP, rtt_us=300)), CTX2)
    assert client is not None and server is not None
    return [server, client]


def test_client_socket_to_a_vip() -> None:
    f = socket_to_flow(conn(("10.244.0.2", 41000), ("10.96.45.7", 9000), "client"), CTX1,
                       final=True)
    assert f is not None
    assert (f.source.kind, f.source.pod_name) == (EndpointKind.POD, "frontend-6d8f9c7b5-x2k4p")
    assert (f.destination.kind, f.destination.ip) == (EndpointKind.SERVICE, "10.96.45.7")
    svc = f.destination_service   # the client addressed the Service: named, nothing undone
    assert svc is not None and (svc.namespace, svc.frontend_ip, svc.frontend_port) == (
        "shop", "10.96.45.7", 9000)
    assert f.nat.is_empty
    assert f.flow_id == "" and f.client_key == flow_id_for(6, "10.96.45.7", 9000, "10.244.0.2",
                                                            41000)
    assert f.traffic == Traffic(Counters(8, 1000), Counters(9, 5000))
    assert f.rtt_us == 250.0 and f.state is FlowState.ENDED and f.protocol is Protocol.TCP
    o = f.observations[0]
    assert (o.node_name, o.source) == ("node1", "sockets")
    assert o.original == "TCP 10.244.0.2:41000 -> 10.96.45.7:9000"
    assert o.reply == "client pid=42 comm=curl netns=pod"


def test_server_socket_sees_the_snat_address() -> None:
    c = conn(("10.244.1.2", 8080), ("10.244.0.0", 62000), "server")
    f = socket_to_flow(c, CTX2, final=False)
    assert f is not None and f.state is FlowState.ACTIVE
    assert (f.source.kind, f.source.node_name) == (EndpointKind.NODE, "node1")
    assert f.destination.pod_name is not None and f.destination.port == 8080
    assert f.flow_id == flow_id_for(6, "10.244.1.2", 8080, "10.244.0.0", 62000) == keys(c)[0]
    assert f.client_key == ""
    assert f.traffic == Traffic(Counters(9, 5000), Counters(8, 1000))  # received = to server


def test_loopback_and_udp() -> None:
    assert socket_to_flow(conn(("127.0.0.1", 80), ("127.0.0.1", 5000), "server"), CTX1) is None
    assert socket_to_flow(conn(("::1", 80), ("::1", 5000), "client"), CTX1) is None
    u = socket_to_flow(conn(("10.244.0.2", 5000), ("10.96.0.10", 53), "client", proto=17,
                            tcp=None), CTX1)
    assert u is not None and u.protocol is Protocol.UDP and u.tcp is None
    assert u.rtt_us is None and u.traffic == Traffic()
    assert u.observations[0].original == "UDP 10.244.0.2:5000 -> 10.96.0.10:53"


def test_identity_at_first_sight() -> None:
    f = socket_to_flow(conn(("10.244.0.2", 41000), ("10.244.1.3", 9000), "client",
                            t=AT - 10 * 86400), CTX1)
    assert f is not None and f.time == AT - 10 * 86400   # before the pods existed
    assert f.source.pod_name is None


HOST_CTX2 = dataclasses.replace(CTX2, inventory=host_network_inventory())


def test_host_network_server_socket_names_the_pod() -> None:
    c = conn(("172.18.0.2", 7070), ("10.244.0.2", 41000), "server", host_network=True,
             netns="node2")
    f = socket_to_flow(c, HOST_CTX2)
    assert f is not None
    assert (f.destination.kind, f.destination.pod_name, f.destination.port) == (
        EndpointKind.HOST_NETWORK_POD, "node-exporter-x7k2p", 7070)
    assert (f.source.kind, f.source.pod_name) == (EndpointKind.POD, "frontend-6d8f9c7b5-x2k4p")
    other = socket_to_flow(dataclasses.replace(c, local_port=22), HOST_CTX2)
    assert other is not None
    assert (other.destination.kind, other.destination.name) == (EndpointKind.NODE, "node2")


def test_client_socket_to_a_host_network_pod_names_it() -> None:
    f = socket_to_flow(conn(("10.244.1.3", 41000), ("172.18.0.2", 8125), "client", proto=17,
                            tcp=None), HOST_CTX2)
    assert f is not None
    assert (f.destination.kind, f.destination.pod_name) == (EndpointKind.HOST_NETWORK_POD,
                                                            "node-exporter-x7k2p")


def test_host_network_client_socket_stays_its_node() -> None:
    # the node's process dials out from an ephemeral port that a host-network pod declared
    c = conn(("172.18.0.2", 7070), ("10.244.1.3", 9000), "client", host_network=True,
             netns="node2")
    f = socket_to_flow(c, HOST_CTX2)
    assert f is not None
    assert (f.source.kind, f.source.name, f.source.port) == (EndpointKind.NODE, "node2", 7070)
    assert (f.destination.kind, f.destination.pod_name) == (EndpointKind.POD,
                                                            "backend-5c7d8b9f4-d3e4f")
    assert f.observations[0].reply == "client pid=42 comm=curl netns=node2"
