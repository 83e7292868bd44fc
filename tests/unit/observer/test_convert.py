"""podflow Flow -> Hubble ``flow.Flow``: field mapping, endpoints, L4/L7, verdicts, where a
node saw the connection, the JSON a Hubble client prints, and the exact round trip back."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest
from google.protobuf.json_format import MessageToDict

from podflow import __version__
from podflow.model.flow import (
    L7,
    Address,
    Counters,
    DnsInfo,
    Endpoint,
    EndpointKind,
    Flow,
    FlowState,
    HttpInfo,
    Nat,
    ObservationPoint,
    Protocol,
    Service,
    TcpInfo,
    Traffic,
    Verdict,
    Workload,
)
from podflow.model.serialize import SchemaError
from podflow.observer.convert import EMITTER, from_hubble, summary, tcp_flags, to_hubble
from podflow.observer.proto.hubble import flow_pb2 as pb

WEB = Endpoint("10.244.0.5", 41000, EndpointKind.POD, "shop", "web-7d9f8c-abcde",
               Workload("Deployment", "web"), (("app", "web"), ("tier", "front")), "node1")
API = Endpoint("10.244.1.7", 8080, EndpointKind.POD, "shop", "api-5c6b7-xyz12",
               Workload("StatefulSet", "api"), (("app", "api"),), "node2")
NODE = Endpoint("192.168.1.10", 10250, EndpointKind.NODE, node_name="node2", name="node2")
HOSTNET = Endpoint("192.168.1.11", 9100, EndpointKind.HOST_NETWORK_POD, "monitoring",
                   "node-exporter-abc", Workload("DaemonSet", "node-exporter"),
                   (("app", "node-exporter"),), "node3")
WORLD = Endpoint("93.184.216.34", 443, EndpointKind.EXTERNAL, name="example.com")


def seen(*nodes: str) -> tuple[ObservationPoint, ...]:
    """One conntrack observation per node."""
    return tuple(ObservationPoint(n, "conntrack") for n in nodes)


def flow(src: Endpoint = WEB, dst: Endpoint = API, **kw: Any) -> Flow:
    """A forwarded TCP connection web -> api seen on the client's node, overridable."""
    base: dict[str, Any] = {"time": 1_700_000_000.25, "end_time": 1_700_000_001.0,
                            "flow_id": "c1", "observations": seen("node1")}
    base.update(kw)
    protocol = base.pop("protocol", Protocol.TCP)
    return Flow(source=src, destination=dst, protocol=protocol, **base)


def rich_flows() -> list[Flow]:
    """Connections using most of the model: NAT, services, L7, counters, several vantages."""
    dns = L7(dns=DnsInfo("api.shop.svc.cluster.local", ("A", "AAAA"), 0, ("10.96.0.20",), 30,
                         ("alias.shop.svc.cluster.local",), 2, (3, 0)), latency_ns=250_000)
    http = L7(http=HttpInfo("POST", "/v1/items?id=3", "api.shop", 201, "HTTP/1.0"),
              latency_ns=1_500_000)
    return [
        flow(destination_service=Service("shop", "api", "http", "ClusterIP", "10.96.0.20", 80),
             nat=Nat(Address("10.96.0.20", 80), Address("192.168.1.9", 61000)),
             traffic=Traffic(Counters(12, 3400), Counters(10, 9100)),
             tcp=TcpInfo("TIME_WAIT", ("SYN", "SYN-ACK", "FIN")), rtt_us=412.5,
             observations=(ObservationPoint("node1", "conntrack", "tcp a -> b", "tcp b -> a",
                                            "0/77"),
                           ObservationPoint("node1", "packets", instance="1700000000.2")),
             cni_profile="flannel-vxlan", client_key="k1", l7=http),
        flow(WEB, Endpoint("10.96.0.10", 53, EndpointKind.POD, "kube-system", "coredns-x"),
             protocol=Protocol.UDP, l7=dns, state=FlowState.ACTIVE, end_time=None),
        flow(Endpoint("fd00:10:244::5", 5000, EndpointKind.POD, "shop", "web-v6"),
             Endpoint("2001:db8::1", 443, EndpointKind.EXTERNAL, name="v6.example.com"),
             verdict=Verdict.DROPPED, drop_reason_desc="POLICY_DENIED",
             observations=seen("node1", "node2")),
        flow(NODE, HOSTNET, protocol=Protocol.ICMP, verdict=Verdict.ERROR,
             drop_reason_desc="no route (ICMP 3/1)"),
    ]


# --- scalar fields ------------------------------------------------------------------------


def test_time_node_and_emitter() -> None:
    m = to_hubble(flow(), "node-a", 42)
    assert m.time.seconds == 1_700_000_000
    assert abs(m.time.nanos - 250_000_000) < 1_000           # float seconds: ~240 ns steps
    assert m.node_name == "node-a"
    assert (m.emitter.name, m.emitter.version) == (EMITTER, __version__) == ("Podflow",
                                                                             __version__)
    assert m.podflow_seq == 42
    assert to_hubble(flow(), "node-a").podflow_seq == 0


@pytest.mark.parametrize("t", [1_700_000_000.25, 1_700_000_000.125, 1_700_000_000.75])
def test_time_fraction_is_exact_when_the_float_is(t: float) -> None:
    m = to_hubble(flow(time=t), "node1")
    assert (m.time.seconds, m.time.nanos) == (1_700_000_000, round((t % 1) * 1e9))


def test_uuid_is_a_fresh_uuid_per_call() -> None:
    f = flow()
    ids = {to_hubble(f, "node1").uuid for _ in range(5)}
    assert len(ids) == 5
    for i in ids:
        assert str(uuid.UUID(i)) == i


def test_ip_v4() -> None:
    m = to_hubble(flow(), "node1")
    assert (m.IP.source, m.IP.destination) == ("10.244.0.5", "10.244.1.7")
    assert m.IP.ipVersion == pb.IPv4
    assert m.IP.source_xlated == ""


def test_ip_v6() -> None:
    f = flow(replace(WEB, ip="fd00:10:244::5"), replace(API, ip="fd00:10:244:1::7"))
    m = to_hubble(f, "node1")
    assert (m.IP.source, m.IP.destination) == ("fd00:10:244::5", "fd00:10:244:1::7")
    assert m.IP.ipVersion == pb.IPv6


def test_source_xlated_is_the_masquerade_address() -> None:
    f = flow(nat=Nat(original_destination=Address("10.96.0.20", 80),
                     translated_source=Address("192.168.1.9", 61000)))
    m = to_hubble(f, "node1")
    assert m.IP.source_xlated == "192.168.1.9"
    assert m.IP.source == "10.244.0.5"                    # the client, NAT undone
    only_dnat = to_hubble(flow(nat=Nat(original_destination=Address("10.96.0.20", 80))),
                          "node1")
    assert only_dnat.IP.source_xlated == ""


# --- layer 4 ------------------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "case"), [
    (Protocol.TCP, "TCP"), (Protocol.UDP, "UDP"), (Protocol.SCTP, "SCTP")])
def test_l4_ports_per_protocol(protocol: Protocol, case: str) -> None:
    m = to_hubble(flow(protocol=protocol), "node1")
    assert m.l4.WhichOneof("protocol") == case
    l4 = getattr(m.l4, case)
    assert (l4.source_port, l4.destination_port) == (41000, 8080)


@pytest.mark.parametrize(("protocol", "case"), [
    (Protocol.ICMP, "ICMPv4"), (Protocol.ICMPV6, "ICMPv6"), (Protocol.OTHER, None)])
def test_l4_without_ports(protocol: Protocol, case: str | None) -> None:
    f = flow(replace(WEB, port=None), replace(API, port=None), protocol=protocol)
    m = to_hubble(f, "node1")
    assert m.l4.WhichOneof("protocol") == case


def test_missing_ports_are_zero() -> None:
    m = to_hubble(flow(replace(WEB, port=None)), "node1")
    assert (m.l4.TCP.source_port, m.l4.TCP.destination_port) == (0, 8080)


def _flag_set(m: pb.Flow) -> set[str]:
    flags = m.l4.TCP.flags
    return {n for n in ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")
            if getattr(flags, n)}


def test_tcp_flags_syn_ack_means_syn_and_ack() -> None:
    m = to_hubble(flow(tcp=TcpInfo("SYN_RECV", ("SYN-ACK",))), "node1")
    assert _flag_set(m) == {"SYN", "ACK"}


def test_tcp_flags_are_copied() -> None:
    m = to_hubble(flow(tcp=TcpInfo("CLOSE", ("SYN", "RST", "PSH"))), "node1")
    assert _flag_set(m) == {"SYN", "RST", "PSH"}
    assert not to_hubble(flow(tcp=TcpInfo("ESTABLISHED")), "node1").l4.TCP.HasField("flags")
    assert not to_hubble(flow(), "node1").l4.TCP.HasField("flags")


def test_tcp_flags_helper_in_hubble_order() -> None:
    assert tcp_flags(flow(tcp=TcpInfo(None, ("ACK", "SYN-ACK", "FIN", "SYN")))) == [
        "FIN", "SYN", "ACK"]
    assert tcp_flags(flow()) == []


# --- endpoints ----------------------------------------------------------------------------


def test_pod_endpoint() -> None:
    m = to_hubble(flow(), "node1")
    assert (m.source.namespace, m.source.pod_name) == ("shop", "web-7d9f8c-abcde")
    assert list(m.source.labels) == ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop",
                                     "k8s:tier=front"]
    assert m.source.identity == 0
    assert [(w.name, w.kind) for w in m.source.workloads] == [("web", "Deployment")]
    assert [(w.name, w.kind) for w in m.destination.workloads] == [("api", "StatefulSet")]
    assert list(m.destination.labels) == ["k8s:app=api",
                                          "k8s:io.kubernetes.pod.namespace=shop"]
    assert list(m.source_names) == [] and list(m.destination_names) == []


def test_labels_are_sorted() -> None:
    src = replace(WEB, labels=(("zone", "a"), ("app", "web"), ("version", "2")))
    labels = list(to_hubble(flow(src), "node1").source.labels)
    assert labels == sorted(labels)
    assert labels[0] == "k8s:app=web" and labels[-1] == "k8s:zone=a"


def test_node_endpoint_is_reserved_host() -> None:
    m = to_hubble(flow(WEB, NODE), "node1")
    d = m.destination
    assert list(d.labels) == ["reserved:host"]
    assert d.identity == 1
    assert (d.namespace, d.pod_name) == ("", "")
    assert len(d.workloads) == 0


def test_host_network_pod_is_reserved_host_with_its_namespace() -> None:
    m = to_hubble(flow(HOSTNET, API), "node3")
    s = m.source
    assert (s.namespace, s.pod_name, s.identity) == ("monitoring", "node-exporter-abc", 1)
    assert list(s.labels) == ["k8s:app=node-exporter",
                              "k8s:io.kubernetes.pod.namespace=monitoring", "reserved:host"]
    assert [(w.name, w.kind) for w in s.workloads] == [("node-exporter", "DaemonSet")]


def test_external_endpoint_is_reserved_world_with_its_name() -> None:
    m = to_hubble(flow(WEB, WORLD), "node1")
    assert list(m.destination.labels) == ["reserved:world"]
    assert m.destination.identity == 2
    assert list(m.destination_names) == ["example.com"]
    assert list(m.source_names) == []
    unnamed = to_hubble(flow(WEB, replace(WORLD, name=None)), "node1")
    assert list(unnamed.destination_names) == []
    assert list(unnamed.destination.labels) == ["reserved:world"]


def test_external_client_names_go_to_source_names() -> None:
    m = to_hubble(flow(replace(WORLD, port=50000, name="client.example.net"), API), "node2")
    assert list(m.source_names) == ["client.example.net"]
    assert list(m.source.labels) == ["reserved:world"]


def test_destination_service() -> None:
    m = to_hubble(flow(destination_service=Service("shop", "api", "http")), "node1")
    assert (m.destination_service.name, m.destination_service.namespace) == ("api", "shop")
    assert not m.HasField("source_service")
    assert not to_hubble(flow(), "node1").HasField("destination_service")


# --- layer 7 ------------------------------------------------------------------------------


def test_no_l7_is_l3_l4() -> None:
    assert to_hubble(flow(), "node1").Type == pb.L3_L4
    empty = to_hubble(flow(l7=L7(latency_ns=5)), "node1")
    assert empty.Type == pb.L3_L4
    assert not empty.HasField("l7")


def test_dns_response() -> None:
    l7 = L7(dns=DnsInfo("api.shop.svc.cluster.local", ("A",), 0, ("10.96.0.20", "10.96.0.21"),
                        30, ("x.shop.svc.cluster.local",)), latency_ns=120_000)
    m = to_hubble(flow(protocol=Protocol.UDP, l7=l7), "node1")
    assert m.Type == pb.L7
    assert m.l7.WhichOneof("record") == "dns"
    assert m.l7.type == pb.RESPONSE
    assert m.l7.latency_ns == 120_000
    d = m.l7.dns
    assert d.query == "api.shop.svc.cluster.local."
    assert list(d.ips) == ["10.96.0.20", "10.96.0.21"]
    assert list(d.qtypes) == ["A"]
    assert list(d.cnames) == ["x.shop.svc.cluster.local"]
    assert (d.ttl, d.rcode) == (30, 0)


def test_dns_nxdomain_and_request() -> None:
    nx = to_hubble(flow(l7=L7(dns=DnsInfo("nope.example", ("AAAA",), 3))), "node1")
    assert (nx.l7.type, nx.l7.dns.rcode) == (pb.RESPONSE, 3)
    q = to_hubble(flow(l7=L7(dns=DnsInfo("api.example", ("A",)))), "node1")
    assert q.l7.type == pb.REQUEST
    assert q.l7.dns.query == "api.example."
    assert (q.l7.dns.ttl, list(q.l7.dns.ips)) == (0, [])


def test_http() -> None:
    l7 = L7(http=HttpInfo("GET", "/items?id=3", "api.shop:8080", 404))
    m = to_hubble(flow(l7=l7), "node1")
    assert m.Type == pb.L7
    assert m.l7.WhichOneof("record") == "http"
    h = m.l7.http
    assert h.url == "http://api.shop:8080/items?id=3"
    assert (h.code, h.method, h.protocol) == (404, "GET", "HTTP/1.1")
    assert m.l7.type == pb.RESPONSE


def test_http_request_without_host_uses_the_server_address() -> None:
    m = to_hubble(flow(l7=L7(http=HttpInfo("PUT", "/a/b"))), "node1")
    assert m.l7.http.url == "http://10.244.1.7/a/b"
    assert (m.l7.http.code, m.l7.http.method) == (0, "PUT")
    assert m.l7.type == pb.REQUEST


def test_http_url_without_host_brackets_an_ipv6_server() -> None:
    f = flow(replace(WEB, ip="fd00:10:244::5"), replace(API, ip="fd00:10:244:1::7"),
             l7=L7(http=HttpInfo("GET", "/items")))
    url = to_hubble(f, "node1").l7.http.url
    assert urlsplit(url).hostname == "fd00:10:244:1::7"
    assert url == "http://[fd00:10:244:1::7]/items"


# --- verdicts and where the node saw it ---------------------------------------------------


@pytest.mark.parametrize(("verdict", "want"), [
    (Verdict.FORWARDED, pb.FORWARDED), (Verdict.DROPPED, pb.DROPPED),
    (Verdict.ERROR, pb.ERROR), (Verdict.UNKNOWN, pb.VERDICT_UNKNOWN)])
def test_verdicts(verdict: Verdict, want: int) -> None:
    assert to_hubble(flow(verdict=verdict), "node1").verdict == want


def test_dropped_is_a_drop_event_without_observation_point() -> None:
    m = to_hubble(flow(verdict=Verdict.DROPPED, drop_reason_desc="POLICY_DENIED"), "node1")
    assert (m.event_type.type, m.event_type.sub_type) == (1, 0)
    assert m.trace_observation_point == pb.UNKNOWN_POINT
    assert m.traffic_direction == pb.EGRESS
    assert m.Summary == "POLICY_DENIED"
    assert m.drop_reason_desc == pb.DROP_REASON_UNKNOWN


def test_ttl_exceeded_drop_reason() -> None:
    f = flow(verdict=Verdict.DROPPED, drop_reason_desc="time exceeded (ICMP 11/0)")
    assert to_hubble(f, "node1").drop_reason_desc == pb.TTL_EXCEEDED
    forwarded = replace(f, verdict=Verdict.FORWARDED)
    assert to_hubble(forwarded, "node1").drop_reason_desc == pb.DROP_REASON_UNKNOWN


@pytest.mark.parametrize(("src", "dst", "nodes", "direction", "point", "sub_type"), [
    (WEB, API, ("node1",), pb.EGRESS, pb.FROM_ENDPOINT, 5),       # the client's node
    (WEB, API, ("node2",), pb.INGRESS, pb.TO_ENDPOINT, 0),        # the server's node
    (WEB, API, ("node1", "node2"), pb.EGRESS, pb.FROM_ENDPOINT, 5),
    (WEB, API, ("node9",), pb.TRAFFIC_DIRECTION_UNKNOWN, pb.TO_NETWORK, 11),
    (WEB, API, (), pb.TRAFFIC_DIRECTION_UNKNOWN, pb.TO_NETWORK, 11),
    (replace(NODE, node_name="node1"), API, ("node1",), pb.EGRESS, pb.FROM_HOST, 7),
    (HOSTNET, API, ("node3",), pb.EGRESS, pb.FROM_HOST, 7),
    (WEB, NODE, ("node2",), pb.INGRESS, pb.TO_STACK, 3),
    (WEB, replace(API, node_name="node1"), ("node1",), pb.EGRESS, pb.FROM_ENDPOINT, 5),
])
def test_direction_and_observation_point(src: Endpoint, dst: Endpoint, nodes: tuple[str, ...],
                                         direction: int, point: int, sub_type: int) -> None:
    m = to_hubble(flow(src, dst, observations=seen(*nodes)), nodes[0] if nodes else "node9")
    assert m.traffic_direction == direction
    assert m.trace_observation_point == point
    assert (m.event_type.type, m.event_type.sub_type) == (4, sub_type)


def test_is_reply_is_present_and_false() -> None:
    m = to_hubble(flow(), "node1")
    assert m.HasField("is_reply")
    assert m.is_reply.value is False
    assert m.reply is False


# --- summary ------------------------------------------------------------------------------


def test_summary() -> None:
    assert summary(flow(tcp=TcpInfo("ESTABLISHED", ("SYN", "SYN-ACK")))) == (
        "TCP Flags: SYN, ACK")
    assert summary(flow(tcp=TcpInfo("ESTABLISHED"))) == "TCP ESTABLISHED"
    assert summary(flow(protocol=Protocol.UDP)) == "UDP"
    assert summary(flow(l7=L7(dns=DnsInfo("a.example", ("A",), 0)))) == (
        "DNS Answer a.example. A")
    assert summary(flow(l7=L7(dns=DnsInfo("a.example")))) == "DNS Query a.example."
    assert summary(flow(l7=L7(http=HttpInfo("GET", "/x", code=200)))) == (
        "HTTP/1.1 200 GET /x")
    assert to_hubble(flow(protocol=Protocol.SCTP), "node1").Summary == "SCTP"


# --- round trip ---------------------------------------------------------------------------


@pytest.mark.parametrize("f", rich_flows(), ids=["nat-http", "dns-active", "v6-drop", "icmp"])
def test_round_trip(f: Flow) -> None:
    m = to_hubble(f, "node1", 3)
    assert from_hubble(m) == f
    wire = pb.Flow.FromString(m.SerializeToString())
    assert from_hubble(wire) == f


def test_record_is_podflow_json() -> None:
    f = rich_flows()[0]
    record = json.loads(to_hubble(f, "node1").podflow_record)
    assert record["flow_id"] == "c1"
    assert record["schema_version"] == 1


def test_foreign_event_has_no_record() -> None:
    assert from_hubble(pb.Flow(node_name="cilium-node", verdict=pb.FORWARDED)) is None


@pytest.mark.parametrize("record", ["{", '{"schema_version": 99}', "{}",
                                    '{"schema_version": "2"}'])
def test_malformed_or_newer_record_is_refused(record: str) -> None:
    with pytest.raises(ValueError):
        from_hubble(pb.Flow(podflow_record=record))


def test_newer_record_is_a_schema_error() -> None:
    good = json.loads(to_hubble(flow(), "node1").podflow_record)
    good["schema_version"] = 2
    with pytest.raises(SchemaError, match="newer"):
        from_hubble(pb.Flow(podflow_record=json.dumps(good)))
    del good["schema_version"], good["time"]
    with pytest.raises(SchemaError, match="malformed"):
        from_hubble(pb.Flow(podflow_record=json.dumps(good)))


@pytest.mark.parametrize("record", ["[]", "null", "1", '"x"'])
def test_non_object_record_is_a_schema_error(record: str) -> None:
    with pytest.raises(SchemaError):
        from_hubble(pb.Flow(podflow_record=record))


# --- what a Hubble client prints ----------------------------------------------------------


def test_json_form_a_hubble_client_prints() -> None:
    f = flow(tcp=TcpInfo("ESTABLISHED", ("SYN", "SYN-ACK")), time=1_700_000_000.5,
             nat=Nat(translated_source=Address("192.168.1.9", 61000)))
    d = MessageToDict(to_hubble(f, "node1", 7), preserving_proto_field_name=True)
    assert d["verdict"] == "FORWARDED"
    assert d["Type"] == "L3_L4"
    assert d["node_name"] == "node1"
    assert d["time"] == "2023-11-14T22:13:20.500Z"
    assert d["IP"] == {"source": "10.244.0.5", "destination": "10.244.1.7",
                       "ipVersion": "IPv4", "source_xlated": "192.168.1.9"}
    assert d["l4"] == {"TCP": {"source_port": 41000, "destination_port": 8080,
                               "flags": {"SYN": True, "ACK": True}}}
    assert d["is_reply"] is False
    assert d["Summary"] == "TCP Flags: SYN, ACK"
    assert d["traffic_direction"] == "EGRESS"
    assert d["trace_observation_point"] == "FROM_ENDPOINT"
    assert d["event_type"] == {"type": 4, "sub_type": 5}
    assert d["emitter"] == {"name": "Podflow", "version": __version__}
    assert d["source"]["pod_name"] == "web-7d9f8c-abcde"
    assert d["source"]["workloads"] == [{"name": "web", "kind": "Deployment"}]
    assert d["podflow_seq"] == "7"                        # 64-bit integers print as strings
    assert "reply" not in d                               # deprecated, zero: left out


def test_json_form_of_l7_and_drop() -> None:
    dns = to_hubble(flow(protocol=Protocol.UDP, l7=L7(dns=DnsInfo("a.example", ("A",), 0))),
                    "node1")
    d = MessageToDict(dns, preserving_proto_field_name=True)
    assert d["Type"] == "L7"
    assert d["l7"]["type"] == "RESPONSE"
    assert d["l7"]["dns"]["query"] == "a.example."
    assert d["l4"] == {"UDP": {"source_port": 41000, "destination_port": 8080}}
    drop = MessageToDict(to_hubble(flow(WEB, WORLD, verdict=Verdict.DROPPED), "node1"),
                         preserving_proto_field_name=True)
    assert drop["verdict"] == "DROPPED"
    assert drop["destination"]["labels"] == ["reserved:world"]
    assert drop["destination"]["identity"] == 2
    assert drop["destination_names"] == ["example.com"]
    assert "trace_observation_point" not in drop


def test_an_end_nobody_could_name_is_reserved_unknown() -> None:
    m = to_hubble(flow(WEB, replace(WORLD, kind=EndpointKind.UNKNOWN, name=None)), "node1")
    assert (list(m.destination.labels), m.destination.identity) == (["reserved:unknown"], 0)
