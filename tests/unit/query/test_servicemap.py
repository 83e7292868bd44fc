"""Service map: pure edges, the store's SQL aggregation, and the JSON shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podflow.query.filter import FilterSpec
from podflow.query.servicemap import build_edges, map_node
from podflow.store.correlate import merge_all
from podflow.store.duckdb import DuckDBStore
from tests.unit.query.test_filter import SPECS, corpus


def _by_names(edges: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    def name(n: object) -> str:
        assert isinstance(n, dict)
        return str(n["name"] or n["ip"])
    return {(name(e["source"]), name(e["destination"])): e for e in edges
            if e["protocol"] == "TCP" or e["source"]["name"] == "debug"}


def test_edges_pure() -> None:
    edges = [e.to_dict() for e in build_edges(merge_all(corpus()))]
    by = _by_names(edges)
    fb = by[("frontend", "backend")]
    assert fb["service"] == "shop/backend" and fb["port"] == 9000
    # the UDP flow to the backend is a separate edge (protocol is part of the key)
    assert sorted(e["protocol"] for e in edges if e["destination"]["name"] == "backend") == [
        "TCP", "UDP"]
    egress = by[("backend", "db")]
    assert egress["snat"] == ["172.18.0.2"]
    assert egress["destination"] == {"kind": "external", "namespace": None, "workload": None,
                                     "name": "db", "ip": "192.168.100.10"}
    assert egress["bytes"] == 500 and egress["packets"] == 5
    nodeport = by[("visitor", "frontend")]
    assert nodeport["service"] == "shop/frontend" and nodeport["snat"] == []
    assert nodeport["connections"] == 1   # two observations, one connection
    assert nodeport["source"]["kind"] == "external"
    bare = by[("debug", "203.0.113.9")]
    assert bare["source"] == {"kind": "pod", "namespace": "data", "workload": None,
                              "name": "debug", "ip": None}
    assert bare["destination"]["kind"] == "unknown"
    assert bare["verdicts"] == {"DROPPED": 1}
    for e in edges:
        assert set(e) >= {"source", "destination", "service", "port", "protocol",
                          "connections", "bytes", "packets", "snat", "verdicts",
                          "first_seen", "last_seen"}
        assert e["first_seen"] <= e["last_seen"]


def test_sql_edges_equal_pure(tmp_path: Path) -> None:
    s = DuckDBStore(tmp_path / "m.duckdb")
    flows = corpus()
    s.write(flows)
    s.write(flows[:4])   # the same observations again: still the same connections
    for spec in SPECS:
        assert s.map_edges(spec) == build_edges(s.flows(spec)), spec
    assert s.map_edges(FilterSpec(namespace=("nothing",))) == []


def test_map_node_kinds() -> None:
    f = corpus()[4]   # node1's VTEP
    assert map_node(f.source).kind == "node" and map_node(f.source).name == "node1"
    assert map_node(corpus()[0].source).display() == "shop/frontend"
