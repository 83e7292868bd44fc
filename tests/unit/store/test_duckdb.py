"""DuckDB flow store: round trip, merging, versioning, locking, several writers."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest

from podflow.model.flow import Endpoint, Flow, FlowState, ObservationPoint, Protocol
from podflow.query.filter import FilterSpec
from podflow.store.base import (
    FlowRejected,
    FlowStore,
    StoreBusy,
    StoreError,
    StoreMissing,
    StoreNotDuckDB,
    StoreSchemaError,
)
from podflow.store.correlate import merge_all
from podflow.store.duckdb import DuckDBStore
from podflow.store.schema import flow_to_rows, row_to_flow
from tests.unit.query.test_filter import corpus
from tests.unit.store.test_correlate import nodeport_pair


def _flows(node: str, n: int, start: float = 1000.0) -> list[Flow]:
    src, dst = Endpoint("10.244.0.5", 1), Endpoint("10.244.1.5", 80)
    return [Flow(start + i, replace(src, port=1000 + i), dst, Protocol.TCP,
                 observations=(ObservationPoint(node, "conntrack"),),
                 flow_id=f"{node}-{i}") for i in range(n)]


def test_round_trip_equals_merge(tmp_path: Path) -> None:
    flows = corpus()
    with DuckDBStore(tmp_path / "s.duckdb") as s:
        assert isinstance(s, FlowStore)
        rows = sum(max(1, len(f.observations)) for f in flows)
        assert s.write(flows) == rows
        assert s.flows() == merge_all(flows)
        raw = s.flows(merged=False)
        assert len(raw) == rows
        for f in flows:   # each row is the flow as one observation point saw it
            assert row_to_flow(flow_to_rows(f)[0]) == replace(f, observations=f.observations[:1])
        stats = s.stats()
        assert stats["rows"] == rows and stats["connections"] == len(merge_all(flows))
        assert stats["rows_per_node"]["node1"] == 4


def test_nodeport_merge_in_store(tmp_path: Path) -> None:
    a, b = nodeport_pair()
    s = DuckDBStore(tmp_path / "s.duckdb")
    s.write([b])      # the two agents write separately, in any order
    s.write([a])
    [m] = s.flows()
    assert m.source == a.source and m.destination == a.destination
    assert m.destination_service == a.destination_service
    assert [o.node_name for o in m.observations] == ["node1", "node2"]
    assert s.flows(FilterSpec(node=("node2",), from_namespace=("shop",))) == []
    assert s.flows(FilterSpec(node=("node2",), from_ip=("192.168.100.20",))) == [m]


def test_limit_last_after_rowid(tmp_path: Path) -> None:
    s = DuckDBStore(tmp_path / "s.duckdb")
    s.write(_flows("node1", 30))
    assert [f.time for f in s.flows(limit=3)] == [1000.0, 1001.0, 1002.0]
    assert [f.time for f in s.flows(last=2)] == [1028.0, 1029.0]
    mark = s.last_rowid()
    assert mark == 30 and s.flows(after_rowid=mark) == []
    update = replace(_flows("node1", 30)[3], state=FlowState.ACTIVE, end_time=1500.0)
    s.write([update, *_flows("node2", 1)])
    new = s.flows(after_rowid=mark)
    assert [f.flow_id for f in new] == ["node2-0", "node1-3"]   # by start time
    assert new[1].end_time == 1500.0 and new[1].state is FlowState.ENDED
    assert len(s.flows(after_rowid=mark, merged=False)) == 2


def test_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    DuckDBStore(path).write(_flows("n", 1))
    con = duckdb.connect(str(path))
    con.execute("UPDATE podflow_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    for op in (lambda: DuckDBStore(path).flows(), lambda: DuckDBStore(path).write([])
               or DuckDBStore(path).write(_flows("n", 1))):
        with pytest.raises(StoreSchemaError, match="newer podflow"):
            op()


def test_missing_and_readonly(tmp_path: Path) -> None:
    with pytest.raises(StoreMissing, match="no flow store"):
        DuckDBStore(tmp_path / "none.duckdb", read_only=True)
    path = tmp_path / "sub" / "s.duckdb"
    DuckDBStore(path).write(_flows("n", 1))
    ro = DuckDBStore(path, read_only=True)
    assert len(ro.flows()) == 1
    with pytest.raises(StoreError, match="read-only"):
        ro.write(_flows("n", 1))
    (tmp_path / "junk.duckdb").write_text("not a database")
    with pytest.raises(StoreNotDuckDB):   # told apart from a newer layout (schema error)
        DuckDBStore(tmp_path / "junk.duckdb").flows()


def test_bad_flow_rejected_rest_stored(tmp_path: Path) -> None:
    good = _flows("n", 3)
    bad_ip = replace(good[0], source=Endpoint("not-an-ip", 1), flow_id="bad1")
    bad_port = replace(good[0], destination=Endpoint("10.0.0.1", 70000), flow_id="bad2")
    big = replace(good[0], flow_id="bad3", traffic=replace(
        good[0].traffic, to_source=replace(good[0].traffic.to_source, bytes=2**70)))
    s = DuckDBStore(tmp_path / "s.duckdb")
    with pytest.raises(FlowRejected) as err:
        s.write([good[0], bad_ip, good[1], bad_port, big, good[2]])
    assert err.value.written == 3
    assert [i for i, _, _ in err.value.errors] == [1, 3, 4]
    assert "not-an-ip" in str(err.value)
    assert [f.flow_id for f in s.flows()] == ["n-0", "n-1", "n-2"]


def _hold(path: str, seconds: float, ready: object) -> None:
    con = duckdb.connect(path)
    ready.set()  # type: ignore[attr-defined]
    time.sleep(seconds)
    con.close()


def test_busy_then_retry(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    DuckDBStore(path).write(_flows("n", 1))
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_hold, args=(str(path), 1.5, ready))
    p.start()
    assert ready.wait(30)
    with pytest.raises(StoreBusy, match="locked"):
        DuckDBStore(path, lock_timeout=0.2).write(_flows("m", 1))
    patient = DuckDBStore(path, lock_timeout=20)
    assert patient.write(_flows("m", 1)) == 1   # waits for the holder, then writes
    assert patient.lock_waits > 0
    p.join()
    assert len(patient.flows()) == 2


def _writer(path: str, node: str) -> None:
    store = DuckDBStore(path, lock_timeout=60)
    flows = _flows(node, 2000)
    for i in range(0, 2000, 100):
        store.write(flows[i:i + 100])


def test_concurrent_writers(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.duckdb")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, n)) for n in ("node1", "node2")]
    for p in procs:
        p.start()
    seen = 0
    while any(p.is_alive() for p in procs):   # a reader polls meanwhile, like observe -f
        with contextlib.suppress(StoreMissing):
            seen = max(seen, DuckDBStore(path, read_only=True, lock_timeout=60).last_rowid())
        time.sleep(0.05)
    for p in procs:
        p.join()
        assert p.exitcode == 0
    s = DuckDBStore(path, read_only=True)
    assert s.stats()["rows"] == 4000
    assert s.stats()["rows_per_node"] == {"node1": 2000, "node2": 2000}
    assert sorted(f.flow_id for f in s.flows(merged=False)) == sorted(
        f"{n}-{i}" for n in ("node1", "node2") for i in range(2000))
    assert s.last_rowid() == 4000


def test_multi_vantage_merge_in_store(tmp_path: Path) -> None:
    from podflow.model.flow import L7, DnsInfo
    from tests.unit.pipeline.test_sockdecode import clusterip_views, macvlan_views, nodeport_views

    views = [*clusterip_views(), *nodeport_views(), *macvlan_views()]
    views = [replace(f, time=f.time + 100 * i) for i, f in enumerate(views)] + views
    pkt = replace(views[-1], observations=(ObservationPoint("node9", "packets"),),
                  l7=L7(dns=DnsInfo("db.example", ("A",))))
    views.append(pkt)
    s = DuckDBStore(tmp_path / "s.duckdb")
    for f in views:          # every agent writes separately, in any order
        s.write([f])
    got = s.flows()
    assert got == merge_all(views)
    assert sorted(len(f.observations) for f in got)[-3:] == [2, 3, 4]
    assert sum(f.l7 is not None for f in got) == 1
    edges = s.map_edges()
    assert sum(e.connections for e in edges) == len(got)
    assert s.stats()["connections"] == len(got)
