"""Prometheus metrics: options syntax, context labels, every handler, expiry, follower, ASGI."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from podflow.metrics.asgi import metrics_app
from podflow.metrics.context import ContextOptions, parse_metrics, traffic_direction
from podflow.metrics.dns import DnsHandler
from podflow.metrics.drop import DropHandler
from podflow.metrics.flow import FlowHandler
from podflow.metrics.follower import Follower, Ledger
from podflow.metrics.http import HttpHandler, HttpV2Handler
from podflow.metrics.podflow_health import (
    PodflowHealthHandler,
    lost_events,
    sources_up,
    watches,
)
from podflow.metrics.port_distribution import PortDistributionHandler
from podflow.metrics.registry import HANDLERS, MetricSet
from podflow.metrics.tcp import TcpHandler
from podflow.model.flow import (
    L7,
    DnsInfo,
    Endpoint,
    EndpointKind,
    Flow,
    FlowState,
    HttpInfo,
    ObservationPoint,
    Protocol,
    TcpInfo,
    Verdict,
    Workload,
)
from podflow.store.duckdb import DuckDBStore

FE = Endpoint("10.244.0.5", 41000, EndpointKind.POD, "shop", "frontend-7d9f8c-abcde",
              Workload("Deployment", "frontend"), (("app.kubernetes.io/name", "web"),
                                                   ("app", "fe")), "node1")
BE = Endpoint("10.244.1.7", 9000, EndpointKind.POD, "shop", "backend-5c6b7-xyz12",
              Workload("Deployment", "backend"), (("app", "backend"),), "node2")
DB = Endpoint("192.168.100.10", 5432, EndpointKind.EXTERNAL, name="db")


def flow(src: Endpoint = FE, dst: Endpoint = BE, **kw: Any) -> Flow:
    """A forwarded TCP connection seen by node1's conntrack, overridable."""
    base: dict[str, Any] = {"time": 1000.0, "end_time": 1001.0, "flow_id": "f1",
                            "observations": (ObservationPoint("node1", "conntrack"),)}
    base.update(kw)
    protocol = base.pop("protocol", Protocol.TCP)
    return Flow(source=src, destination=dst, protocol=protocol, **base)


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


# -- options syntax ----------------------------------------------------------------------
def test_parse_list_spaces_commas_and_label_commas() -> None:
    got = parse_metrics("flow:sourceContext=namespace;destinationContext=workload,drop "
                        "dns:query;ignoreAAAA http:labelsContext=source_pod,destination_app",
                        list(HANDLERS))
    assert got == [("flow", {"sourcecontext": "namespace", "destinationcontext": "workload"}),
                   ("drop", {}), ("dns", {"query": "true", "ignoreaaaa": "true"}),
                   ("http", {"labelscontext": "source_pod,destination_app"})]
    assert parse_metrics("  ", list(HANDLERS)) == []


@pytest.mark.parametrize(("text", "needle"), [
    ("flows", "unknown metric 'flows'"),
    ("flow flow", "given twice"),
    ("flow:sourceContext=", "bad option"),
    ("flow:=pod", "bad option"),
    ("flow:sourceContext=pod;sourcecontext=ip", "given twice"),
    ("flow:sourceContext=pods", "unknown sourceContext identifier 'pods'"),
    ("drop:labelsContext=source_pod,dest_pod", "unknown labelsContext label 'dest_pod'"),
    ("tcp:bogus=1", "has no option bogus"),
    ("podflow:sourceContext=pod", "has no option sourcecontext"),
    ("podflow:staleAfter=soon", "must be a number"),
    ("http httpV2", "enable only one"),
    ("port-distribution,icmpx", "unknown metric 'icmpx' in 'icmpx'"),
    ("flow,nope:sourceContext=pod", "unknown metric 'nope'"),
    ("http:exemplars=maybe", "expected true or false"),
])
def test_parse_errors_are_clear(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        MetricSet(text)


def test_metric_set_always_has_health_and_defaults() -> None:
    assert [h.name for h in MetricSet("drop").handlers] == ["drop", "podflow"]
    names = [h.name for h in MetricSet(None).handlers]
    assert names == ["flow", "drop", "tcp", "icmp", "port-distribution", "dns", "http",
                     "podflow"]
    assert [n for n, _ in parse_metrics("port-distribution,icmp:sourceContext=pod",
                                        list(HANDLERS))] == ["port-distribution", "icmp"]
    assert all(cls.help for cls in HANDLERS.values())


# -- context labels ----------------------------------------------------------------------
def test_context_identifiers_and_fallback() -> None:
    def one(ident: str, e: Endpoint = FE) -> str:
        ctx = ContextOptions.parse({"sourcecontext": ident})
        return ctx.label_values(flow(src=e))[0]

    assert one("namespace") == "shop"
    assert one("pod") == "shop/frontend-7d9f8c-abcde"
    assert one("pod-name") == "frontend-7d9f8c-abcde"
    assert one("pod-short") == "shop/frontend"
    assert one("workload") == "shop/frontend"
    assert one("workload-name") == "frontend"
    assert one("app") == "web"  # app.kubernetes.io/name wins over app
    assert one("app", BE) == "backend"
    assert one("ip") == "10.244.0.5"
    assert one("node") == "node1"
    assert one("identity", BE) == "app=backend"
    assert one("workload", DB) == ""
    assert one("workload|dns|ip", DB) == "db"
    assert one("pod|ip", DB) == "192.168.100.10"


def test_labels_context_order_and_values() -> None:
    ctx = ContextOptions.parse({"labelscontext": "traffic_direction,destination_workload,"
                                                 "source_namespace,source_ip",
                                "destinationcontext": "namespace"})
    assert ctx.label_names() == ["source_ip", "source_namespace", "destination_workload",
                                 "traffic_direction", "destination"]
    assert ctx.label_values(flow()) == ["10.244.0.5", "shop", "backend", "egress", "shop"]


def test_reserved_identity_workload_kind_and_contexts_by_direction() -> None:
    ctx = ContextOptions.parse({"sourcecontext": "workload-name|reserved-identity"})
    assert ctx.label_values(flow(src=DB)) == ["reserved:world"]
    assert ctx.label_values(flow()) == ["frontend"]
    node = replace(FE, kind=EndpointKind.NODE, workload=None)
    assert ctx.label_values(flow(src=node)) == ["reserved:host"]
    kinds = ContextOptions.parse({"labelscontext": "source_workload_kind,destination_workload"})
    assert kinds.label_values(flow()) == ["Deployment", "backend"]
    by_point = ContextOptions.parse({"sourcecontext": "namespace",
                                     "sourceingresscontext": "pod-name",
                                     "destinationcontext": "workload-name",
                                     "destinationegresscontext": "ip"})
    assert by_point.label_values(flow(), "egress") == ["shop", "10.244.1.7"]
    assert by_point.label_values(flow(), "ingress") == ["frontend-7d9f8c-abcde", "backend"]
    with pytest.raises(ValueError, match="sourceEgressContext needs sourceContext"):
        ContextOptions.parse({"sourceegresscontext": "pod"})
    with pytest.raises(ValueError, match="unknown destinationIngressContext identifier"):
        ContextOptions.parse({"destinationcontext": "pod", "destinationingresscontext": "x"})
    assert [h.name for h in MetricSet("flow:sourceContext=pod;sourceEgressContext=ip"
                                      ).handlers] == ["flow", "podflow"]


def test_traffic_direction() -> None:
    assert traffic_direction(flow()) == "egress"
    seen_by_server = (ObservationPoint("node2", "packets"),)
    assert traffic_direction(flow(observations=seen_by_server)) == "ingress"
    assert traffic_direction(flow(src=DB, dst=DB, observations=())) == "unknown"


# -- handlers ----------------------------------------------------------------------------
DNS_OK = L7(dns=DnsInfo("db.example", ("A",), 0, ("192.0.2.1", "192.0.2.2"),
                        cnames=("x.example",)))
HTTP_OK = L7(http=HttpInfo("GET", "/items", code=503), latency_ns=250_000_000)


def test_flow_handler_types_and_context() -> None:
    reg = CollectorRegistry()
    h = FlowHandler(reg, {"sourcecontext": "namespace", "destinationcontext": "workload"})
    h.process(flow(), 0)
    h.process(flow(verdict=Verdict.DROPPED), 0)
    h.process(flow(protocol=Protocol.UDP, dst=replace(BE, port=53), l7=DNS_OK), 0)
    h.process(flow(protocol=Protocol.ICMP, verdict=Verdict.ERROR), 0)
    name = "hubble_flows_processed_total"
    ctx = {"source": "shop", "destination": "shop/backend"}
    # one Trace per observation point, named as Hubble names them; L7 is an event of its own
    assert sample(reg, name, protocol="TCP", type="Trace", subtype="from-endpoint",
                  verdict="FORWARDED", **ctx) == 1
    assert sample(reg, name, protocol="TCP", type="Drop", subtype="", verdict="DROPPED",
                  **ctx) == 1
    assert sample(reg, name, protocol="DNS", type="L7", subtype="DNS", verdict="FORWARDED",
                  **ctx) == 1
    assert sample(reg, name, protocol="UDP", type="Trace", subtype="from-endpoint",
                  verdict="FORWARDED", **ctx) == 1
    assert sample(reg, name, protocol="ICMPv4", type="Trace", subtype="from-endpoint",
                  verdict="ERROR", **ctx) == 1
    both = (ObservationPoint("node1", "conntrack"), ObservationPoint("node2", "conntrack"))
    h.process(flow(observations=both, flow_id="f2"), 0)
    host = replace(BE, kind=EndpointKind.NODE, workload=None, namespace=None)
    h.process(flow(dst=host, observations=both[1:]), 0)
    assert sample(reg, name, protocol="TCP", type="Trace", subtype="from-endpoint",
                  verdict="FORWARDED", **ctx) == 2
    assert sample(reg, name, protocol="TCP", type="Trace", subtype="to-endpoint",
                  verdict="FORWARDED", **ctx) == 1
    assert sample(reg, name, protocol="TCP", type="Trace", subtype="to-stack",
                  verdict="FORWARDED", source="shop", destination="") == 1


def test_drop_handler() -> None:
    reg = CollectorRegistry()
    h = DropHandler(reg, {"labelscontext": "destination_namespace"})
    h.process(flow(), 0)
    h.process(flow(verdict=Verdict.ERROR, drop_reason_desc="CONNECTION_REFUSED"), 0)
    for _ in range(2):
        h.process(flow(verdict=Verdict.DROPPED, drop_reason_desc="POLICY_DENIED"), 0)
    assert sample(reg, "hubble_drop_total", reason="POLICY_DENIED", protocol="TCP",
                  destination_namespace="shop") == 2
    assert len(next(iter(reg.collect())).samples) == 2  # one series (+ its _created)


def test_tcp_handler() -> None:
    reg = CollectorRegistry()
    h = TcpHandler(reg, {})
    h.process(flow(tcp=TcpInfo("TIME_WAIT", ("SYN", "SYN-ACK", "ACK", "FIN"))), 0)
    h.process(flow(tcp=TcpInfo("CLOSE", ("SYN", "RST"))), 0)
    h.process(flow(tcp=TcpInfo("SYN_SENT", ("SYN",)), verdict=Verdict.DROPPED), 0)
    h.process(flow(tcp=TcpInfo("ESTABLISHED")), 0)  # conntrack: no flags, nothing inferred
    v6 = flow(src=replace(FE, ip="fd00::5"), tcp=TcpInfo(None, ("SYN",)))
    h.process(v6, 0)
    got = {(s.labels["flag"], s.labels["family"]): s.value
           for m in reg.collect() for s in m.samples if s.name.endswith("_total")}
    assert got == {("SYN", "IPv4"): 2, ("SYN-ACK", "IPv4"): 1, ("FIN", "IPv4"): 1,
                   ("RST", "IPv4"): 1, ("SYN", "IPv6"): 1}


def test_port_distribution_handler() -> None:
    reg = CollectorRegistry()
    h = PortDistributionHandler(reg, {})
    h.process(flow(), 0)
    h.process(flow(), 0)
    h.process(flow(protocol=Protocol.UDP, dst=replace(BE, port=53)), 0)
    h.process(flow(protocol=Protocol.ICMP, dst=replace(BE, port=None)), 0)
    h.process(flow(verdict=Verdict.DROPPED), 0)
    name = "hubble_port_distribution_total"
    assert sample(reg, name, protocol="TCP", port="9000") == 2
    assert sample(reg, name, protocol="UDP", port="53") == 1
    assert sample(reg, name, protocol="ICMPv4", port="0") == 1


def test_dns_handler() -> None:
    reg = CollectorRegistry()
    h = DnsHandler(reg, {"query": "true", "ignoreaaaa": "true"})
    h.process(flow(protocol=Protocol.UDP, l7=DNS_OK), 0)
    nx = L7(dns=DnsInfo("nope.example", ("A",), 3))
    h.process(flow(protocol=Protocol.UDP, l7=nx), 0)
    h.process(flow(protocol=Protocol.UDP, l7=L7(dns=DnsInfo("pending.example", ("A",)))), 0)
    h.process(flow(protocol=Protocol.UDP, l7=nx, verdict=Verdict.DROPPED), 0)
    h.process(flow(protocol=Protocol.UDP, l7=L7(dns=DnsInfo("v6.example", ("AAAA",), 0))), 0)
    h.process(flow(), 0)  # no L7: ignored
    q = "hubble_dns_queries_total"
    assert sample(reg, q, rcode="", qtypes="A", ips_returned="0", query="db.example") == 1
    assert sample(reg, q, rcode="", qtypes="A", ips_returned="0",
                  query="pending.example") == 1
    assert sample(reg, q, rcode="Policy denied", qtypes="A", ips_returned="0",
                  query="nope.example") == 1
    r = "hubble_dns_responses_total"
    assert sample(reg, r, rcode="No Error", qtypes="A", ips_returned="2",
                  query="db.example") == 1
    assert sample(reg, r, rcode="Non-Existent Domain", qtypes="A", ips_returned="0",
                  query="nope.example") == 1
    t = "hubble_dns_response_types_total"
    assert sample(reg, t, type="A", qtypes="A", query="db.example") == 2
    assert sample(reg, t, type="CNAME", qtypes="A", query="db.example") == 1
    assert sample(reg, q, rcode="", qtypes="AAAA", ips_returned="0", query="v6.example") is None
    # a search-list walk on one socket: every message counts, as Hubble's DNS events do
    walk = DnsInfo("db.example", ("A",), 0, ("192.0.2.1",), queries=4, rcodes=(3, 3, 3, 0))
    h.process(flow(protocol=Protocol.UDP, l7=L7(dns=walk), flow_id="walk"), 0)
    assert sample(reg, q, rcode="", qtypes="A", ips_returned="0", query="db.example") == 5
    assert sample(reg, r, rcode="Non-Existent Domain", qtypes="A", ips_returned="0",
                  query="db.example") == 3
    assert sample(reg, r, rcode="No Error", qtypes="A", ips_returned="1",
                  query="db.example") == 1


def test_http_handlers() -> None:
    reg = CollectorRegistry()
    h = HttpHandler(reg, {"destinationcontext": "workload-name"})
    h.process(flow(l7=HTTP_OK), 0)
    h.process(flow(l7=L7(http=HttpInfo("POST", "/x"))), 0)  # no response seen
    h.process(flow(l7=HTTP_OK, observations=(ObservationPoint("node2", "packets"),)), 0)
    lab = {"destination": "backend", "protocol": "HTTP/1.1"}
    assert sample(reg, "hubble_http_requests_total", method="GET", reporter="client",
                  **lab) == 1
    assert sample(reg, "hubble_http_requests_total", method="GET", reporter="server",
                  **lab) == 1
    assert sample(reg, "hubble_http_requests_total", method="POST", reporter="client",
                  **lab) == 1
    assert sample(reg, "hubble_http_responses_total", method="GET", status="503",
                  reporter="server", **lab) == 1
    assert sample(reg, "hubble_http_request_duration_seconds_sum", method="GET",
                  reporter="client", destination="backend") == pytest.approx(0.25)
    assert sample(reg, "hubble_http_request_duration_seconds_bucket", method="GET",
                  reporter="client", destination="backend", le="0.1") == 0
    reg2 = CollectorRegistry()
    v2 = HttpV2Handler(reg2, {})
    v2.process(flow(l7=HTTP_OK), 0)
    v2.process(flow(l7=L7(http=HttpInfo("POST", "/x"))), 0)
    assert sample(reg2, "hubble_http_requests_total", method="GET", protocol="HTTP/1.1",
                  status="503", reporter="client") == 1
    assert sample(reg2, "hubble_http_requests_total", method="POST", protocol="HTTP/1.1",
                  status="", reporter="client") is None


# -- expiry ------------------------------------------------------------------------------
def test_series_of_deleted_pods_expire() -> None:
    ms = MetricSet("flow:sourceContext=pod drop:sourceContext=pod", ttl=300)
    old = replace(FE, pod_name="frontend-old")
    ms.process([flow(src=old), flow(src=old, verdict=Verdict.DROPPED)], now=0)
    ms.process([flow()], now=200)
    name = "hubble_flows_processed_total"
    labels = {"protocol": "TCP", "type": "Trace", "subtype": "from-endpoint",
              "verdict": "FORWARDED"}
    assert ms.expire(now=250) == 0
    assert ms.expire(now=301) == 3  # the old pod's two flow series and its drop series
    assert sample(ms.registry, name, source="shop/frontend-old", **labels) is None
    assert sample(ms.registry, name, source="shop/frontend-7d9f8c-abcde", **labels) == 1
    ms.process([flow()], now=450)  # refreshed: survives
    assert ms.expire(now=600) == 0
    ms.process([flow(src=old)], now=700)  # back again: starts from zero
    assert sample(ms.registry, name, source="shop/frontend-old", **labels) == 1
    keep = MetricSet("flow:sourceContext=pod", ttl=0)
    keep.process([flow()], now=0)
    assert keep.expire(now=1e9) == 0


# -- health ------------------------------------------------------------------------------
STATUS = {"sources": ["conntrack", "packets"], "queue_lost": {"conntrack": 7},
          "store_lost": 3, "store_rejected": 1,
          "source_stats": {"conntrack": {"overruns": 2, "events": 10},
                           "packets": {"kernel_drops": 5, "lost_truncated": 4},
                           "sockets": {"error": "no permission"}}}


def test_lost_events_and_sources_up() -> None:
    assert lost_events(STATUS) == [
        ("conntrack", "netlink_overrun", 2), ("conntrack", "queue_full", 7),
        ("packets", "packet_drop", 5), ("packets", "queue_full", 0),
        ("packets", "truncated", 4), ("store", "store_buffer_full", 3),
        ("store", "store_rejected", 1)]
    assert sources_up(STATUS, True) == [("conntrack", 1), ("packets", 1), ("sockets", 0)]
    assert sources_up(STATUS, False) == [("conntrack", 0), ("packets", 0), ("sockets", 0)]


def test_health_handler_from_statuses() -> None:
    reg = CollectorRegistry()
    h = PodflowHealthHandler(reg, {"staleafter": "30"}, ttl=300)
    reports = [{"node": "node1", "time": 1000.0, "status": STATUS},
               {"node": "node2", "time": 900.0, "status": {"sources": ["conntrack"]}}]
    h.update_statuses(reports, now=1010.0)
    assert sample(reg, "podflow_lost_events_total", node="node1", source="conntrack",
                  reason="netlink_overrun") == 2
    assert sample(reg, "podflow_source_up", node="node1", source="conntrack") == 1
    assert sample(reg, "podflow_source_up", node="node2", source="conntrack") == 0  # stale
    assert sample(reg, "podflow_agent_last_report_timestamp_seconds", node="node2") == 900
    h.update_statuses(reports, now=1250.0)  # node2's last report is now older than the TTL
    assert sample(reg, "podflow_agent_last_report_timestamp_seconds", node="node2") is None
    assert sample(reg, "podflow_agent_last_report_timestamp_seconds", node="node1") == 1000


def test_health_handler_exposes_the_api_watches() -> None:
    reg = CollectorRegistry()
    h = PodflowHealthHandler(reg, {}, ttl=300)
    inventory = {"Pod": {"synced": True, "resource_version_age": 1.5, "relists": 2,
                         "errors": 0},
                 "Node": {"synced": False, "resource_version_age": None, "relists": 0,
                          "errors": 7, "last_error": "APIError: 401 Unauthorized"},
                 "junk": "not a mapping"}
    assert watches({"inventory": inventory}) == [
        ("Node", {"synced": 0.0, "relists": 0.0, "errors": 7.0}),
        ("Pod", {"synced": 1.0, "age": 1.5, "relists": 2.0, "errors": 0.0})]
    h.update_statuses([{"node": "node1", "time": 1000.0,
                        "status": {"sources": [], "inventory": inventory}}], now=1001.0)
    assert sample(reg, "podflow_inventory_synced", node="node1", resource="Pod") == 1
    assert sample(reg, "podflow_inventory_synced", node="node1", resource="Node") == 0
    assert sample(reg, "podflow_inventory_resource_version_age_seconds", node="node1",
                  resource="Pod") == 1.5
    assert sample(reg, "podflow_inventory_relists_total", node="node1", resource="Pod") == 2
    assert sample(reg, "podflow_inventory_errors_total", node="node1", resource="Node") == 7


# -- follower: each connection counted once ---------------------------------------------
def test_ledger_counts_each_connection_once() -> None:
    led = Ledger(count_active_after=10.0)
    active = flow(state=FlowState.ACTIVE, end_time=None)
    assert led.offer(active, now=1002.0) is None
    assert led.due(now=1005.0) == []
    ended = flow(state=FlowState.ENDED)
    first = led.offer(ended, now=1006.0)          # first seen final
    assert first is not None and first[0] is ended and first[1] == {}
    first[1]["what"] = ((), 1.0)                  # what the handlers counted
    again = led.offer(ended, now=1007.0)          # re-read of the same rows: its account
    assert again is not None and again[1] is first[1]
    other_node = replace(ended, observations=(ObservationPoint("node2", "conntrack"),),
                         time=1000.2)
    assert led.offer(other_node, now=1008.0) == (other_node, first[1])
    assert led.due(now=2000.0) == [] and led.counted == 1
    reused = flow(time=1030.0, end_time=1031.0)  # same flow_id, 30 s later: a new one
    assert led.offer(reused, now=1031.0) == (reused, {})
    client_view = flow(flow_id="", client_key="f1", time=1030.5)  # joined by client_key
    joined = led.offer(client_view, now=1032.0)
    assert joined is not None and joined[1] == {} and led.counted == 2
    keyless = flow(flow_id="")
    assert led.offer(keyless, now=1032.0) == (keyless, {}) and led.counted == 3


def test_ledger_long_lived_and_prune() -> None:
    led = Ledger(count_active_after=10.0, remember=60.0)
    active = flow(state=FlowState.ACTIVE, end_time=None, flow_id="long")
    assert led.offer(active, now=1001.0) is None
    newer = replace(active, traffic=replace(active.traffic))
    assert led.offer(newer, now=1005.0) is None
    assert led.due(now=1011.0) == [(newer, {})]  # open 11 s, no new row needed
    ended = replace(active, state=FlowState.ENDED)
    assert led.offer(ended, now=1020.0) == (ended, {}) and led.counted == 1
    assert len(led) == 1
    assert led.prune(now=1100.0) == 1
    assert len(led) == 0


def test_ledger_counts_at_once_when_pending_is_full() -> None:
    led = Ledger(max_pending=1)
    a = flow(state=FlowState.ACTIVE, flow_id="a")
    b = flow(state=FlowState.ACTIVE, flow_id="b")
    assert led.offer(a, now=1000.0) is None
    assert led.offer(b, now=1000.0) == (b, {})


def write(path: Path, flows: list[Flow]) -> None:
    with DuckDBStore(path) as store:
        store.write(flows)


def test_follower_reads_updates_without_double_counting(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    ms = MetricSet("flow:destinationContext=workload-name")
    fol = Follower(path, ms, interval=0.1, backfill=0.0)
    assert fol.poll(now=1000.0) == 0  # store missing: counted as such, not fatal
    assert ms.registry.get_sample_value("podflow_metrics_store_errors_total",
                                        {"reason": "missing"}) == 1
    now = time.time()
    open_ = flow(time=now - 1, end_time=None, state=FlowState.ACTIVE, flow_id="c1")
    write(path, [open_, flow(time=now - 1, flow_id="c2")])
    assert fol.poll(now=now) == 1  # c2 ended; c1 still open (the store appeared later)
    write(path, [replace(open_, state=FlowState.ENDED, end_time=now)])
    write(path, [replace(open_, state=FlowState.ENDED, end_time=now,
                         observations=(ObservationPoint("node2", "conntrack"),))])
    assert fol.poll(now=now + 1) == 1  # c1 ended: counted once for two new rows
    write(path, [replace(open_, flow_id="c2", state=FlowState.ENDED)])  # c2 updated again
    assert fol.poll(now=now + 2) == 0
    assert fol.poll(now=now + 3) == 0
    def total(point: str) -> float | None:
        return ms.registry.get_sample_value(
            "hubble_flows_processed_total", {"protocol": "TCP", "type": "Trace",
                                             "subtype": point, "verdict": "FORWARDED",
                                             "destination": "backend"})

    assert total("from-endpoint") == 2 and total("to-endpoint") == 1   # c1 seen at node2
    with DuckDBStore(path) as store:
        store.write_status("node1", STATUS, at=now)
    fol.poll(now=now + 4)
    assert ms.registry.get_sample_value("podflow_lost_events_total", {
        "node": "node1", "source": "conntrack", "reason": "queue_full"}) == 7


def test_follower_starts_at_end_or_backfills(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    write(path, [flow(flow_id="old")])
    at_end = Follower(path, MetricSet("flow"), backfill=0.0)
    assert at_end.poll() == 0
    everything = Follower(path, MetricSet("flow"), backfill=float("inf"))
    assert everything.poll() == 1
    write(path, [flow(flow_id="new")])
    assert at_end.poll() == 1
    assert everything.poll() == 1


def test_follower_survives_a_locked_store(tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "flows.duckdb"
    write(path, [flow()])
    fol = Follower(path, MetricSet("flow"), interval=0.1, backfill=float("inf"))
    holder = duckdb.connect(str(path))  # a writer holding the file (same process: refused)
    try:
        assert fol.poll() == 0
    finally:
        holder.close()
    assert fol.metrics.registry.get_sample_value("podflow_metrics_store_errors_total",
                                                 {"reason": "busy"}) == 1
    assert fol.poll() == 1


# -- ASGI ---------------------------------------------------------------------------------
def test_asgi_lazy_start_serves_exposition(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    write(path, [flow(verdict=Verdict.DROPPED, drop_reason_desc="POLICY_DENIED")])
    app = metrics_app(path, "drop:sourceContext=namespace", interval=0.2,
                      backfill=float("inf"))

    async def scrape() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/metrics")
            assert r.status_code == 200
            return r.text

    try:
        text = asyncio.run(scrape())
    finally:
        app.stop()
    assert ('hubble_drop_total{protocol="TCP",reason="POLICY_DENIED",source="shop"} 1.0'
            in text)
    assert not app.follower.running


def test_asgi_lifespan_starts_and_stops_the_follower(tmp_path: Path) -> None:
    app = metrics_app(tmp_path / "none.duckdb", None, interval=0.05)
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        if len(inbox) == 1:
            assert app.follower.running
        return inbox.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                         "lifespan.shutdown.complete"]
    assert not app.follower.running


# -- a connection counted as its views arrive --------------------------------------------
def _views() -> list[list[Flow]]:
    """Two connections as their vantage points report them: an HTTP request across nodes
    (conntrack and packets on the client's node and on the server's) and a DNS exchange
    (conntrack, then packets with the L7 record)."""
    seen = lambda node, src: (ObservationPoint(node, src),)  # noqa: E731
    http = L7(http=HttpInfo("GET", "/items", code=200), latency_ns=3_000_000)
    flags = TcpInfo("TIME_WAIT", ("SYN", "SYN-ACK", "ACK", "FIN"))
    web = [flow(flow_id="w", client_key="wc", observations=seen("node1", "conntrack")),
           flow(flow_id="w", client_key="wc", observations=seen("node1", "packets"),
                l7=http, tcp=flags),
           flow(flow_id="w", observations=seen("node2", "conntrack"), time=1000.1),
           flow(flow_id="w", observations=seen("node2", "packets"), l7=http, tcp=flags,
                time=1000.1)]
    dns_server = replace(BE, port=53, pod_name="coredns-1", namespace="kube-system",
                         workload=Workload("Deployment", "coredns"))
    answer = L7(dns=DnsInfo("db.example", ("A",), 3))
    dns = [flow(dst=dns_server, protocol=Protocol.UDP, flow_id="d",
                observations=seen("node1", "conntrack")),
           flow(dst=dns_server, protocol=Protocol.UDP, flow_id="d", l7=answer,
                observations=seen("node1", "packets"))]
    return [web, dns]


def _samples(ms: MetricSet) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for m in ms.registry.collect() for s in m.samples
            if not s.name.endswith("_created") and not s.name.startswith("podflow_")}


def test_counters_grow_by_what_each_view_adds_in_every_arrival_order() -> None:
    """Whatever order the views of a connection reach the store in, the counters end where
    counting the whole connection once puts them: a later view adds the L7 record, the
    flags or its observation point, never a second count of the connection."""
    from itertools import permutations

    from podflow.store.correlate import merge

    options = ("flow:sourceContext=namespace;destinationContext=workload-name tcp drop "
               "port-distribution dns:labelsContext=source_pod,destination_pod http")
    whole = MetricSet(options)
    whole.process([merge(views) for views in _views()], now=2000.0)
    want = _samples(whole)
    assert want[("hubble_http_requests_total", (("method", "GET"), ("protocol", "HTTP/1.1"),
                                                ("reporter", "server")))] == 1
    # a DNS response is the server's message: Hubble's source is the DNS server
    assert want[("hubble_dns_responses_total", (
        ("destination_pod", FE.pod_name), ("ips_returned", "0"), ("qtypes", "A"),
        ("rcode", "Non-Existent Domain"), ("source_pod", "coredns-1")))] == 1
    assert want[("hubble_dns_queries_total", (
        ("destination_pod", "coredns-1"), ("ips_returned", "0"), ("qtypes", "A"),
        ("rcode", ""), ("source_pod", FE.pod_name)))] == 1
    for web in permutations(_views()[0]):
        for dns in permutations(_views()[1]):
            ms, led = MetricSet(options), Ledger()
            for views in (web, dns):
                for i in range(len(views)):
                    got = led.offer(merge(views[:i + 1]), now=2000.0 + i)
                    assert got is not None
                    ms.process([got], now=2000.0 + i)
            assert _samples(ms) == want, (web, dns)
            assert led.counted == 2


def test_icmp_handler_echo_and_errors() -> None:
    from podflow.metrics.icmp import IcmpHandler
    from podflow.model.flow import Counters, Traffic

    reg = CollectorRegistry()
    h = IcmpHandler(reg, {"sourcecontext": "namespace"})
    ping = flow(protocol=Protocol.ICMP, dst=replace(BE, port=None),
                traffic=Traffic(Counters(3, 252), Counters(2, 168)), flow_id="p")
    account: dict[Any, Any] = {}
    h.process(ping, 0, account)
    h.process(replace(ping, traffic=Traffic(Counters(5, 420), Counters(5, 420))), 1, account)
    refused = flow(protocol=Protocol.UDP, verdict=Verdict.ERROR,
                   drop_reason_desc="refused: ICMP port unreachable (ICMP 3/3) from 10.0.0.9")
    h.process(refused, 0)
    v6 = flow(protocol=Protocol.ICMPV6, src=replace(FE, ip="fd00::5"), flow_id="p6")
    h.process(v6, 0)
    h.process(flow(), 0)   # TCP that no ICMP error failed: nothing
    got = {(s.labels["family"], s.labels["type"]): s.value for m in reg.collect()
           for s in m.samples if s.name == "hubble_icmp_total"}
    assert got == {("IPv4", "EchoRequest"): 5, ("IPv4", "EchoReply"): 5,
                   ("IPv4", "DestinationUnreachable(Port)"): 1, ("IPv6", "EchoRequest"): 1}


def test_exemplars_carry_the_flow_id() -> None:
    from prometheus_client.openmetrics.exposition import generate_latest

    ms = MetricSet("httpV2:exemplars=true")
    ms.process([flow(l7=HTTP_OK, flow_id="abc123")], now=0)
    text = generate_latest(ms.registry).decode()
    assert '# {traceID="abc123"} 1.0' in text
    plain = MetricSet("httpV2")
    plain.process([flow(l7=HTTP_OK, flow_id="abc123")], now=0)
    assert "traceID" not in generate_latest(plain.registry).decode()
