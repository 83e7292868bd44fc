"""An agent's own /metrics: its views merged per connection, counted at its observation point."""

from __future__ import annotations

import urllib.request

import pytest

from podflow.metrics.node import NodeMetrics
from podflow.model.flow import L7, Flow, HttpInfo, ObservationPoint, TcpInfo
from podflow.server.listen import parse_listen
from tests.unit.metrics.test_metrics import BE, FE, flow


def _views() -> list[Flow]:
    seen = lambda src: (ObservationPoint("node1", src, instance=f"{src}/1"),)  # noqa: E731
    http = L7(http=HttpInfo("GET", "/items", code=200), latency_ns=1_000_000)
    return [flow(flow_id="w", client_key="wc", observations=seen("conntrack")),
            flow(flow_id="w", client_key="wc", observations=seen("conntrack")),  # again
            flow(flow_id="w", client_key="wc", observations=seen("packets"), l7=http,
                 tcp=TcpInfo("TIME_WAIT", ("SYN", "SYN-ACK", "FIN")))]


def test_the_node_counts_its_views_of_a_connection_once_at_its_point() -> None:
    nm = NodeMetrics("node1", "flow tcp http")
    for i, v in enumerate(_views()):
        nm.observe([v], now=2000.0 + i)
    get = nm.registry.get_sample_value
    assert get("hubble_flows_processed_total", {"protocol": "TCP", "type": "Trace",
               "subtype": "from-endpoint", "verdict": "FORWARDED"}) == 1
    assert get("hubble_flows_processed_total", {"protocol": "HTTP", "type": "L7",
               "subtype": "HTTP", "verdict": "FORWARDED"}) == 1
    assert get("hubble_tcp_flags_total", {"flag": "SYN-ACK", "family": "IPv4"}) == 1
    assert get("hubble_http_requests_total", {"method": "GET", "protocol": "HTTP/1.1",
                                              "reporter": "client"}) == 1
    # the server's node counts it at its own point, not here
    assert get("hubble_http_requests_total", {"method": "GET", "protocol": "HTTP/1.1",
                                              "reporter": "server"}) is None
    assert nm.ledger.counted == 1 and (FE.node_name, BE.node_name) == ("node1", "node2")


def test_the_node_serves_its_metrics_and_its_health() -> None:
    nm = NodeMetrics("node1")
    try:
        port = nm.serve("127.0.0.1", 0)
        assert nm.address == f"127.0.0.1:{port}"
        nm.observe(_views(), now=2000.0)
        nm.report({"sources": ["conntrack"], "queue_lost": {"conntrack": 3}}, now=2000.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert 'hubble_flows_processed_total{protocol="TCP"' in text
        assert ('podflow_lost_events_total{node="node1",reason="queue_full",'
                'source="conntrack"} 3.0') in text
    finally:
        nm.close()
    nm.close()   # idempotent


def test_listen_addresses_and_bad_options() -> None:
    assert parse_listen("127.0.0.1:9965") == ("127.0.0.1", 9965)
    for bad in ("9965", "host:port", "h:70000"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)
    with pytest.raises(ValueError, match="unknown metric 'flows'"):
        NodeMetrics("node1", "flows")
