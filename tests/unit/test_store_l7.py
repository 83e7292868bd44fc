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
