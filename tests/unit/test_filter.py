"""FilterSpec: the SQL rendering and the predicate agree on a corpus, field by field."""

from __future__ import annotations

import itertools
from pathlib import Path

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
from podflow.query.filter import FilterSpec
from podflow.query.timeparse import parse_duration, parse_time
from podflow.store.duckdb import DuckDBStore

FE = Workload("Deployment", "frontend")
BE = Workload("Deployment", "backend")


def pod(ip: str, port: int | None, ns: str, name: str, wl: Workload | None, node: str,
        **labels: str) -> Endpoint:
    """A pod endpoint."""
    return Endpoint(ip, port, EndpointKind.POD, ns, name, wl, tuple(sorted(labels.items())),
                    node)


def corpus() -> list[Flow]:
    """Flows of every shape: services, NAT, egress, nodes, unknowns, UDP/ICMP, verdicts."""
    fe = pod("10.244.0.5", 41000, "shop", "frontend-abc", FE, "node1", app="frontend")
    be = pod("10.244.1.7", 9000, "shop", "backend-xyz", BE, "node2", app="backend", tier="api")
    cache = pod("10.244.2.3", 6379, "data", "cache-0", Workload("StatefulSet", "cache"), "node3",
                app="cache")
    bare = pod("10.244.2.9", 8080, "data", "debug", None, "node3")
    db = Endpoint("192.168.100.10", 5432, EndpointKind.EXTERNAL, name="db")
    visitor = Endpoint("192.168.100.20", 50123, EndpointKind.EXTERNAL, name="visitor")
    node1 = Endpoint("10.244.0.0", 61000, EndpointKind.NODE, name="node1", node_name="node1")
    unknown = Endpoint("203.0.113.9", 53, EndpointKind.UNKNOWN)
    v6 = Endpoint("fd00::1", 443, EndpointKind.EXTERNAL, name="v6host")
    obs = {n: ObservationPoint(n, "conntrack", f"orig-{n}", f"reply-{n}")
           for n in ("node1", "node2", "node3")}
    svc_be = Service("shop", "backend", "api", "ClusterIP", "10.96.0.20", 9000)
    return [
        Flow(100.0, fe, be, Protocol.TCP, 101.0, destination_service=svc_be,
             nat=Nat(Address("10.96.0.20", 9000)), traffic=Traffic(Counters(5, 500),
                                                                    Counters(4, 900)),
             tcp=TcpInfo("TIME_WAIT", ("SYN", "FIN")), rtt_us=120.0,
             observations=(obs["node1"],), cni_profile="flannel-vxlan", flow_id="f1"),
        Flow(105.0, be, cache, Protocol.TCP, None, FlowState.ACTIVE,
             Service("data", "cache", "redis", "ClusterIP", "10.96.0.30", 6379),
             Nat(Address("10.96.0.30", 6379)), observations=(obs["node2"], obs["node3"]),
             flow_id="f2"),
        Flow(110.0, be, db, Protocol.TCP, 111.5,
             nat=Nat(translated_source=Address("172.18.0.2", 61234)),
             traffic=Traffic(Counters(3, 300), Counters(2, 200)),
             observations=(obs["node2"],), flow_id="f3"),
        Flow(120.0, visitor, fe, Protocol.TCP, 121.0,
             destination_service=Service("shop", "frontend", "http", "NodePort", "172.18.0.1",
                                         30080),
             nat=Nat(Address("172.18.0.1", 30080), Address("10.244.0.0", 61000)),
             observations=(obs["node1"],), flow_id="f4"),
        Flow(120.2, node1, fe, Protocol.TCP, 121.0, observations=(obs["node3"],),
             flow_id="f4"),
        Flow(130.0, bare, unknown, Protocol.UDP, 130.1, verdict=Verdict.DROPPED,
             drop_reason_desc="policy", observations=(obs["node3"],), flow_id="f5"),
        Flow(140.0, Endpoint("10.244.0.5", None, EndpointKind.POD, "shop", "frontend-abc", FE),
             Endpoint("10.244.2.3", None, EndpointKind.POD, "data", "cache-0"),
             Protocol.ICMP, 140.0, verdict=Verdict.ERROR, flow_id=""),
        Flow(150.0, fe, v6, Protocol.TCP, None, FlowState.ACTIVE,
             observations=(obs["node1"],), flow_id="f6"),
        Flow(160.0, fe, be, Protocol.UDP, 200.0, observations=(obs["node1"],), flow_id="f7"),
    ]


SPECS = [
    FilterSpec(),
    FilterSpec(namespace=("data",)), FilterSpec(namespace=("shop", "data")),
    FilterSpec(from_namespace=("shop",)), FilterSpec(to_namespace=("data",)),
    FilterSpec(pod=("frontend",)), FilterSpec(pod=("data/c",)), FilterSpec(pod=("shop/c",)),
    FilterSpec(from_pod=("backend", "debug")), FilterSpec(to_pod=("shop/",)),
    FilterSpec(label=("app=cache",)), FilterSpec(label=("tier",)),
    FilterSpec(label=("app=backend,tier=api", "app=frontend")),
    FilterSpec(from_label=("app=backend",)), FilterSpec(to_label=("app",)),
    FilterSpec(service=("backend",)), FilterSpec(service=("data/cache", "shop/frontend")),
    FilterSpec(to_service=("shop/cache",)),
    FilterSpec(workload=("cache",)), FilterSpec(from_workload=("shop/backend",)),
    FilterSpec(to_workload=("data/frontend", "frontend")),
    FilterSpec(ip=("10.244.0.0/16",)), FilterSpec(ip=("192.168.100.10",)),
    FilterSpec(from_ip=("192.168.0.0/16",)), FilterSpec(to_ip=("fd00::/8", "203.0.113.0/24")),
    FilterSpec(ip=("172.18.0.0/24",)),
    FilterSpec(port=(9000,)), FilterSpec(from_port=(50123, 61000)), FilterSpec(to_port=(5432,)),
    FilterSpec(protocol=("udp",)), FilterSpec(protocol=("TCP", "icmp")),
    FilterSpec(node=("node3",)), FilterSpec(node=("node1", "node2")),
    FilterSpec(verdict=("dropped",)), FilterSpec(verdict=("FORWARDED", "ERROR")),
    FilterSpec(since=121.0), FilterSpec(until=110.0), FilterSpec(since=150.0, until=170.0),
    FilterSpec(namespace=("shop",), protocol=("TCP",), to_port=(9000, 6379)),
    FilterSpec(from_namespace=("shop",), to_ip=("192.168.0.0/16",), node=("node2",)),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> DuckDBStore:
    """A store holding the corpus."""
    path = Path(tmp_path_factory.mktemp("filter")) / "flows.duckdb"
    s = DuckDBStore(path)
    s.write(corpus())
    return s


@pytest.mark.parametrize("spec", SPECS, ids=[str(i) for i in range(len(SPECS))])
@pytest.mark.parametrize("merged", [True, False])
def test_sql_and_predicate_agree(store: DuckDBStore, spec: FilterSpec, merged: bool) -> None:
    everything = store.flows(merged=merged)
    expected = [f for f in everything if spec.matches(f)]
    assert store.flows(spec, merged=merged) == expected


def test_every_field_is_exercised_and_selective(store: DuckDBStore) -> None:
    every = store.flows()
    used = {name for s in SPECS for name in s.__dataclass_fields__
            if getattr(s, name) not in ((), None)}
    assert used == set(FilterSpec.__dataclass_fields__)
    counts = [len(store.flows(spec)) for spec in SPECS[1:]]
    assert sum(c == 0 for c in counts) == 3, "only the 3 deliberate negatives match nothing"
    assert sum(c < len(every) for c in counts) >= len(counts) - 2, "specs are selective"


def test_semantics() -> None:
    flows = corpus()
    def ids(spec: FilterSpec) -> list[str]:
        return [f.flow_id for f in flows if spec.matches(f)]
    assert ids(FilterSpec(to_namespace=("data",))) == ["f2", ""]
    assert ids(FilterSpec(service=("backend",), node=("node1",))) == ["f1"]
    # ip matches endpoints only, not the NAT addresses (the VIP, the masquerade IP)
    assert ids(FilterSpec(ip=("10.96.0.0/16",))) == []
    assert ids(FilterSpec(from_ip=("172.18.0.2",))) == []
    assert ids(FilterSpec(protocol=("udp",), verdict=("dropped",))) == ["f5"]
    assert ids(FilterSpec(pod=("shop/frontend",), to_port=(9000,))) == ["f1", "f7"]


@pytest.mark.parametrize("kwargs", [
    {"ip": ("10.0.0.300",)}, {"protocol": ("tcpx",)}, {"verdict": ("maybe",)},
    {"port": (70000,)}, {"label": ("=x",)}, {"namespace": "shop"},
])
def test_bad_values_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FilterSpec(**kwargs)  # type: ignore[arg-type]


def test_protocol_and_verdict_normalised() -> None:
    spec = FilterSpec(protocol=("tcp", "icmpv6"), verdict=("dropped",))
    assert spec.protocol == ("TCP", "ICMPv6") and spec.verdict == ("DROPPED",)
    assert FilterSpec().is_empty() and not spec.is_empty()
    assert FilterSpec().to_sql() == ("TRUE", [])


def test_timeparse() -> None:
    assert parse_time("5m", now=1000.0) == 700.0
    assert parse_time("30s ago", now=100.0) == 70.0
    assert parse_time("1d", now=86400.0) == 0.0
    assert parse_time("1795000000") == 1795000000.0
    assert parse_time("1795000000.5") == 1795000000.5
    assert parse_time("2026-11-21T10:00:00Z") == parse_time("2026-11-21T11:00:00+01:00")
    assert parse_time("2026-11-21T10:00:00") == parse_time("2026-11-21T10:00:00Z")
    assert parse_duration("1h30m") == 5400.0
    for bad in ("", "yesterday", "5x", "2026-13-01"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_combinations_sql_agrees(store: DuckDBStore) -> None:
    every = store.flows()
    for a, b in itertools.combinations(SPECS[1:12], 2):
        merged = FilterSpec(**{k: getattr(a, k) or getattr(b, k)
                               for k in FilterSpec.__dataclass_fields__})
        assert store.flows(merged) == [f for f in every if merged.matches(f)]
