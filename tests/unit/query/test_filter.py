"""FilterSpec: the SQL rendering and the predicate agree on a corpus, field by field."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

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
from podflow.query.filter import FilterSpec
from podflow.query.timeparse import parse_duration, parse_time
from podflow.store.duckdb import DuckDBStore
from podflow.store.sql import to_sql

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
    FilterSpec(settled=105.0), FilterSpec(settled=0.0, namespace=("shop",)),
    FilterSpec(namespace=("shop",), protocol=("TCP",), to_port=(9000, 6379)),
    FilterSpec(from_namespace=("shop",), to_ip=("192.168.0.0/16",), node=("node2",)),
]


def l7_flows() -> list[Flow]:
    """DNS and HTTP flows, named externals, a dropped L7 flow, a latency-only L7 record."""
    fe = pod("10.244.0.5", 41100, "shop", "frontend-abc", FE, "node1", app="frontend")
    be = pod("10.244.1.7", 9000, "shop", "backend-xyz", BE, "node2", app="backend")
    be_client = pod("10.244.1.7", 42000, "shop", "backend-xyz", BE, "node2", app="backend")
    dns_pod = pod("10.244.2.5", 53, "kube-system", "coredns-1", Workload("Deployment",
                                                                          "coredns"), "node3")
    kube_dns = Service("kube-system", "kube-dns", "dns", "ClusterIP", "10.96.0.10", 53)
    db = Endpoint("192.168.100.10", 5432, EndpointKind.EXTERNAL, name="db.example.com")
    partner = Endpoint("198.51.100.7", 443, EndpointKind.EXTERNAL,
                       name="API.Partner.example.org.")
    named_src = Endpoint("198.51.100.9", 50000, EndpointKind.EXTERNAL, name="crawler.example.net")
    obs = {n: (ObservationPoint(n, "packets"),) for n in ("node1", "node2", "node3")}
    a = ("A",)
    return [
        Flow(131.0, fe, dns_pod, Protocol.UDP, 131.01, destination_service=kube_dns,
             nat=Nat(Address("10.96.0.10", 53)), observations=obs["node1"], flow_id="d1",
             l7=L7(DnsInfo("db.example.com", a, 0, ("192.168.100.10",), 3600), None, 200000)),
        Flow(132.0, be_client, dns_pod, Protocol.UDP, 132.01, destination_service=kube_dns,
             observations=obs["node2"], flow_id="d2",
             l7=L7(DnsInfo("nothing.shop.svc.cluster.local", a, 3))),
        Flow(133.0, fe, be, Protocol.TCP, 133.2, observations=obs["node1"], flow_id="h1",
             destination_service=Service("shop", "backend", "api", "ClusterIP", "10.96.0.20",
                                         9000),
             l7=L7(http=HttpInfo("GET", "/api/items?id=3", "backend:9000", 200),
                   latency_ns=3_100_000)),
        Flow(134.0, be_client, db, Protocol.TCP, 134.5, observations=obs["node2"],
             nat=Nat(translated_source=Address("172.18.0.3", 61000)), flow_id="h2",
             l7=L7(http=HttpInfo("POST", "/status/503", "db.example.com:5432", 503))),
        Flow(135.0, fe, partner, Protocol.TCP, 135.3, observations=obs["node1"], flow_id="h3",
             l7=L7(http=HttpInfo("get", "/Status/404", None, 404, "HTTP/1.0"))),
        Flow(136.0, fe, partner, Protocol.TCP, 136.1, verdict=Verdict.DROPPED,
             drop_reason_desc="refused", observations=obs["node1"], flow_id="h4",
             l7=L7(http=HttpInfo("DELETE", "/api/items/7"))),
        Flow(137.0, named_src, fe, Protocol.TCP, 137.1, observations=obs["node1"],
             flow_id="h5", l7=L7(latency_ns=5)),
        Flow(138.0, fe, db, Protocol.TCP, 138.1, verdict=Verdict.ERROR,
             drop_reason_desc="timed out", observations=obs["node1"], flow_id="t1"),
    ]


L7_SPECS = [
    FilterSpec(to_fqdn=("db.example.com",)), FilterSpec(to_fqdn=("*.example.com",)),
    FilterSpec(to_fqdn=("*.ORG.",)), FilterSpec(from_fqdn=("*.example.net",)),
    FilterSpec(fqdn=("crawler.*", "api.partner.example.org")),
    FilterSpec(to_fqdn=("kube-dns.kube-system.svc.cluster.local",)),
    FilterSpec(to_fqdn=("*.shop.svc.cluster.local",)), FilterSpec(fqdn=("d_",)),
    FilterSpec(http_status=("200",)), FilterSpec(http_status=("5+",)),
    FilterSpec(http_status=("40+", "2+")), FilterSpec(http_method=("get",)),
    FilterSpec(http_method=("POST", "DELETE")), FilterSpec(http_path=("^/api/",)),
    FilterSpec(http_path=(r"/status/\d+$",)), FilterSpec(http_path=("items", "^/Status")),
    FilterSpec(dns_rcode=("NXDOMAIN",)), FilterSpec(dns_rcode=("0", "servfail")),
    FilterSpec(type=("drop",)), FilterSpec(type=("l7",)), FilterSpec(type=("trace",)),
    FilterSpec(type=("trace", "DROP")), FilterSpec(verdict=("ERROR",)),
    FilterSpec(type=("l7",), verdict=("dropped",)),
    FilterSpec(to_fqdn=("*.example.com",), http_status=("5+",), from_namespace=("shop",)),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> DuckDBStore:
    """A store holding the corpus and the L7 flows."""
    path = Path(tmp_path_factory.mktemp("filter")) / "flows.duckdb"
    s = DuckDBStore(path)
    s.write(corpus() + l7_flows())
    return s


ALL_SPECS = SPECS + L7_SPECS


@pytest.mark.parametrize("spec", ALL_SPECS, ids=[str(i) for i in range(len(ALL_SPECS))])
@pytest.mark.parametrize("merged", [True, False])
def test_sql_and_predicate_agree(store: DuckDBStore, spec: FilterSpec, merged: bool) -> None:
    everything = store.flows(merged=merged)
    expected = [f for f in everything if spec.matches(f)]
    assert store.flows(spec, merged=merged) == expected


def test_every_field_is_exercised_and_selective(store: DuckDBStore) -> None:
    every = store.flows()
    used = {name for s in ALL_SPECS for name in s.__dataclass_fields__
            if getattr(s, name) not in ((), None)}
    assert used == set(FilterSpec.__dataclass_fields__)
    counts = [len(store.flows(spec)) for spec in ALL_SPECS[1:]]
    # 3 deliberate negatives, and fqdn "d_" (an unescaped LIKE "_" would match "db")
    assert sum(c == 0 for c in counts) == 4, "only the 4 deliberate negatives match nothing"
    assert sum(c < len(every) for c in counts) >= len(counts) - 2, "specs are selective"


def test_l7_semantics() -> None:
    flows = l7_flows() + corpus()

    def ids(spec: FilterSpec) -> list[str]:
        return [f.flow_id for f in flows if spec.matches(f)]

    # to_fqdn: destination name, DNS query, service FQDN; from_fqdn: the source name only
    assert ids(FilterSpec(to_fqdn=("db.example.com",))) == ["d1", "h2", "t1"]
    assert ids(FilterSpec(from_fqdn=("db.example.com",))) == []
    assert ids(FilterSpec(to_fqdn=("*.org",))) == ["h3", "h4"]    # case, trailing dot
    assert ids(FilterSpec(fqdn=("crawler.example.net",))) == ["h5"]
    assert ids(FilterSpec(to_fqdn=("*.shop.svc.cluster.local",))) == [
        "d2", "h1", "f1", "f4"]
    assert ids(FilterSpec(fqdn=("db",))) == ["f3"]               # ConfigMap-named external
    assert ids(FilterSpec(fqdn=("d*",))) == ["d1", "h2", "t1", "f3"]
    # http
    assert ids(FilterSpec(http_status=("5+",))) == ["h2"]
    assert ids(FilterSpec(http_status=("4+", "200"))) == ["h1", "h3"]
    assert ids(FilterSpec(http_method=("GET",))) == ["h1", "h3"]
    assert ids(FilterSpec(http_path=("^/api/",))) == ["h1", "h4"]
    assert ids(FilterSpec(http_path=("^/api/items$",))) == ["h1"]  # the query is not matched
    assert ids(FilterSpec(dns_rcode=("nxdomain",))) == ["d2"]
    # verdicts and types
    assert ids(FilterSpec(verdict=("DROPPED",))) == ["h4", "f5"]
    assert ids(FilterSpec(type=("drop",))) == ["h4", "f5"]
    assert ids(FilterSpec(type=("l7",))) == ["d1", "d2", "h1", "h2", "h3", "h4", "h5"]
    trace = ids(FilterSpec(type=("trace",)))
    assert "t1" in trace and "f1" in trace and not {"h4", "f5", "d1"} & set(trace)
    assert ids(FilterSpec(verdict=("error",))) == ["t1", ""]
    assert ids(FilterSpec(verdict=("forwarded",), type=("drop",))) == []


@pytest.mark.parametrize("kwargs", [
    {"to_fqdn": ("db example",)}, {"fqdn": ("a%b",)}, {"http_status": ("5xx",)},
    {"http_status": ("2000",)}, {"http_status": ("+",)}, {"http_path": ("(",)},
    {"http_path": ("(?=x)",)}, {"http_path": (r"(a)\1",)}, {"dns_rcode": ("BOGUS",)},
    {"type": ("policy-verdict",)}, {"type": "drop"},
])
def test_bad_l7_values_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FilterSpec(**kwargs)  # type: ignore[arg-type]


def test_l7_values_normalised() -> None:
    spec = FilterSpec(http_method=("get",), type=("DROP", "L7"), dns_rcode=("nxdomain", "2"),
                      http_status=(" 5+ ",))
    assert spec.http_method == ("GET",) and spec.type == ("drop", "l7")
    assert spec.dns_rcode == ("3", "2") and spec.http_status == ("5+",)


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
    assert to_sql(FilterSpec()) == ("TRUE", [])


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
    for a, b in [*itertools.combinations(SPECS[1:12], 2),
                 *itertools.combinations(L7_SPECS[::3], 2)]:
        merged = FilterSpec(**{k: getattr(a, k) or getattr(b, k)
                               for k in FilterSpec.__dataclass_fields__})
        assert store.flows(merged) == [f for f in every if merged.matches(f)]


# Patterns Python's re compiles but DuckDB's RE2 refuses: each gave a 500 from the API and a
# traceback from the CLI (issue 8) before FilterSpec checked them with RE2.
RE2_REFUSED = ["a++", "x*+", "(?>a)", r"\Z", "(?x) a", "a{1001}", r"\u0041",
               r"\N{LATIN SMALL LETTER A}", "(?(1)a|b)", "(?L)a"]


@pytest.mark.parametrize("pattern", RE2_REFUSED)
def test_http_path_must_be_valid_re2(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"bad HTTP path pattern .*RE2"):
        FilterSpec(http_path=(pattern,))


def test_http_path_read_alike_by_both_engines() -> None:
    # Python sees a nested set where RE2 sees a POSIX class: refused, not silently divergent
    with pytest.raises(ValueError, match="differently"):
        FilterSpec(http_path=("[[:alpha:]]",))
    for good in ("^/api/", r"/v\d+/items", "(?i)/V1", "(?P<id>[0-9]+)$", "a{2,1000}"):
        assert FilterSpec(http_path=(good,)).http_path == (good,)


def test_engine_check_binds_a_filter_without_a_store() -> None:
    from podflow.query.enginecheck import re2_error
    from podflow.store.sql import engine_error

    assert re2_error("^/api/") is None
    assert re2_error("a++") == "bad repetition operator: ++"
    assert engine_error(FilterSpec(namespace=("shop",), http_path=("^/v1",), since=1.0)) is None


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_times_are_rejected(value: float) -> None:
    from podflow.query.params import spec_from_multi

    for name in ("since", "until"):
        with pytest.raises(ValueError, match=f"{name}: bad time"):
            FilterSpec(**{name: value})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=f"{name}: bad time"):
            spec_from_multi({name: [value]})
        with pytest.raises(ValueError, match=f"{name}: bad time"):
            spec_from_multi({name: [str(value)]})


def test_timeparse_refuses_non_finite() -> None:
    for bad in ("nan", "NaN", "inf", "-inf", "+Infinity", "1e999", "nan ago"):
        with pytest.raises(ValueError, match="finite"):
            parse_time(bad)
    huge = "9" * 400 + "s"  # a duration whose float is infinite: once "since -inf"
    with pytest.raises(ValueError, match="too long"):
        parse_duration(huge)
    with pytest.raises(ValueError, match="too long"):
        parse_time(huge)


# --protocol takes L7 names as hubble observe does: dns / http select the flows with a DNS /
# HTTP record (h5 has only an L7 latency: neither); mixed with L4 names, values OR.
L7_PROTOCOL_SPECS = [
    FilterSpec(protocol=("dns",)), FilterSpec(protocol=("HTTP",)),
    FilterSpec(protocol=("dns", "http")), FilterSpec(protocol=("icmp", "dns")),
    FilterSpec(protocol=("http",), to_namespace=("shop",)),
    FilterSpec(protocol=("dns",), type=("drop",)),
]


def test_l7_protocol_semantics() -> None:
    flows = l7_flows() + corpus()

    def ids(spec: FilterSpec) -> list[str]:
        return [f.flow_id for f in flows if spec.matches(f)]

    assert FilterSpec(protocol=("dns", "Http", "tcp")).protocol == ("DNS", "HTTP", "TCP")
    assert ids(FilterSpec(protocol=("dns",))) == ["d1", "d2"]
    assert ids(FilterSpec(protocol=("http",))) == ["h1", "h2", "h3", "h4"]
    assert ids(FilterSpec(protocol=("udp",))) == ["d1", "d2", *ids(FilterSpec(
        protocol=("udp",), type=("trace", "drop")))]
    assert ids(FilterSpec(protocol=("dns", "icmp"))) == ["d1", "d2", *[
        f.flow_id for f in corpus() if f.protocol is Protocol.ICMP]]
    with pytest.raises(ValueError, match=r"unknown protocol 'kafka'.*dns, http"):
        FilterSpec(protocol=("kafka",))


@pytest.mark.parametrize("spec", L7_PROTOCOL_SPECS,
                         ids=[str(i) for i in range(len(L7_PROTOCOL_SPECS))])
@pytest.mark.parametrize("merged", [True, False])
def test_l7_protocol_sql_and_predicate_agree(store: DuckDBStore, spec: FilterSpec,
                                             merged: bool) -> None:
    everything = store.flows(merged=merged)
    expected = [f for f in everything if spec.matches(f)]
    assert store.flows(spec, merged=merged) == expected
    assert expected or spec.type, "each spec (but the deliberate negative) selects something"
    assert to_sql(FilterSpec(protocol=("tcp", "dns"))) == (
        "(protocol = ? OR dns_query IS NOT NULL)", ["TCP"])


def test_every_field_is_declared_once_for_the_front_ends() -> None:
    from podflow.query.filter import END_FIELDS
    from podflow.query.params import filter_fields
    from podflow.store.sql import END_SQL

    assert END_SQL.keys() == END_FIELDS.keys()
    infos = filter_fields()
    assert list(infos) == list(FilterSpec.__dataclass_fields__)
    flags = [i.flag for i in infos.values()] + [i.short for i in infos.values() if i.short]
    assert len(flags) == len(set(flags))
    assert {i.name: i.short for i in infos.values() if i.short} == {
        "namespace": "-n", "label": "-l", "type": "-t"}
    assert all(i.help.endswith(".") and i.metavar for i in infos.values())
    assert infos["since"].kind == "time" and infos["to_port"].kind == "int"


def test_query_is_pure() -> None:
    """query/ renders no SQL and does not know the store (the SQL lives in store/sql.py)."""
    import ast

    root = Path(__file__).parents[3] / "podflow" / "query"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("podflow.store") for n in names), path.name
