"""Correlation: grouping observations by flow_id and merging them into one Flow."""

from __future__ import annotations

from dataclasses import replace

import pytest

from podflow.model.flow import (
    Address,
    Counters,
    Endpoint,
    EndpointKind,
    Flow,
    FlowState,
    Nat,
    ObservationPoint,
    Protocol,
    Service,
    TcpInfo,
    Traffic,
    Verdict,
    Workload,
)
from podflow.store.correlate import group, merge, merge_all, primary_index

VISITOR = Endpoint("192.168.100.20", 50123, EndpointKind.EXTERNAL, name="visitor")
F = Endpoint("10.244.1.5", 8080, EndpointKind.POD, "shop", "frontend-1",
             Workload("Deployment", "frontend"), (("app", "frontend"),), "node2")
SVC = Service("shop", "frontend", "http", "NodePort", "172.18.0.1", 30080)


def nodeport_pair() -> tuple[Flow, Flow]:
    """node1 undoes DNAT+SNAT; node2 sees node1's VTEP talking to the pod."""
    on_node1 = Flow(100.0, VISITOR, F, Protocol.TCP, 101.0, destination_service=SVC,
                    nat=Nat(Address("172.18.0.1", 30080), Address("10.244.0.0", 61000)),
                    traffic=Traffic(Counters(6, 600), Counters(5, 1500)),
                    tcp=TcpInfo("TIME_WAIT", ("SYN",)),
                    observations=(ObservationPoint("node1", "conntrack", "o1", "r1"),),
                    cni_profile="flannel-vxlan", flow_id="np")
    vtep = Endpoint("10.244.0.0", 61000, EndpointKind.NODE, name="node1", node_name="node1")
    on_node2 = Flow(100.01, vtep, F, Protocol.TCP, 101.2,
                    traffic=Traffic(Counters(7, 650), Counters(5, 1400)),
                    tcp=TcpInfo("CLOSE", ("FIN",)), rtt_us=250.0,
                    observations=(ObservationPoint("node2", "conntrack", "o2", "r2"),),
                    cni_profile="flannel-vxlan", flow_id="np")
    return on_node1, on_node2


def test_nodeport_two_nodes_merge_into_one_flow() -> None:
    a, b = nodeport_pair()
    for order in ([a, b], [b, a]):
        groups = group(order)
        assert len(groups) == 1
        m = merge(groups[0])
        assert m.source == VISITOR and m.destination == F
        assert m.destination_service == SVC and m.nat == a.nat
        assert [o.node_name for o in m.observations] == ["node1", "node2"]
        assert m.traffic == Traffic(Counters(7, 650), Counters(5, 1500))
        assert m.time == 100.0 and m.end_time == 101.2 and m.state is FlowState.ENDED
        assert m.tcp == TcpInfo("CLOSE", ("SYN", "FIN")) and m.rtt_us == 250.0


def test_primary_order() -> None:
    a, b = nodeport_pair()
    plain = replace(a, destination_service=None, nat=Nat())
    assert primary_index([b, a]) == 1           # undid NAT wins
    assert primary_index([b, plain]) == 1       # then a real source beats a node
    later = replace(plain, time=100.5)
    assert primary_index([later, plain]) == 1   # then the earliest


def test_split_on_port_reuse_and_empty_ids() -> None:
    a, b = nodeport_pair()
    reuse = replace(a, time=200.0, end_time=201.0)
    anon1, anon2 = replace(a, flow_id=""), replace(b, flow_id="")
    groups = group([a, b, reuse, anon1, anon2])
    assert sorted(len(g) for g in groups) == [1, 1, 1, 2]
    assert [g[0].time for g in groups] == sorted(g[0].time for g in groups)
    assert len(merge_all([a, b, reuse])) == 2


def _seen(node: str, source: str, instance: str) -> tuple[ObservationPoint, ...]:
    return (ObservationPoint(node, source, instance=instance),)


def test_port_reused_within_the_gap_through_a_vip_is_two_flows() -> None:
    """The client reuses its port to the VIP 2 s later and DNAT picks another backend: both
    conntrack entries share the client tuple but not their ids, so two flows, each with its
    own server socket; an entry's ACTIVE and final reports stay one. (The group key of both
    bridges is the client tuple "v", the smaller of their keys.)"""
    cli = Endpoint("10.244.0.2", 40000, EndpointKind.POD, "shop", "frontend-1")
    be1, be2 = replace(F, ip="10.244.0.3", port=9000), replace(F, ip="10.244.0.4", port=9000)
    svc = Service("shop", "backend", "api", "ClusterIP", "10.96.0.3", 9000)
    nat = Nat(Address("10.96.0.3", 9000))
    ct1 = Flow(100.0, cli, be1, Protocol.TCP, destination_service=svc, nat=nat,
               observations=_seen("node1", "conntrack", "0/1"), flow_id="x1", client_key="v")
    ct2 = replace(ct1, time=102.0, destination=be2, flow_id="x2",
                  observations=_seen("node1", "conntrack", "0/2"))
    s1 = Flow(100.3, cli, be1, Protocol.TCP, observations=_seen("node1", "sockets", "11"),
              flow_id="x1")
    s2 = replace(s1, time=102.3, destination=be2, flow_id="x2",
                 observations=_seen("node1", "sockets", "12"))
    c1 = Flow(100.4, cli, replace(be1, ip="10.96.0.3"), Protocol.TCP, client_key="v",
              observations=_seen("node1", "sockets", "21"))
    c2 = replace(c1, time=102.4, observations=_seen("node1", "sockets", "22"))
    active = replace(ct1, state=FlowState.ACTIVE)
    flows = merge_all([ct1, active, ct2, s1, s2, c1, c2])
    assert [(f.time, f.destination.ip, len(f.observations)) for f in flows] == [
        (100.0, "10.244.0.3", 3), (102.0, "10.244.0.4", 3)]
    untracked = [replace(f, observations=_seen("node1", f.observations[0].source, ""))
                 for f in (ct1, ct2, s1, s2, c1, c2)]
    assert len(merge_all(untracked)) == 1   # without instances only time could split


def test_active_updates_and_verdicts() -> None:
    a, _ = nodeport_pair()
    early = replace(a, state=FlowState.ACTIVE, end_time=100.5,
                    traffic=Traffic(Counters(2, 100), Counters(1, 60)))
    m = merge([early, a])
    assert m.state is FlowState.ENDED and m.traffic == a.traffic
    assert m.observations == a.observations        # same point is listed once
    dropped = replace(a, verdict=Verdict.DROPPED, drop_reason_desc="policy",
                      observations=(ObservationPoint("node3", "packets"),))
    m2 = merge([a, dropped])
    assert m2.verdict is Verdict.DROPPED and m2.drop_reason_desc == "policy"
    assert merge([early]) is early
    with pytest.raises(ValueError):
        merge([])


# -- several vantage points: sockets, conntrack, packets ---------------------------------
def test_clusterip_three_views_are_one_flow() -> None:
    from tests.unit.pipeline.test_sockdecode import clusterip_views

    views = clusterip_views()
    client, ct1, ct2, server = views
    assert client.flow_id == "" and server.client_key == ""
    assert ct1.client_key == client.client_key and ct1.flow_id == server.flow_id
    for order in (views, views[::-1], [server, client, ct2, ct1]):
        [g] = group(order)
        m = merge(g)
        assert m.source == ct1.source and m.destination == ct1.destination
        assert m.destination.pod_name == "backend-5c7d8b9f4-d3e4f"
        assert m.destination_service == ct1.destination_service and m.nat == ct1.nat
        assert (m.flow_id, m.client_key) == (ct1.flow_id, ct1.client_key)
        assert [(o.node_name, o.source) for o in m.observations] == [
            ("node1", "conntrack"), ("node1", "sockets"), ("node2", "conntrack"),
            ("node2", "sockets")]
        assert m.rtt_us == client.rtt_us
        assert m.traffic.to_source == ct1.traffic.to_source   # the maximum per direction
        assert m.traffic.to_destination == Counters(10, 5000)


def test_nodeport_snat_server_socket_joins_the_ingress_node() -> None:
    from tests.unit.pipeline.test_sockdecode import nodeport_views

    server, ct1 = nodeport_views()
    assert server.source.kind is EndpointKind.NODE
    [m] = merge_all([server, ct1])
    assert m.source.name == "visitor" and m.destination == server.destination
    assert m.nat == ct1.nat and m.rtt_us == server.rtt_us


def test_macvlan_two_sockets_only() -> None:
    from tests.unit.pipeline.test_sockdecode import macvlan_views

    server, client = macvlan_views()
    [m] = merge_all([server, client])
    assert m.source == client.source and m.destination == server.destination
    assert m.flow_id == server.flow_id == client.client_key and m.client_key == m.flow_id
    assert m.time == server.time and m.rtt_us == 250.0    # the client's view of the RTT
    assert {o.node_name for o in m.observations} == {"node1", "node2"}


def test_bridges_respect_time_and_packets_bring_l7() -> None:
    from podflow.model.flow import L7, HttpInfo
    from tests.unit.pipeline.test_sockdecode import clusterip_views

    client, ct1, ct2, server = clusterip_views()
    later = [replace(f, time=f.time + 600) for f in (client, ct1, server)]
    pkt = replace(ct2, flow_id=ct1.client_key, client_key=ct1.client_key, time=ct1.time + 0.01,
                  observations=(ObservationPoint("node1", "packets"),),
                  l7=L7(http=HttpInfo("GET", "/x", code=200)))
    flows = merge_all([client, ct1, ct2, server, pkt, *later])
    assert [len(f.observations) for f in flows] == [5, 3]
    assert flows[0].l7 == pkt.l7 and flows[1].l7 is None
    lone = replace(server, time=server.time + 30)        # same key, too far from any bridge
    assert len(merge_all([client, ct1, lone])) == 2


def chained_nodeport() -> list[Flow]:
    """A pod on node1 dials node2's NodePort; the backend runs on node3.

    node1 masquerades the pod to its node IP (bridge: pod tuple -> node1 tuple), node2 DNATs
    to the backend and SNATs to its VTEP (bridge: node1 tuple -> node2 tuple), node3 and the
    backend's socket see node2's VTEP; the client's socket sees node2's IP and the NodePort.
    """
    pod = Endpoint("10.244.0.5", 41000, EndpointKind.POD, "shop", "client-1",
                   Workload("Deployment", "client"), (("app", "client"),), "node1")
    node1 = Endpoint("172.18.0.1", 23000, EndpointKind.NODE, name="node1", node_name="node1")
    node2 = Endpoint("172.18.0.2", 30080, EndpointKind.NODE, name="node2", node_name="node2")
    vtep2 = Endpoint("10.244.1.0", 61000, EndpointKind.NODE, name="node2", node_name="node2")
    backend = replace(F, node_name="node3")
    svc = replace(SVC, frontend_ip="172.18.0.2")
    return [
        Flow(100.0, pod, node2, Protocol.TCP, nat=Nat(None, Address("172.18.0.1", 23000)),
             observations=(ObservationPoint("node1", "conntrack", instance="1/1"),),
             flow_id="k-node1", client_key="k-pod"),
        Flow(100.01, pod, node2, Protocol.TCP,
             observations=(ObservationPoint("node1", "sockets", instance="c1"),),
             client_key="k-pod"),
        Flow(100.02, node1, backend, Protocol.TCP, destination_service=svc,
             nat=Nat(Address("172.18.0.2", 30080), Address("10.244.1.0", 61000)),
             observations=(ObservationPoint("node2", "conntrack", instance="0/7"),),
             flow_id="k-node2", client_key="k-node1"),
        Flow(100.03, vtep2, backend, Protocol.TCP,
             observations=(ObservationPoint("node3", "conntrack", instance="0/9"),),
             flow_id="k-node2", client_key="k-node2"),
        Flow(100.04, vtep2, backend, Protocol.TCP,
             observations=(ObservationPoint("node3", "sockets", instance="s1"),),
             flow_id="k-node2"),
    ]


def test_nat_chained_across_nodes_is_one_flow_pod_to_backend() -> None:
    views = chained_nodeport()
    for order in (views, views[::-1], [views[2], views[0], views[4], views[1], views[3]]):
        [m] = merge_all(order)
        assert m.source == views[0].source        # the pod, from its own node's bridge
        assert m.destination == views[2].destination    # the backend, not node2
        assert m.destination_service == views[2].destination_service
        assert [o.node_name for o in m.observations] == ["node1", "node1", "node2", "node3",
                                                         "node3"]
        assert m.nat == views[2].nat


def test_nat_chained_without_snat_on_the_last_hop_keeps_the_first_masquerade() -> None:
    views = chained_nodeport()   # externalTrafficPolicy Local: node2 only DNATs
    views[2] = replace(views[2], nat=replace(views[2].nat, translated_source=None))
    [m] = merge_all(views)
    assert m.nat.original_destination == Address("172.18.0.2", 30080)
    assert m.nat.translated_source == Address("172.18.0.1", 23000), "what the backend saw"


def test_chain_needs_both_links_in_time() -> None:
    views = chained_nodeport()
    late = [*views[:2], *(replace(v, time=v.time + 30) for v in views[2:])]
    assert [len(g) for g in group(late)] == [2, 3]   # a reused tuple 30 s later: no chain
