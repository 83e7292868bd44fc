"""Hubble's FlowFilter semantics over the events podflow serves: every field, AND inside a
filter, OR between values, whitelist/blacklist, and the values that must be refused."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from podflow.model.flow import (
    L7,
    Address,
    DnsInfo,
    Endpoint,
    EndpointKind,
    Flow,
    HttpInfo,
    Nat,
    ObservationPoint,
    Protocol,
    Service,
    TcpInfo,
    Verdict,
    Workload,
)
from podflow.observer.convert import to_hubble
from podflow.observer.filters import compile_filter, compile_request
from podflow.observer.proto.hubble import flow_pb2 as pb

WEB = Endpoint("10.244.0.5", 41000, EndpointKind.POD, "shop", "web-7d9f8c-abcde",
               Workload("Deployment", "web"), (("app", "web"), ("tier", "front")), "node1")
API = Endpoint("10.244.1.7", 8080, EndpointKind.POD, "shop", "api-5c6b7-xyz12",
               Workload("StatefulSet", "api"), (("app", "api"),), "node2")
FRONT = Endpoint("10.244.0.9", 42000, EndpointKind.POD, "default", "frontend-abc",
                 labels=(("app", "frontend"),), node_name="node1")
BACK = Endpoint("10.244.1.9", 9000, EndpointKind.POD, "default", "backend-xyz",
                labels=(("app", "backend"),), node_name="node2")
NODE = Endpoint("192.168.1.10", 40000, EndpointKind.NODE, node_name="node2", name="node2")
WORLD = Endpoint("93.184.216.34", 443, EndpointKind.EXTERNAL, name="api.Example.com")
COREDNS = Endpoint("10.244.2.3", 53, EndpointKind.POD, "kube-system", "coredns-1",
                   labels=(("k8s-app", "kube-dns"),), node_name="node3")


def flow(src: Endpoint = WEB, dst: Endpoint = API, **kw: Any) -> Flow:
    """A forwarded TCP connection web -> api seen on the client's node, overridable."""
    base: dict[str, Any] = {"time": 1000.0, "end_time": 1001.0, "flow_id": "c1",
                            "observations": (ObservationPoint("node1", "conntrack"),)}
    base.update(kw)
    protocol = base.pop("protocol", Protocol.TCP)
    return Flow(source=src, destination=dst, protocol=protocol, **base)


def event(f: Flow | None = None, node: str = "node1") -> pb.Flow:
    """The Hubble event ``node`` serves for ``f`` (default: web -> api)."""
    return to_hubble(f if f is not None else flow(), node)


def matches(ev: pb.Flow, **fields: Any) -> bool:
    """Whether one FlowFilter with ``fields`` set selects ``ev``."""
    return compile_filter(pb.FlowFilter(**fields))(ev)


def passes(ev: pb.Flow, whitelist: list[pb.FlowFilter],
           blacklist: list[pb.FlowFilter] | None = None) -> bool:
    """Whether a GetFlows request with these lists lets ``ev`` through."""
    return compile_request(whitelist, blacklist or [])(ev)


def refused(**fields: Any) -> str:
    """The ValueError message of a filter that must be refused."""
    with pytest.raises(ValueError) as info:
        compile_filter(pb.FlowFilter(**fields))
    return str(info.value)


EV = event()
EV_DEFAULT = event(flow(FRONT, BACK))
EV_WORLD = event(flow(WEB, WORLD))
EV_NODE = event(flow(NODE, API, observations=(ObservationPoint("node2", "conntrack"),)),
                "node2")
EV_DNS = event(flow(WEB, COREDNS, protocol=Protocol.UDP,
                    l7=L7(dns=DnsInfo("api.shop.svc.cluster.local", ("A",), 0))))
EV_HTTP = event(flow(l7=L7(http=HttpInfo("get", "/v1/items?id=3", "api.shop", 404))))


# --- pods ---------------------------------------------------------------------------------


def test_pod_name_alone_is_a_prefix_in_default() -> None:
    assert matches(EV_DEFAULT, source_pod=["frontend"])
    assert matches(EV_DEFAULT, source_pod=["frontend-abc"])
    assert not matches(EV_DEFAULT, source_pod=["backend"])     # that is the destination
    assert not matches(EV, source_pod=["web"])                 # web is in shop, not default
    assert not matches(EV_DEFAULT, source_pod=["rontend"])     # a prefix, not a substring


def test_pod_namespace_slash_is_any_pod_there() -> None:
    assert matches(EV, source_pod=["shop/"])
    assert matches(EV, destination_pod=["shop/"])
    assert not matches(EV, source_pod=["default/"])
    assert not matches(EV, source_pod=["sho/"])                # namespaces are exact


def test_pod_namespace_and_prefix() -> None:
    assert matches(EV, source_pod=["shop/web-"])
    assert matches(EV, destination_pod=["shop/api"])
    assert not matches(EV, source_pod=["shop/api"])
    assert not matches(EV, source_pod=["default/web"])


def test_pod_slash_prefix_is_any_namespace() -> None:
    assert matches(EV, source_pod=["/web"])
    assert matches(EV_DEFAULT, source_pod=["/front"])
    assert not matches(EV, source_pod=["/api"])


def test_slash_alone_is_any_pod_but_never_an_end_without_one() -> None:
    assert matches(EV, source_pod=["/"])
    assert matches(EV, destination_pod=["/"])
    assert not matches(EV_WORLD, destination_pod=["/"])        # external: no ns, no pod
    assert not matches(EV_NODE, source_pod=["/"])              # node: no ns, no pod
    assert not matches(pb.Flow(), source_pod=["/"])
    assert matches(pb.Flow(source=pb.Endpoint(namespace="x")), source_pod=["/"])


def test_pod_sides_are_separate() -> None:
    assert matches(EV, source_pod=["shop/web"], destination_pod=["shop/api"])
    assert not matches(EV, source_pod=["shop/api"], destination_pod=["shop/web"])


def test_pod_values_are_or() -> None:
    assert matches(EV, source_pod=["default/", "shop/web"])
    assert not matches(EV, source_pod=["default/", "kube-system/"])


# --- services -----------------------------------------------------------------------------


def test_destination_service() -> None:
    ev = event(flow(destination_service=Service("shop", "api-gateway", "http")))
    assert matches(ev, destination_service=["shop/api"])       # name prefix
    assert matches(ev, destination_service=["shop/"])
    assert matches(ev, destination_service=["/api-gateway"])
    assert not matches(ev, destination_service=["api"])        # default namespace
    assert not matches(ev, destination_service=["shop/gateway"])
    assert not matches(EV, destination_service=["/"])          # no service at all
    assert matches(event(flow(FRONT, BACK, destination_service=Service("default", "backend"))),
                   destination_service=["backend"])


def test_source_service_never_matches_a_podflow_event() -> None:
    ev = event(flow(destination_service=Service("shop", "api")))
    for value in ("/", "shop/", "shop/api", "/api", "api"):
        assert not matches(ev, source_service=[value])


# --- addresses and ports ------------------------------------------------------------------


def test_ip_exact_and_cidr_v4() -> None:
    assert matches(EV, source_ip=["10.244.0.5"])
    assert not matches(EV, source_ip=["10.244.0.50"])
    assert matches(EV, destination_ip=["10.244.1.0/24"])
    assert matches(EV, destination_ip=["10.244.1.7/24"])       # host bits are allowed
    assert not matches(EV, destination_ip=["10.244.0.0/24"])
    assert matches(EV, source_ip=["192.168.0.0/16", "10.0.0.0/8"])
    assert not matches(EV, source_ip=["fd00::/8"])             # another family


def test_ip_exact_and_cidr_v6() -> None:
    ev = event(flow(replace(WEB, ip="fd00:10:244::5"), replace(API, ip="fd00:10:244:1::7")))
    assert matches(ev, source_ip=["fd00:10:244::5"])
    assert matches(ev, source_ip=["FD00:10:244:0::5"])         # the address, not the text
    assert matches(ev, destination_ip=["fd00:10:244:1::/64"])
    assert not matches(ev, destination_ip=["fd00:10:244:2::/64"])
    assert not matches(ev, source_ip=["10.0.0.0/8"])


def test_source_ip_xlated() -> None:
    ev = event(flow(nat=Nat(translated_source=Address("192.168.1.9", 61000))))
    assert matches(ev, source_ip_xlated=["192.168.1.9"])
    assert matches(ev, source_ip_xlated=["192.168.1.0/24"])
    assert not matches(ev, source_ip_xlated=["10.244.0.5"])
    assert not matches(EV, source_ip_xlated=["0.0.0.0/0"])     # not translated


@pytest.mark.parametrize("value", ["10.244.0", "10.0.0.0/33", "web", "10.0.0.1/x"])
def test_bad_ip_is_refused(value: str) -> None:
    assert value in refused(source_ip=[value])


def test_ports() -> None:
    assert matches(EV, source_port=["41000"])
    assert matches(EV, destination_port=["8080"])
    assert matches(EV, destination_port=["80", "8080"])
    assert not matches(EV, destination_port=["41000"])
    assert matches(EV_DNS, destination_port=["53"])            # UDP
    icmp = event(flow(protocol=Protocol.ICMP))
    assert not matches(icmp, destination_port=["8080"])        # no ports


@pytest.mark.parametrize("value", ["http", "-1", "65536", "80/tcp", " 80", "8.0"])
def test_bad_port_is_refused(value: str) -> None:
    assert "destination_port" in refused(destination_port=[value])


# --- protocol -----------------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "names", "others"), [
    (Protocol.TCP, ["tcp", "TCP", "Tcp"], ["udp", "icmp", "sctp"]),
    (Protocol.UDP, ["udp"], ["tcp", "icmpv4"]),
    (Protocol.SCTP, ["sctp"], ["tcp", "udp"]),
    (Protocol.ICMP, ["icmp", "icmpv4", "ICMPv4"], ["icmpv6", "tcp"]),
    (Protocol.ICMPV6, ["icmp", "icmpv6"], ["icmpv4", "udp"]),
])
def test_l4_protocol(protocol: Protocol, names: list[str], others: list[str]) -> None:
    ev = event(flow(protocol=protocol))
    for name in names:
        assert matches(ev, protocol=[name]), name
    for name in others:
        assert not matches(ev, protocol=[name]), name
    assert matches(ev, protocol=[*others, names[0]])           # one value is enough


def test_l7_protocol() -> None:
    assert matches(EV_DNS, protocol=["dns"])
    assert matches(EV_DNS, protocol=["DNS"])
    assert matches(EV_DNS, protocol=["udp"])                   # still a UDP event
    assert not matches(EV_DNS, protocol=["http"])
    assert matches(EV_HTTP, protocol=["http"])
    assert not matches(EV_HTTP, protocol=["dns"])
    assert not matches(EV, protocol=["http"])
    assert not matches(EV, protocol=["kafka"])


@pytest.mark.parametrize("value", ["quic", "tcp6", "ip", ""])
def test_unknown_protocol_is_refused(value: str) -> None:
    assert "protocol" in refused(protocol=[value])


# --- verdict, direction, node, version, reply, uuid ---------------------------------------


def test_verdict() -> None:
    drop = event(flow(verdict=Verdict.DROPPED))
    assert matches(EV, verdict=[pb.FORWARDED])
    assert not matches(EV, verdict=[pb.DROPPED])
    assert matches(drop, verdict=[pb.DROPPED])
    assert matches(drop, verdict=[pb.FORWARDED, pb.DROPPED])
    assert not matches(drop, verdict=[pb.FORWARDED, pb.ERROR])


def test_traffic_direction() -> None:
    egress = EV                                                # seen on the client's node
    ingress = event(flow(observations=(ObservationPoint("node2", "conntrack"),)), "node2")
    between = event(flow(observations=(ObservationPoint("node9", "conntrack"),)), "node9")
    assert matches(egress, traffic_direction=[pb.EGRESS])
    assert not matches(egress, traffic_direction=[pb.INGRESS])
    assert matches(ingress, traffic_direction=[pb.INGRESS])
    assert not matches(ingress, traffic_direction=[pb.EGRESS])
    assert not matches(between, traffic_direction=[pb.INGRESS, pb.EGRESS])
    assert matches(between, traffic_direction=[pb.TRAFFIC_DIRECTION_UNKNOWN])


def test_node_name_glob() -> None:
    ev = event(node="worker-2.example")
    assert matches(ev, node_name=["worker-2.example"])
    assert matches(ev, node_name=["worker-*"])
    assert matches(ev, node_name=["*.example"])
    assert matches(ev, node_name=["kind/worker-*"])            # a cluster part is allowed
    assert matches(ev, node_name=["node1", "worker*"])
    assert not matches(ev, node_name=["worker-1*"])
    assert not matches(ev, node_name=["worker"])               # whole name, not a prefix
    assert not matches(ev, node_name=["worker-?.example"])     # only * is a wildcard


def test_ip_version() -> None:
    v6 = event(flow(replace(WEB, ip="fd00::5"), replace(API, ip="fd00::7")))
    assert matches(EV, ip_version=[pb.IPv4])
    assert not matches(EV, ip_version=[pb.IPv6])
    assert matches(v6, ip_version=[pb.IPv6])
    assert matches(v6, ip_version=[pb.IPv4, pb.IPv6])


def test_reply() -> None:
    assert matches(EV, reply=[False])
    assert not matches(EV, reply=[True])
    assert matches(EV, reply=[True, False])
    assert matches(pb.Flow(is_reply={"value": True}), reply=[True])


def test_reply_unknown_is_no_match() -> None:
    assert not matches(pb.Flow(verdict=pb.FORWARDED), reply=[False])


def test_uuid() -> None:
    assert matches(EV, uuid=[EV.uuid])
    assert matches(EV, uuid=["nope", EV.uuid])
    assert not matches(EV, uuid=[EV_DNS.uuid])


def test_event_type_and_identity() -> None:
    drop = event(flow(verdict=Verdict.DROPPED))
    assert matches(EV, event_type=[pb.EventTypeFilter(type=4)])
    assert not matches(EV, event_type=[pb.EventTypeFilter(type=1)])
    assert matches(drop, event_type=[pb.EventTypeFilter(type=1)])
    assert matches(EV, event_type=[pb.EventTypeFilter(type=4, match_sub_type=True,
                                                      sub_type=5)])     # FROM_ENDPOINT
    assert not matches(EV, event_type=[pb.EventTypeFilter(type=4, match_sub_type=True,
                                                          sub_type=0)])
    assert matches(EV_WORLD, destination_identity=[2])
    assert matches(EV_NODE, source_identity=[1])
    assert not matches(EV, source_identity=[1, 2])


# --- labels -------------------------------------------------------------------------------


def test_label_without_source_matches_any_source() -> None:
    assert matches(EV, source_label=["app=web"])
    assert matches(EV, source_label=["app"])
    assert matches(EV, source_label=["any:app=web"])
    assert not matches(EV, source_label=["app=api"])
    assert matches(EV, destination_label=["app=api"])
    assert not matches(EV, destination_label=["tier"])


def test_label_with_source_requires_it() -> None:
    assert matches(EV, source_label=["k8s:app=web"])
    assert not matches(EV, source_label=["container:app=web"])
    direct = pb.Flow(source=pb.Endpoint(labels=["container:app=web"]))
    assert matches(direct, source_label=["app=web"])
    assert not matches(direct, source_label=["k8s:app=web"])


def test_label_negations() -> None:
    assert matches(EV, source_label=["!version"])
    assert not matches(EV, source_label=["!app"])
    assert matches(EV, source_label=["app!=api"])
    assert not matches(EV, source_label=["app!=web"])
    assert matches(EV, source_label=["version!=2"])            # absent: != holds


def test_label_sets() -> None:
    assert matches(EV, source_label=["app in (api, web)"])
    assert matches(EV, source_label=["app in (web)"])
    assert not matches(EV, source_label=["app in (api,db)"])
    assert matches(EV, source_label=["app notin (api)"])
    assert not matches(EV, source_label=["app notin (web, api)"])
    assert not matches(EV, source_label=["version in (1,2)"])  # absent: in fails
    assert matches(EV, source_label=["version notin (1)"])     # absent: notin holds


def test_label_terms_are_and_selectors_are_or() -> None:
    assert matches(EV, source_label=["app=web,tier=front"])
    assert matches(EV, source_label=["app=web, tier in (front,back), !version"])
    assert not matches(EV, source_label=["app=web,tier=back"])
    assert matches(EV, source_label=["app=web,tier=back", "tier=front"])


def test_namespace_and_reserved_labels() -> None:
    assert matches(EV, source_label=["io.kubernetes.pod.namespace=shop"])
    assert matches(EV, source_label=["k8s:io.kubernetes.pod.namespace=shop"])
    assert not matches(EV_DEFAULT, source_label=["io.kubernetes.pod.namespace=shop"])
    assert matches(EV_WORLD, destination_label=["reserved:world"])
    assert not matches(EV_WORLD, source_label=["reserved:world"])
    assert matches(EV_NODE, source_label=["reserved:host"])
    assert not matches(EV_NODE, source_label=["reserved:world"])


@pytest.mark.parametrize("selector", ["app=(web)", "=web", "app in web", "!app=web",
                                      "app=web,", "app in (a", "(app)", "   "])
def test_malformed_selector_is_refused(selector: str) -> None:
    assert "source_label" in refused(source_label=[selector])


# --- workloads ----------------------------------------------------------------------------


def test_workloads() -> None:
    assert matches(EV, source_workload=[pb.Workload(name="web")])
    assert matches(EV, source_workload=[pb.Workload(kind="Deployment")])
    assert matches(EV, source_workload=[pb.Workload(name="web", kind="Deployment")])
    assert not matches(EV, source_workload=[pb.Workload(name="web", kind="StatefulSet")])
    assert not matches(EV, source_workload=[pb.Workload(name="we")])     # exact, no prefix
    assert matches(EV, destination_workload=[pb.Workload(kind="StatefulSet")])
    assert matches(EV, destination_workload=[pb.Workload(name="db"), pb.Workload(name="api")])
    assert not matches(EV_WORLD, destination_workload=[pb.Workload(kind="Deployment")])
    assert "workload" in refused(source_workload=[pb.Workload()])


# --- names --------------------------------------------------------------------------------


def test_fqdn_wildcards_on_a_named_external_end() -> None:
    assert matches(EV_WORLD, destination_fqdn=["api.example.com"])
    assert matches(EV_WORLD, destination_fqdn=["API.example.com."])       # case, dot
    assert matches(EV_WORLD, destination_fqdn=["*.example.com"])
    assert matches(EV_WORLD, destination_fqdn=["api.*"])
    assert matches(EV_WORLD, destination_fqdn=["*"])
    assert not matches(EV_WORLD, destination_fqdn=["example.com"])        # whole name
    assert not matches(EV_WORLD, destination_fqdn=["*.example.org"])
    # only * is a wildcard (Hubble's rule): ? and [..] are literal characters
    assert not matches(EV_WORLD, destination_fqdn=["ap?.example.com"])
    assert not matches(EV_WORLD, destination_fqdn=["[a]pi.example.com"])
    assert not matches(EV_WORLD, source_fqdn=["*"])                       # the pod end
    assert not matches(EV, destination_fqdn=["*"])                        # no names
    unnamed = event(flow(WEB, replace(WORLD, name=None)))
    assert not matches(unnamed, destination_fqdn=["*"])


def test_dns_query_regex() -> None:
    assert matches(EV_DNS, dns_query=[r"svc\.cluster\.local\.$"])
    assert matches(EV_DNS, dns_query=["^api[.]shop"])
    assert matches(EV_DNS, dns_query=["shop"])                            # searched
    assert not matches(EV_DNS, dns_query=["^shop"])
    assert not matches(EV, dns_query=[".*"])                              # no DNS record
    assert "dns_query" in refused(dns_query=["(unclosed"])


# --- HTTP ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "value", "hit"), [
    (404, "404", True), (404, "4+", True), (404, "40+", True), (404, "400", False),
    (404, "41+", False), (404, "5+", False), (503, "5+", True), (503, "50+", True),
    (503, "503", True), (503, "500", False), (503, "51+", False), (200, "2+", True),
    (200, "20+", True), (200, "1+", False), (101, "1+", True), (101, "10+", True),
])
def test_http_status_code(code: int, value: str, hit: bool) -> None:
    ev = event(flow(l7=L7(http=HttpInfo("GET", "/", code=code))))
    assert matches(ev, http_status_code=[value]) is hit


def test_http_status_code_alone() -> None:
    assert matches(EV_HTTP, http_status_code=["404"])
    assert matches(EV_HTTP, http_status_code=["4+"])
    assert matches(EV_HTTP, http_status_code=["40+"])
    assert not matches(EV_HTTP, http_status_code=["5+"])
    assert not matches(EV_HTTP, http_status_code=["200"])
    request = event(flow(l7=L7(http=HttpInfo("GET", "/"))))  # no response yet
    assert not matches(request, http_status_code=["4+", "5+", "2+"])
    assert not matches(EV, http_status_code=["2+"])


@pytest.mark.parametrize("value", ["abc", "4x4", "+", "1000", "4++", "", "40 4"])
def test_bad_http_status_code_is_refused(value: str) -> None:
    assert "http_status_code" in refused(http_status_code=[value])


@pytest.mark.parametrize("value", ["404+", "600", "099"])
def test_status_code_outside_hubbles_forms_is_refused(value: str) -> None:
    refused(http_status_code=[value])


def test_http_method_is_case_insensitive() -> None:
    assert matches(EV_HTTP, http_method=["GET"])               # recorded as "get"
    assert matches(EV_HTTP, http_method=["get"])
    assert matches(EV_HTTP, http_method=["Get", "POST"])
    assert not matches(EV_HTTP, http_method=["POST"])
    assert not matches(EV, http_method=["GET"])                # no HTTP record


def test_http_path_regex() -> None:
    assert matches(EV_HTTP, http_path=["^/v1/items"])
    assert matches(EV_HTTP, http_path=["items"])
    assert not matches(EV_HTTP, http_path=["^/items"])
    assert not matches(EV_HTTP, http_path=["api\\.shop"])      # the host is not the path
    assert not matches(EV, http_path=[".*"])
    root = event(flow(l7=L7(http=HttpInfo("GET", None, "api.shop"))))
    assert matches(root, http_path=["^/$"])
    assert "http_path" in refused(http_path=["[a-"])


def test_http_path_is_the_path_without_the_query() -> None:
    assert matches(EV_HTTP, http_path=["^/v1/items$"])
    assert not matches(EV_HTTP, http_path=["id=3"])


def test_http_url_regex() -> None:
    assert EV_HTTP.l7.http.url == "http://api.shop/v1/items?id=3"
    assert matches(EV_HTTP, http_url=["^http://api\\.shop/"])
    assert matches(EV_HTTP, http_url=["id=3$"])
    assert not matches(EV_HTTP, http_url=["^https://"])
    assert not matches(EV, http_url=[".*"])


# --- TCP flags ----------------------------------------------------------------------------


def test_tcp_flags_must_all_be_set() -> None:
    syn_ack = event(flow(tcp=TcpInfo("ESTABLISHED", ("SYN-ACK",))))
    syn_only = event(flow(tcp=TcpInfo("SYN_SENT", ("SYN",))))
    both = pb.TCPFlags(SYN=True, ACK=True)
    assert matches(syn_ack, tcp_flags=[both])
    assert matches(syn_ack, tcp_flags=[pb.TCPFlags(SYN=True)])
    assert matches(syn_ack, tcp_flags=[pb.TCPFlags(ACK=True)])
    assert not matches(syn_only, tcp_flags=[both])
    assert matches(syn_only, tcp_flags=[pb.TCPFlags(SYN=True)])
    assert not matches(syn_ack, tcp_flags=[pb.TCPFlags(FIN=True)])
    assert matches(syn_only, tcp_flags=[pb.TCPFlags(FIN=True), pb.TCPFlags(SYN=True)])
    assert not matches(EV_DNS, tcp_flags=[pb.TCPFlags(SYN=True)])          # UDP
    assert not matches(EV, tcp_flags=[pb.TCPFlags(SYN=True)])              # none seen


# --- lists, AND, OR -----------------------------------------------------------------------


def test_and_between_fields_or_between_values() -> None:
    assert matches(EV, source_pod=["shop/"], protocol=["tcp"], verdict=[pb.FORWARDED])
    assert not matches(EV, source_pod=["shop/"], protocol=["udp"])
    assert matches(EV, source_pod=["shop/"], protocol=["udp", "tcp"])
    assert not matches(EV, source_pod=["shop/"], destination_port=["80"],
                       verdict=[pb.FORWARDED])


def test_whitelist_is_or() -> None:
    a = pb.FlowFilter(source_pod=["default/"])
    b = pb.FlowFilter(destination_pod=["shop/api"])
    assert passes(EV, [a, b])
    assert passes(EV_DEFAULT, [a, b])
    assert not passes(EV_DNS, [a, b])


def test_blacklist_excludes() -> None:
    shop = pb.FlowFilter(source_pod=["shop/"])
    dns = pb.FlowFilter(protocol=["dns"])
    assert passes(EV, [shop], [dns])
    assert not passes(EV_DNS, [shop], [dns])
    assert not passes(EV_DNS, [], [dns])                       # blacklist alone
    assert passes(EV_DEFAULT, [], [shop, dns])
    assert not passes(EV, [], [dns, shop])                     # any blacklist filter


def test_empty_lists_and_empty_filters() -> None:
    for ev in (EV, EV_DNS, EV_WORLD, pb.Flow()):
        assert passes(ev, [])
        assert passes(ev, [pb.FlowFilter()])                   # no field set: all
        assert not passes(ev, [], [pb.FlowFilter()])


def test_cli_namespace_request() -> None:
    """``hubble observe -n shop --verdict DROPPED --protocol tcp`` (design note, section 2)."""
    wl = [pb.FlowFilter(source_pod=["shop/"], verdict=[pb.DROPPED], protocol=["tcp"]),
          pb.FlowFilter(destination_pod=["shop/"], verdict=[pb.DROPPED], protocol=["tcp"])]
    into_shop = event(flow(FRONT, API, verdict=Verdict.DROPPED))
    assert passes(into_shop, wl)
    assert not passes(EV, wl)                                  # forwarded
    assert not passes(event(flow(FRONT, BACK, verdict=Verdict.DROPPED)), wl)


# --- refused filters ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["source_pod", "destination_pod", "source_service",
                                  "destination_service", "source_fqdn", "destination_fqdn",
                                  "source_ip", "destination_ip", "source_ip_xlated",
                                  "source_port", "destination_port", "protocol",
                                  "source_label", "destination_label", "node_name",
                                  "http_status_code"])
def test_empty_value_is_refused(name: str) -> None:
    assert name in refused(**{name: [""]})


def test_one_empty_value_among_good_ones_is_refused() -> None:
    assert "source_pod" in refused(source_pod=["shop/", ""])
    assert "destination_ip" in refused(destination_ip=["10.0.0.1", ""])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def test_unknown_field_is_refused_by_number() -> None:
    f = pb.FlowFilter(source_pod=["shop/"])
    f.MergeFromString(_length_delimited(999, _length_delimited(1, b"true")))  # experimental
    with pytest.raises(ValueError, match="999"):
        compile_filter(f)
    with pytest.raises(ValueError, match="999"):
        compile_request([], [f])


def test_several_unknown_fields_are_named() -> None:
    f = pb.FlowFilter()
    f.MergeFromString(_length_delimited(38, b"cluster-a") + _length_delimited(37, b"c"))
    with pytest.raises(ValueError, match="37, 38"):
        compile_filter(f)


def test_filter_built_from_the_wire_is_evaluated() -> None:
    raw = pb.FlowFilter(source_pod=["shop/"], destination_port=["8080"]).SerializeToString()
    f = pb.FlowFilter.FromString(raw)
    assert compile_filter(f)(EV)
    assert not compile_filter(f)(EV_DNS)


@pytest.mark.parametrize("field", ["dns_query", "http_path", "http_url", "http_method", "uuid"])
def test_an_empty_value_is_refused_for_every_string_field(field: str) -> None:
    assert field in refused(**{field: [""]})
