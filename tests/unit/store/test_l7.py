"""The store keeps L7 records and the client-side key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from podflow.model.flow import L7, DnsInfo, Endpoint, Flow, HttpInfo, ObservationPoint, Protocol
from podflow.store.duckdb import DuckDBStore


def test_l7_round_trip(tmp_path: Path) -> None:
    base = Flow(time=10.0, source=Endpoint("10.244.0.2", 40000),
                destination=Endpoint("10.244.1.3", 53), protocol=Protocol.UDP,
                observations=(ObservationPoint("node1", "packets"),), flow_id="a",
                client_key="a")
    dns = dataclasses.replace(base, l7=L7(dns=DnsInfo("x.svc", ("A",), 3), latency_ns=700))
    http = dataclasses.replace(base, time=50.0, flow_id="b", client_key="b",
                               l7=L7(http=HttpInfo("POST", "/a", "h", 503)))
    plain = dataclasses.replace(base, time=90.0, flow_id="c", client_key="")
    with DuckDBStore(tmp_path / "s.duckdb") as st:
        st.write([dns, http, plain])
    with DuckDBStore(tmp_path / "s.duckdb", read_only=True) as st:
        got = st.flows(merged=False)
    assert got == [dns, http, plain]


def test_agent_status_latest_per_node(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with DuckDBStore(path) as st:
        st.write_status("node1", {"lost": 0}, at=1.0)
        st.write_status("node2", {"lost": 5}, at=2.0)
        st.write_status("node1", {"lost": 3}, at=3.0)
    with DuckDBStore(path, read_only=True) as st:
        assert st.statuses() == [{"node": "node1", "time": 3.0, "status": {"lost": 3}},
                                 {"node": "node2", "time": 2.0, "status": {"lost": 5}}]
        assert st.flows() == []
