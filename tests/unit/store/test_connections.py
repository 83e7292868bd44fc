"""The store's write-time grouping equals the pure reference, whatever the arrival order.

A randomized corpus of NATed connections seen by conntrack, client and server sockets and
packets on two nodes, and of NAT chained across three nodes (ports reused after 600 s, keys
shared by unrelated connections, bridges that arrive after the rows they tie together,
starts drifting in chains of < 10 s) is written in several batches in shuffled orders;
after every batch the store's merged flows, service map, stats and follower reads must equal
:func:`podflow.store.correlate.merge_all` over everything written so far (in ``seq``
order: batch by batch, each batch sorted by start time, as the store numbers rows).
"""

from __future__ import annotations

import random
import shutil
from dataclasses import replace
from pathlib import Path

import duckdb
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
    Traffic,
    Verdict,
    Workload,
)
from podflow.query.filter import FilterSpec
from podflow.query.servicemap import build_edges
from podflow.store.correlate import SPLIT_GAP, group, merge, merge_all
from podflow.store.duckdb import DuckDBStore
from podflow.store.schema import COLUMNS, GROUPING_COLUMNS, STATUS_DDL, STORE_SCHEMA_VERSION

NODES = ("node1", "node2")
SVC = Service("shop", "backend", "api", "ClusterIP", "10.96.0.20", 9000)


def _pod(ip: str, port: int, name: str, node: str) -> Endpoint:
    return Endpoint(ip, port, EndpointKind.POD, "shop", name, Workload("Deployment", name[:2]),
                    (("app", name[:2]),), node)


def _obs(node: str, source: str, instance: str = "") -> tuple[ObservationPoint, ...]:
    return (ObservationPoint(node, source, instance=instance),)


def connection(rnd: random.Random, t0: float, ck: str, sk: str) -> list[Flow]:
    """The views of one connection client ``ck`` -> VIP -> server ``sk`` (some left out);
    most name the kernel object they tracked (an instance), some do not (older stores)."""
    tag = f"{t0:.3f}"

    def obs(node: str, source: str) -> tuple[ObservationPoint, ...]:
        return _obs(node, source, tag if rnd.random() < 0.8 else "")

    cli = _pod("10.244.0.5", 40000 + rnd.randrange(50), "fe-1", "node1")
    srv = _pod("10.244.1.7", 9000, "be-1", "node2")
    node = Endpoint("10.244.0.0", cli.port, EndpointKind.NODE, name="node1")
    tr = Traffic(Counters(rnd.randrange(1, 9), rnd.randrange(100, 999)),
                 Counters(rnd.randrange(1, 9), rnd.randrange(100, 999)))
    verdict = rnd.choice([Verdict.FORWARDED] * 6 + [Verdict.DROPPED, Verdict.UNKNOWN])

    def at() -> float:
        return t0 + rnd.uniform(0, 3.0)

    views = [
        Flow(at(), cli, replace(srv, ip="10.96.0.20", kind=EndpointKind.SERVICE), Protocol.TCP,
             observations=obs("node1", "sockets"), client_key=ck, rtt_us=rnd.uniform(1, 9)),
        Flow(at(), cli, srv, Protocol.TCP, destination_service=SVC,
             nat=Nat(Address("10.96.0.20", 9000)), traffic=tr, verdict=verdict,
             observations=obs("node1", "conntrack"), flow_id=sk, client_key=ck),
        Flow(at(), node if rnd.random() < 0.5 else cli, srv, Protocol.TCP, traffic=tr,
             observations=obs("node2", "conntrack"), flow_id=sk,
             client_key=rnd.choice([sk, ""])),
        Flow(at(), node, srv, Protocol.TCP, observations=obs("node2", "sockets"), flow_id=sk,
             rtt_us=rnd.choice([None, 5.0])),
        Flow(at(), cli, srv, Protocol.TCP, observations=obs(rnd.choice(NODES), "packets"),
             flow_id=(k := rnd.choice([ck, sk])), client_key=k),
    ]
    out = [v for v in views if rnd.random() < 0.8]
    for v in list(out):   # an ACTIVE report, then the final one (same start)
        if rnd.random() < 0.3:
            out.append(replace(v, state=FlowState.ACTIVE, end_time=None))
    return out


def chained(rnd: random.Random, t0: float, ck: str, mk: str, sk: str) -> list[Flow]:
    """The views of a pod dialling node2's NodePort, backend on node3: NAT chained across
    nodes (node1 masquerades ``ck`` -> ``mk``, node2 DNATs + SNATs ``mk`` -> ``sk``)."""
    tag = f"{t0:.3f}"

    def obs(node: str, source: str) -> tuple[ObservationPoint, ...]:
        return _obs(node, source, tag if rnd.random() < 0.8 else "")

    cli = _pod("10.244.0.5", 40000 + rnd.randrange(50), "fe-1", "node1")
    srv = _pod("10.244.2.7", 8080, "be-1", "node3")
    n1 = Endpoint("172.18.0.1", 23000, EndpointKind.NODE, name="node1")
    n2 = Endpoint("172.18.0.2", 30080, EndpointKind.NODE, name="node2")
    vtep = Endpoint("10.244.1.0", 61000, EndpointKind.NODE, name="node2")
    svc = Service("shop", "web", "http", "NodePort", "172.18.0.2", 30080)

    def at() -> float:
        return t0 + rnd.uniform(0, 3.0)

    views = [
        Flow(at(), cli, n2, Protocol.TCP, nat=Nat(None, Address("172.18.0.1", 23000)),
             observations=obs("node1", "conntrack"), flow_id=mk, client_key=ck),
        Flow(at(), cli, n2, Protocol.TCP, observations=obs("node1", "sockets"), client_key=ck),
        Flow(at(), n1, srv, Protocol.TCP, destination_service=svc,   # SNAT unless eTP Local
             nat=Nat(Address("172.18.0.2", 30080),
                     rnd.choice([Address("10.244.1.0", 61000), None])),
             observations=obs("node2", "conntrack"), flow_id=sk, client_key=mk),
        Flow(at(), n1, n2, Protocol.TCP, observations=obs("node1", "packets"),
             flow_id=mk, client_key=mk),
        Flow(at(), vtep, srv, Protocol.TCP, observations=obs("node3", "conntrack"),
             flow_id=sk, client_key=sk),
        Flow(at(), vtep, srv, Protocol.TCP, observations=obs("node3", "sockets"), flow_id=sk),
    ]
    return [v for v in views if rnd.random() < 0.8]


def corpus(seed: int, n: int = 60) -> list[Flow]:
    """Connections with few distinct keys, so that keys are reused and shared."""
    rnd = random.Random(seed)
    out: list[Flow] = []
    t = 1000.0
    for _ in range(n):
        t += rnd.choice([0.5, 2.0, 3.0, 6.0, 9.0, 12.0, 25.0, 700.0])
        ck, sk = f"c{rnd.randrange(6)}", f"s{rnd.randrange(6)}"
        if rnd.random() < 0.3:
            out += chained(rnd, t, ck, f"m{rnd.randrange(4)}", sk)
        else:
            out += connection(rnd, t, ck, sk)
        if rnd.random() < 0.1:   # a record with no key at all
            out.append(Flow(t + 0.3, _pod("10.244.0.9", 1, "x-1", "node1"),
                            _pod("10.244.0.8", 2, "y-1", "node1"), Protocol.UDP,
                            observations=_obs("node1", "conntrack")))
        if rnd.random() < 0.1:   # the same key again and again, < 10 s apart
            for i in range(1, rnd.randrange(2, 6)):
                out.append(replace(out[-1], time=out[-1].time + rnd.uniform(7.0, 11.0) * i))
    return out


def batches(rnd: random.Random, flows: list[Flow]) -> list[list[Flow]]:
    """Shuffled into batches of random size (bridges often land after their sockets)."""
    order = list(flows)
    rnd.shuffle(order)
    cuts = sorted(rnd.sample(range(1, len(order)), min(len(order) - 1, 6)))
    return [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]


def check(store: DuckDBStore, written: list[Flow]) -> None:
    """The store equals the reference over ``written`` (in seq order)."""
    want = merge_all(written)
    assert store.flows() == want
    assert store.map_edges() == build_edges(want)
    assert store.stats()["connections"] == len(want)
    assert store.flows(last=3) == want[-3:]
    node2 = FilterSpec(node=("node2",))
    assert store.flows(node2) == [f for f in want if node2.matches(f)]


@pytest.mark.parametrize("seed", range(6))
def test_batches_equal_reference(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    flows = corpus(seed)
    store = DuckDBStore(tmp_path / "s.duckdb")
    written: list[Flow] = []
    for batch in batches(rnd, flows):
        mark = store.last_rowid() if store.path.exists() else 0
        store.write(batch)
        ordered = sorted(batch, key=lambda f: f.time)   # the store's seq order in a batch
        written += ordered
        check(store, written)
        fresh = {id(f) for f in ordered}
        touched = [merge(g) for g in group(written) if any(id(f) in fresh for f in g)]
        assert store.flows(after_rowid=mark) == touched
    copy = tmp_path / "copy.duckdb"
    shutil.copy(store.path, copy)
    DuckDBStore(copy).reindex()   # the bulk SQL agrees with the incremental grouping
    sql = "SELECT * EXCLUDE (conn_id) FROM connections ORDER BY m_seq"
    with duckdb.connect(str(store.path)) as a, duckdb.connect(str(copy)) as b:
        assert a.execute(sql).fetchall() == b.execute(sql).fetchall()
        part = ("SELECT list(seq ORDER BY seq) FROM flows GROUP BY conn_id "
                "ORDER BY min(seq)")
        assert a.execute(part).fetchall() == b.execute(part).fetchall()


def test_one_row_batches_any_order(tmp_path: Path) -> None:
    order = corpus(42, 15)
    random.Random(7).shuffle(order)
    store = DuckDBStore(tmp_path / "s.duckdb")
    for f in order:
        store.write([f])
    check(store, order)


def test_long_chain_fetched_whole(tmp_path: Path) -> None:
    """Starts closer than SPLIT_GAP for minutes are one connection reaching past the searched
    window; a bridge arriving last moves its middle to the bridge's key and splits it in
    three."""
    rnd = random.Random(5)
    e = _pod("10.244.0.5", 1, "fe-1", "node1")
    step = 0.8 * SPLIT_GAP  # 40 steps span well beyond the +-60 s window searched on write
    chain = [Flow(1000.0 + step * i + rnd.uniform(0, 0.05 * SPLIT_GAP), e, e, Protocol.TCP,
                  observations=_obs(NODES[i % 2], "sockets"), flow_id="k") for i in range(40)]
    bridge = replace(chain[20], time=chain[20].time + 0.1, client_key="a",
                     observations=_obs("node1", "conntrack"))
    order = list(chain)
    rnd.shuffle(order)
    store = DuckDBStore(tmp_path / "s.duckdb")
    written: list[Flow] = []
    for i in range(0, 40, 7):
        store.write(order[i:i + 7])
        written += sorted(order[i:i + 7], key=lambda f: f.time)
    assert len(store.flows()) == 1
    store.write([bridge])
    check(store, [*written, bridge])
    assert len(store.flows()) == 3


def test_version_1_store_upgraded_on_write(tmp_path: Path) -> None:
    flows = corpus(3, 30)
    old, new = flows[:80], flows[80:]
    path = tmp_path / "v1.duckdb"
    DuckDBStore(path).write(old)
    with duckdb.connect(str(path)) as con:   # make it look like podflow's first layout
        con.execute("DROP TABLE connections")
        for c in (*GROUPING_COLUMNS, "obs_instance", "dns_queries", "dns_rcodes"):
            con.execute(f"ALTER TABLE flows DROP COLUMN {c}")
        con.execute("UPDATE podflow_meta SET value = '1' WHERE key = 'schema_version'")
        con.execute(STATUS_DDL)
        assert len(con.execute("DESCRIBE flows").fetchall()) == len(COLUMNS) - 7
    with pytest.raises(Exception, match="older podflow"):
        DuckDBStore(path, read_only=True).flows()
    store = DuckDBStore(path)
    store.write(new)
    old = [_as_of(f, 1) for f in old]   # version 1 rows kept neither
    assert store.flows() == merge_all(sorted(old, key=lambda f: f.time)
                                      + sorted(new, key=lambda f: f.time))
    assert store.stats()["schema_version"] == STORE_SCHEMA_VERSION


def _as_of(f: Flow, version: int) -> Flow:
    """``f`` as a store of ``version`` keeps it: no instances before 3, no DNS message
    counts before 4."""
    if version < 3:
        f = replace(f, observations=tuple(replace(o, instance="") for o in f.observations))
    if version < 4 and f.l7 is not None and f.l7.dns is not None:
        f = replace(f, l7=replace(f.l7, dns=replace(f.l7.dns, queries=0, rcodes=())))
    return f


@pytest.mark.parametrize("version", [2, 3])
def test_older_store_upgraded_on_write(tmp_path: Path, version: int) -> None:
    """A version 2 store gains the instance and DNS count columns, a version 3 store the DNS
    count columns; their rows keep their connections."""
    flows = corpus(4, 30)
    old, new = [_as_of(f, version) for f in flows[:80]], flows[80:]
    path = tmp_path / f"v{version}.duckdb"
    DuckDBStore(path).write(old)
    dropped = ["dns_queries", "dns_rcodes"] + (["obs_instance"] if version < 3 else [])
    with duckdb.connect(str(path)) as con:
        for c in dropped:
            con.execute(f"ALTER TABLE flows DROP COLUMN {c}")
            con.execute(f"ALTER TABLE connections DROP COLUMN {c}")
        con.execute(f"UPDATE podflow_meta SET value = '{version}' WHERE key = "
                    "'schema_version'")
    with pytest.raises(Exception, match="older podflow"):
        DuckDBStore(path, read_only=True).flows()
    store = DuckDBStore(path)
    store.write(new)
    assert store.stats()["schema_version"] == STORE_SCHEMA_VERSION
    assert store.flows() == merge_all(sorted(old, key=lambda f: f.time)
                                      + sorted(new, key=lambda f: f.time))


def test_port_reused_within_the_gap_is_two_connections(tmp_path: Path) -> None:
    """The same 5-tuple 2.8 s later (conntrack gave it a new id, the sockets a new cookie)
    is a second connection, whichever order the rows arrive in; the ACTIVE then final
    reports of one entry stay one."""
    cli = _pod("10.244.0.2", 49059, "web-1", "node1")
    srv = _pod("10.244.0.3", 9000, "api-1", "node1")

    def conn(t: float, n: int) -> list[Flow]:
        ct = Flow(t, cli, srv, Protocol.TCP, flow_id="k", client_key="k",
                  observations=_obs("node1", "conntrack", f"0/{n}"))
        return [ct, replace(ct, state=FlowState.ACTIVE, end_time=None),
                Flow(t + 0.4, cli, srv, Protocol.TCP, client_key="k",
                     observations=_obs("node1", "sockets", f"c{n}")),
                Flow(t + 0.5, cli, srv, Protocol.TCP, flow_id="k",
                     observations=_obs("node1", "sockets", f"s{n}"))]

    rows = conn(100.0, 1) + conn(102.8, 2)
    assert [len(g) for g in group(rows)] == [4, 4]
    for order in (rows, rows[::-1], rows[4:] + rows[:4]):
        path = tmp_path / f"s{len(list(tmp_path.iterdir()))}.duckdb"
        store = DuckDBStore(path)
        written: list[Flow] = []
        for f in order:
            store.write([f])
            written.append(f)
        assert [f.time for f in store.flows()] == [100.0, 102.8]
        check(store, written)


def test_cut_cascading_past_the_searched_window(tmp_path: Path) -> None:
    """Two vantages alternating every 2 s, each row its own instance, pair up as A B, A B ...
    for minutes; one late row before the first moves every cut, far past the window searched
    around it, and the store must follow the whole chain."""
    e = _pod("10.244.0.5", 1, "fe-1", "node1")
    rows = [Flow(1000.0 + 2.0 * i, e, e, Protocol.TCP, flow_id="k",
                 observations=_obs("node1", "conntrack" if i % 2 == 0 else "packets",
                                   f"{i // 2}")) for i in range(80)]
    store = DuckDBStore(tmp_path / "s.duckdb")
    for i in range(0, 80, 9):
        store.write(rows[i:i + 9])
    assert len(store.flows()) == 40
    late = replace(rows[1], time=999.0, observations=_obs("node1", "packets", "late"))
    store.write([late])
    check(store, [*rows, late])
    assert len(store.flows()) == 41
