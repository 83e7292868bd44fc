"""CtEntry -> Flow end to end: times, counters, identity at the start, flow ids across nodes."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from podflow.cni.profile import CniProfile
from podflow.inventory.history import Inventory
from podflow.model.conntrack import CtEntry, CtEventType, CtTuple
from podflow.model.flow import (
    Address,
    EndpointKind,
    FlowState,
    Nat,
    ObservationPoint,
    Protocol,
    Service,
    Workload,
)
from podflow.pipeline.context import DecodeContext
from podflow.pipeline.ctdecode import conntrack_to_flow
from podflow.pipeline.keys import flow_id
from tests.unit.cni.test_detect import snapshot
from tests.unit.inventory.test_history import (
    T_RESTART,
    T,
    host_network_inventory,
    inventory,
    objects,
)
from tests.unit.pipeline.test_nat import DNAT, INV_OBJECTS, INV_OBJECTS_WITHOUT_BACKEND, NODE1, SNAT

START = T("2026-11-20T11:30:00Z")
START_NS = int(START) * 1_000_000_000
CTX = DecodeContext("node1", inventory(), NODE1)


def clusterip_entry(**kw: Any) -> CtEntry:
    base = CtEntry(
        CtEventType.DESTROY,
        CtTuple("10.244.0.2", "10.96.45.7", 6, 41000, 9000),
        CtTuple("10.244.1.3", "10.244.0.2", 6, 9000, 41000),
        status=DNAT, id=3735928559, tcp_state="TIME_WAIT",
        orig_packets=6, orig_bytes=412, reply_packets=5, reply_bytes=981,
        start_ns=START_NS + 250_000_000, stop_ns=START_NS + 1_750_000_000,
        received_at=START + 30)
    return dataclasses.replace(base, **kw)


def test_clusterip_flow_end_to_end() -> None:
    f = conntrack_to_flow(clusterip_entry(), CTX)
    assert f is not None
    assert (f.time, f.end_time) == (START + 0.25, START + 1.75)
    assert (f.protocol, f.state, f.cni_profile) == (Protocol.TCP, FlowState.ENDED, "flannel-vxlan")
    s, d = f.source, f.destination
    assert (s.ip, s.port, s.kind, s.namespace, s.pod_name, s.node_name) == (
        "10.244.0.2", 41000, EndpointKind.POD, "shop", "frontend-6d8f9c7b5-x2k4p", "node1")
    assert s.workload == Workload("Deployment", "frontend")
    assert s.labels == (("app", "frontend"), ("pod-template-hash", "6d8f9c7b5"))
    assert (d.ip, d.port, d.pod_name, d.node_name) == (
        "10.244.1.3", 9000, "backend-5c7d8b9f4-d3e4f", "node2")
    assert f.destination_service == Service("shop", "backend", "api", "ClusterIP", "10.96.45.7",
                                            9000)
    assert f.nat == Nat(original_destination=Address("10.96.45.7", 9000))
    assert (f.traffic.to_destination.packets, f.traffic.to_destination.bytes) == (6, 412)
    assert (f.traffic.to_source.packets, f.traffic.to_source.bytes) == (5, 981)
    assert f.tcp is not None and f.tcp.state == "TIME_WAIT"
    assert f.observations == (ObservationPoint(
        "node1", "conntrack", "tcp 10.244.0.2:41000 -> 10.96.45.7:9000",
        "tcp 10.244.1.3:9000 -> 10.244.0.2:41000", "0/3735928559"),)
    expected = hashlib.sha1(b"6|10.244.1.3|9000|10.244.0.2|41000").hexdigest()[:16]
    assert f.flow_id == expected == flow_id(clusterip_entry())


def test_missing_timestamps_and_counters() -> None:
    e = clusterip_entry(start_ns=None, stop_ns=None, orig_packets=None, orig_bytes=None,
                        reply_packets=None, reply_bytes=None, event=CtEventType.UPDATE,
                        received_at=START + 5)
    f = conntrack_to_flow(e, CTX)
    assert f is not None
    assert (f.time, f.end_time, f.state) == (START + 5, START + 5, FlowState.ACTIVE)
    assert (f.traffic.bytes, f.traffic.packets) == (0, 0)


def test_final_flag() -> None:
    upd = clusterip_entry(event=CtEventType.UPDATE, stop_ns=None)
    def state(e: CtEntry, ctx: DecodeContext, final: bool | None = None) -> FlowState:
        f = conntrack_to_flow(e, ctx, final)
        assert f is not None
        return f.state

    assert state(upd, CTX) is FlowState.ACTIVE
    assert state(upd, dataclasses.replace(CTX, final=True)) is FlowState.ENDED
    assert state(upd, CTX, final=True) is FlowState.ENDED
    assert state(clusterip_entry(), CTX, final=False) is FlowState.ENDED  # DESTROY is final


def test_a_reused_entry_is_another_instance() -> None:
    first = conntrack_to_flow(clusterip_entry(id=7), CTX)
    again = conntrack_to_flow(clusterip_entry(id=7, reuse=1), CTX)
    assert first is not None and again is not None
    assert first.observations[0].instance.endswith("/7")
    assert again.observations[0].instance == first.observations[0].instance + "+1"
    assert again.flow_id == first.flow_id


def test_udp_and_icmp() -> None:
    udp = CtEntry(CtEventType.DESTROY, CtTuple("10.244.0.2", "10.96.0.10", 17, 53124, 53),
                  CtTuple("10.244.2.9", "10.244.0.2", 17, 53, 53124), received_at=START)
    f = conntrack_to_flow(udp, CTX)
    assert f is not None and (f.protocol, f.tcp) == (Protocol.UDP, None)
    assert f.destination.kind is EndpointKind.UNKNOWN  # no pod holds 10.244.2.9
    icmp = CtEntry(CtEventType.DESTROY, CtTuple("10.244.0.2", "192.168.100.10", 1),
                   CtTuple("192.168.100.10", "172.18.0.1", 1), received_at=START)
    f = conntrack_to_flow(icmp, CTX)
    assert f is not None and f.protocol is Protocol.ICMP
    assert (f.source.port, f.destination.name) == (None, "db")
    assert f.nat.translated_source == Address("172.18.0.1")


def test_infrastructure_entries_give_no_flow() -> None:
    vxlan = CtEntry(CtEventType.DESTROY, CtTuple("172.18.0.1", "172.18.0.2", 17, 48311, 8472),
                    CtTuple("172.18.0.2", "172.18.0.1", 17, 8472, 48311), received_at=START)
    assert conntrack_to_flow(vxlan, CTX) is None


def test_egress_keeps_pod_as_source() -> None:
    e = CtEntry(CtEventType.DESTROY, CtTuple("10.244.0.3", "192.168.100.10", 6, 43000, 5432),
                CtTuple("192.168.100.10", "172.18.0.1", 6, 5432, 61234), status=SNAT,
                start_ns=START_NS)
    f = conntrack_to_flow(e, CTX)
    assert f is not None
    assert (f.source.pod_name, f.destination.kind, f.destination.name) == (
        "backend-5c7d8b9f4-a1b2c", EndpointKind.EXTERNAL, "db")
    assert f.nat == Nat(translated_source=Address("172.18.0.1", 61234))
    assert f.destination_service is None


def test_nodeport_seen_from_both_nodes_has_one_flow_id() -> None:
    ingress = CtEntry(CtEventType.DESTROY,
                      CtTuple("192.168.100.20", "172.18.0.1", 6, 51000, 30080),
                      CtTuple("10.244.1.2", "10.244.0.0", 6, 8080, 62000), status=DNAT | SNAT,
                      start_ns=START_NS)
    backend_view = CtEntry(CtEventType.DESTROY,
                           CtTuple("10.244.0.0", "10.244.1.2", 6, 62000, 8080),
                           CtTuple("10.244.1.2", "10.244.0.0", 6, 8080, 62000),
                           start_ns=START_NS + 1_000_000)
    node2 = CniProfile("flannel-vxlan", "node2", ("10.244.1.0/24",), ("10.244.0.0/16",),
                       gateway_offsets=(0, 1))
    f1 = conntrack_to_flow(ingress, CTX)
    f2 = conntrack_to_flow(backend_view, dataclasses.replace(CTX, node_name="node2",
                                                             profile=node2))
    assert f1 is not None and f2 is not None
    assert f1.flow_id == f2.flow_id
    assert (f1.source.kind, f1.source.name) == (EndpointKind.EXTERNAL, "visitor")
    assert f1.destination_service is not None and f1.destination_service.type == "NodePort"
    assert f1.nat.translated_source == Address("10.244.0.0", 62000)
    assert (f2.source.kind, f2.source.node_name) == (EndpointKind.NODE, "node1")
    assert f1.destination.pod_name == f2.destination.pod_name == "frontend-6d8f9c7b5-q9w7r"
    assert f2.observations[0].node_name == "node2"


def test_restarted_pod_keeps_identity_at_flow_start() -> None:
    inv = inventory()
    inv.apply(objects("pods-restarted.json"), at=T("2026-11-20T12:05:00Z"))
    ctx = dataclasses.replace(CTX, inventory=inv)

    def flow_at(t: float) -> str | None:
        e = CtEntry(CtEventType.DESTROY, CtTuple("10.244.0.2", "10.244.0.3", 6, 41000, 9000),
                    CtTuple("10.244.0.3", "10.244.0.2", 6, 9000, 41000),
                    start_ns=int(t) * 10**9, stop_ns=int(t + 600) * 10**9)
        f = conntrack_to_flow(e, ctx)
        assert f is not None
        return f.destination.pod_name

    assert flow_at(T_RESTART - 300) == "backend-5c7d8b9f4-a1b2c"  # ended after the restart
    assert flow_at(T_RESTART + 10) == "backend-5c7d8b9f4-r8s9t"


def test_service_looked_up_at_flow_start() -> None:
    inv = Inventory()
    inv.apply(INV_OBJECTS_WITHOUT_BACKEND, at=START - 3600)
    inv.apply(INV_OBJECTS, at=START + 1)  # the backend Service appears after the flow began
    f = conntrack_to_flow(clusterip_entry(), dataclasses.replace(CTX, inventory=inv))
    assert f is not None and f.end_time is not None and f.end_time > START + 1
    assert f.destination_service is None
    assert f.nat.original_destination == Address("10.96.45.7", 9000)


def test_generic_profile_still_decodes() -> None:
    ctx = DecodeContext("node1", inventory(), CniProfile("generic", "node1"))
    f = conntrack_to_flow(clusterip_entry(), ctx)
    assert f is not None and f.cni_profile == "generic"
    # without the VTEP rule the flannel.1 address is just an address in the pod range
    e = CtEntry(CtEventType.DESTROY, CtTuple("10.244.0.0", "10.244.1.2", 6, 62000, 8080),
                CtTuple("10.244.1.2", "10.244.0.0", 6, 8080, 62000), received_at=START)
    f = conntrack_to_flow(e, ctx)
    assert f is not None and f.source.kind is EndpointKind.UNKNOWN
    assert snapshot().link("cni0") is not None


def test_client_key_is_the_original_tuple() -> None:
    from podflow.pipeline.keys import client_key, flow_id_for

    e = clusterip_entry()
    f = conntrack_to_flow(e, CTX)
    assert f is not None
    assert f.client_key == client_key(e) == flow_id_for(6, "10.96.45.7", 9000, "10.244.0.2",
                                                        41000)
    assert f.client_key != f.flow_id
    plain = dataclasses.replace(e, orig=CtTuple("10.244.0.2", "10.244.1.3", 6, 41000, 9000))
    g = conntrack_to_flow(plain, CTX)
    assert g is not None and g.client_key == g.flow_id


# ---- host-network pods: the server end named by the port it declared ---------------------

HOST_CTX = dataclasses.replace(CTX, inventory=host_network_inventory())


def test_clusterip_to_a_host_network_backend_names_the_pod_and_keeps_the_service() -> None:
    e = CtEntry(CtEventType.DESTROY, CtTuple("10.244.0.2", "10.96.77.7", 6, 41000, 80),
                CtTuple("172.18.0.2", "10.244.0.2", 6, 7070, 41000), status=DNAT,
                start_ns=START_NS)
    f = conntrack_to_flow(e, HOST_CTX)
    assert f is not None
    d = f.destination
    assert (d.ip, d.port, d.kind, d.namespace, d.pod_name, d.node_name) == (
        "172.18.0.2", 7070, EndpointKind.HOST_NETWORK_POD, "monitoring", "node-exporter-x7k2p",
        "node2")
    assert d.workload == Workload("DaemonSet", "node-exporter")
    assert f.destination_service == Service("monitoring", "node-exporter", "metrics",
                                            "ClusterIP", "10.96.77.7", 80)
    assert f.nat == Nat(original_destination=Address("10.96.77.7", 80))
    assert (f.source.kind, f.source.pod_name) == (EndpointKind.POD, "frontend-6d8f9c7b5-x2k4p")


def _direct(src: tuple[str, int], dst: tuple[str, int], proto: int = 6) -> CtEntry:
    return CtEntry(CtEventType.DESTROY, CtTuple(src[0], dst[0], proto, src[1], dst[1]),
                   CtTuple(dst[0], src[0], proto, dst[1], src[1]), start_ns=START_NS)


def _ends(e: CtEntry) -> tuple[tuple[EndpointKind, str | None], tuple[EndpointKind, str | None]]:
    f = conntrack_to_flow(e, HOST_CTX)
    assert f is not None
    return ((f.source.kind, f.source.pod_name or f.source.name),
            (f.destination.kind, f.destination.pod_name or f.destination.name))


def test_node_address_is_the_host_network_pod_only_at_its_declared_ports() -> None:
    pod = (EndpointKind.HOST_NETWORK_POD, "node-exporter-x7k2p")
    node2 = (EndpointKind.NODE, "node2")
    frontend = (EndpointKind.POD, "frontend-6d8f9c7b5-x2k4p")
    assert _ends(_direct(("10.244.0.2", 41000), ("172.18.0.2", 7070))) == (frontend, pod)
    assert _ends(_direct(("10.244.0.2", 41000), ("172.18.0.2", 22))) == (frontend, node2)
    assert _ends(_direct(("10.244.0.2", 41000), ("172.18.0.2", 8125), 17)) == (frontend, pod)
    assert _ends(_direct(("10.244.0.2", 41000), ("172.18.0.2", 7070), 17)) == (frontend, node2)
    assert _ends(_direct(("10.244.0.2", 41000), ("172.18.0.2", 8125))) == (frontend, node2)
    # a node-to-node connection to the port: the client is the other node
    assert _ends(_direct(("172.18.0.1", 52000), ("172.18.0.2", 7070))) == (
        (EndpointKind.NODE, "node1"), pod)


def test_host_network_client_stays_its_node_even_from_a_declared_port() -> None:
    # node2's address as the client, from an ephemeral port equal to the pod's declared one
    backend = (EndpointKind.POD, "backend-5c7d8b9f4-a1b2c")
    node2 = (EndpointKind.NODE, "node2")
    assert _ends(_direct(("172.18.0.2", 7070), ("10.244.0.3", 9000))) == (node2, backend)
    assert _ends(_direct(("172.18.0.2", 8125), ("10.244.0.3", 9000), 17)) == (node2, backend)


def test_icmp_to_a_node_stays_the_node() -> None:
    e = CtEntry(CtEventType.DESTROY, CtTuple("10.244.0.2", "172.18.0.2", 1),
                CtTuple("172.18.0.2", "10.244.0.2", 1), start_ns=START_NS)
    f = conntrack_to_flow(e, HOST_CTX)
    assert f is not None and (f.destination.kind, f.destination.name) == (EndpointKind.NODE,
                                                                          "node2")
