"""A real Prometheus (Debian's) scrapes podflow's /metrics on loopback; PromQL sees the flows.

Writes hand-built flows (a NodePort visitor, service traffic, a dropped connection, DNS and
HTTP with L7 records) and an agent health report into a temp store, serves
:func:`podflow.metrics.asgi.metrics_app` with uvicorn on 127.0.0.1, starts ``prometheus``
scraping it every second, waits for a scrape and asserts PromQL answers. Needs no root
(the integration conftest skips it when not root, like the rest of tests/integration).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

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
from podflow.store.duckdb import DuckDBStore
from tests.integration.promserver import MISSING, PROMETHEUS, query, run_prometheus, serve_metrics

OPTIONS = ("flow:sourceContext=namespace;destinationContext=workload;"
           "labelsContext=source_namespace,destination_workload "
           "drop:sourceContext=pod port-distribution tcp dns:query http podflow")


def _pod(ns: str, wl: str, i: int, node: str) -> Endpoint:
    return Endpoint(f"10.244.{i}.{10 + i}", None, EndpointKind.POD, ns, f"{wl}-6f7c9-{i:05d}",
                    Workload("Deployment", wl), (("app", wl),), node)


FE, BE, DNS = _pod("shop", "frontend", 1, "node1"), _pod("shop", "backend", 2, "node2"), \
    _pod("kube-system", "coredns", 3, "node1")
VISITOR = Endpoint("192.168.100.20", 50000, EndpointKind.EXTERNAL, name="visitor")
CT1, CT2 = ObservationPoint("node1", "conntrack"), ObservationPoint("node2", "conntrack")
PK1 = ObservationPoint("node1", "packets")


def flows(now: float) -> list[Flow]:
    """Realistic connections of the shop lab, all ended."""
    out = []
    be_svc = Service("shop", "backend", "http", "ClusterIP", "10.96.0.3", 9000)
    for i in range(3):  # frontend -> backend through the ClusterIP, seen on both nodes
        out.append(Flow(now - 30 + i, replace(FE, port=41000 + i), replace(BE, port=9000),
                        Protocol.TCP, end_time=now - 29 + i, destination_service=be_svc,
                        nat=Nat(Address("10.96.0.3", 9000)), observations=(CT1, CT2),
                        tcp=TcpInfo("TIME_WAIT", ("SYN", "SYN-ACK", "FIN")),
                        flow_id=f"fe-be-{i}"))
    out.append(Flow(now - 20, VISITOR, replace(FE, port=8080), Protocol.TCP,
                    end_time=now - 19, observations=(CT1,), flow_id="visitor",
                    destination_service=Service("shop", "frontend", None, "NodePort"),
                    nat=Nat(Address("172.18.0.1", 30080), Address("10.244.0.0", 61000))))
    out.append(Flow(now - 15, replace(FE, port=42000),
                    Endpoint("192.168.100.10", 5432, EndpointKind.EXTERNAL, name="db"),
                    Protocol.TCP, end_time=now - 14, verdict=Verdict.DROPPED,
                    drop_reason_desc="POLICY_DENIED", observations=(PK1,), flow_id="drop"))
    out.append(Flow(now - 10, replace(FE, port=53000), replace(DNS, port=53), Protocol.UDP,
                    end_time=now - 10, observations=(PK1,), flow_id="dns",
                    l7=L7(dns=DnsInfo("db.example.com", ("A",), 0, ("192.168.100.10",)))))
    out.append(Flow(now - 5, replace(FE, port=43000), replace(BE, port=9000), Protocol.TCP,
                    end_time=now - 4,
                    observations=(PK1,), flow_id="http", destination_service=be_svc,
                    l7=L7(http=HttpInfo("GET", "/items", code=200), latency_ns=3_000_000)))
    return out


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[int]:
    """podflow's metrics app on 127.0.0.1:<port>, serving a store with the flows above."""
    now = time.time()
    store_path = tmp_path / "flows.duckdb"
    with DuckDBStore(store_path) as store:
        store.write(flows(now))
        store.write_status("node1", {"sources": ["conntrack", "packets"],
                                     "queue_lost": {"conntrack": 4}, "store_lost": 0,
                                     "source_stats": {"conntrack": {"overruns": 1},
                                                      "packets": {"kernel_drops": 2}}}, at=now)
    with serve_metrics(store_path, OPTIONS) as port:
        yield port


@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason=MISSING)
def test_prometheus_scrapes_podflow(exporter: int, tmp_path: Path) -> None:
    with run_prometheus(tmp_path, exporter, ready="hubble_flows_processed_total") as prom_port:
        def vec(promql: str, by: str) -> dict[str, float]:
            return {r["metric"].get(by, ""): float(r["value"][1])
                    for r in query(prom_port, promql)}

        # a Trace per observation point (both nodes saw frontend -> backend; coredns and its
        # client share node1), an L7 event per L7 record
        assert vec("sum by (destination_workload) (hubble_flows_processed_total)",
                   "destination_workload") == {"backend": 8.0, "frontend": 1.0, "": 1.0,
                                               "coredns": 3.0}
        assert vec('sum by (destination) (hubble_flows_processed_total{source="shop"})',
                   "destination") == {"shop/backend": 8.0, "kube-system/coredns": 3.0,
                                      "": 1.0}
        assert vec("sum by (verdict) (hubble_flows_processed_total)", "verdict") == {
            "FORWARDED": 12.0, "DROPPED": 1.0}
        drops = query(prom_port, "hubble_drop_total")
        assert [(d["metric"]["reason"], d["metric"]["protocol"], d["metric"]["source"],
                 d["value"][1]) for d in drops] == [
            ("POLICY_DENIED", "TCP", "shop/frontend-6f7c9-00001", "1")]
        assert vec('hubble_port_distribution_total{protocol="TCP"}', "port") == {
            "9000": 4.0, "8080": 1.0}
        assert vec("hubble_tcp_flags_total", "flag") == {"SYN": 3.0, "SYN-ACK": 3.0,
                                                         "FIN": 3.0}
        assert vec("hubble_dns_responses_total", "rcode") == {"No Error": 1.0}
        assert vec("hubble_http_responses_total", "status") == {"200": 1.0}
        assert vec("hubble_http_request_duration_seconds_count", "method") == {"GET": 1.0}
        lost = {(r["metric"]["source"], r["metric"]["reason"]): float(r["value"][1])
                for r in query(prom_port, 'podflow_lost_events_total{node="node1"}')}
        assert lost == {("conntrack", "queue_full"): 4.0,
                        ("conntrack", "netlink_overrun"): 1.0,
                        ("packets", "queue_full"): 0.0, ("packets", "packet_drop"): 2.0,
                        ("store", "store_buffer_full"): 0.0}
        assert vec("podflow_source_up", "source") == {"conntrack": 1.0, "packets": 1.0}
