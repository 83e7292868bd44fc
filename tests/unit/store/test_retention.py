"""Retention (``DuckDBStore.prune``): what goes, what stays exact, and the file's size.

After a pass, the store must equal :func:`podflow.store.correlate.merge_all` over the rows
that remain (merged flows, service map, stats, and a bulk reindex of the same rows), also
after more writes. Two crafted cases need the repair step of :mod:`podflow.store.retention`
(a deleted connection between two that then join; a deleted bridge that had chosen a
remaining row's key) and fail without it.
"""

from __future__ import annotations

import math
import os
import random
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from podflow.cli import agent as agent_cli
from podflow.cli.limits import parse_retention, parse_size, parse_store_size
from podflow.model.flow import Endpoint, Flow, FlowState, ObservationPoint, Protocol
from podflow.query.servicemap import build_edges
from podflow.store import retention
from podflow.store.base import StoreError
from podflow.store.correlate import merge_all
from podflow.store.duckdb import DuckDBStore
from podflow.store.retention import SIZE_TARGET, SIZE_TRIGGER, PruneResult
from podflow.store.schema import columns_to_flows
from tests.unit.store.test_connections import batches, corpus

BLOCK = 262_144
"""DuckDB's block size."""


def remaining(path: Path) -> list[Flow]:
    """The stored observation rows, in ``seq`` order (the order the store groups in)."""
    with duckdb.connect(str(path), read_only=True) as con:
        cols = con.sql("SELECT * FROM flows ORDER BY seq").to_arrow_table().to_pydict()
    return columns_to_flows(cols)


def ages(path: Path) -> list[tuple[list[int], float]]:
    """Each stored connection's rows and age (end, else start)."""
    with duckdb.connect(str(path), read_only=True) as con:
        return [(list(q), float(a)) for q, a in con.execute(
            "SELECT m_seqs, coalesce(end_time, time) FROM connections").fetchall()]


def check_exact(store: DuckDBStore) -> None:
    """The store equals grouping and merging its remaining rows, and a bulk reindex."""
    want = merge_all(remaining(store.path))
    assert store.flows() == want
    assert store.map_edges() == build_edges(want)
    assert store.stats()["connections"] == len(want)
    with duckdb.connect(str(store.path), read_only=True) as con:
        used = con.execute("SELECT count(DISTINCT edge_id) FROM connections").fetchall()
        ends = con.execute("SELECT count(*) FROM edge_ends").fetchall()
        assert used == ends   # no edge end left without a connection
    copy = store.path.with_name("reindexed.duckdb")
    shutil.copy(store.path, copy)
    DuckDBStore(copy).reindex()
    part = "SELECT list(seq ORDER BY seq) FROM flows GROUP BY conn_id ORDER BY min(seq)"
    with duckdb.connect(str(store.path)) as a, duckdb.connect(str(copy)) as b:
        assert a.execute(part).fetchall() == b.execute(part).fetchall()
    copy.unlink()


@pytest.mark.parametrize("seed", range(4))
def test_age_prune_equals_reference(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    flows = corpus(seed, 70)
    later, flows = flows[-60:], flows[:-60]
    store = DuckDBStore(tmp_path / "s.duckdb")
    for batch in batches(rnd, flows):
        store.write(batch)
    times = sorted(f.time for f in flows)
    cutoff = times[len(times) // 2]
    before = ages(store.path)
    result = store.prune(max_age=100.0, max_bytes=None, now=cutoff + 100.0)
    assert result.age_cutoff is not None and result.age_cutoff == pytest.approx(cutoff)
    cutoff = result.age_cutoff
    gone = {q for seqs, age in before if age < cutoff for q in seqs}
    kept = {q for seqs, age in before if age >= cutoff for q in seqs}
    assert result.connections_deleted == sum(1 for _, a in before if a < cutoff) > 0
    assert result.rows_deleted == len(gone)
    with duckdb.connect(str(store.path), read_only=True) as con:
        assert {q for (q,) in con.execute("SELECT seq FROM flows").fetchall()} == kept
    check_exact(store)
    assert store.prune(max_age=100.0, max_bytes=None, now=cutoff + 100.0).rows_deleted == 0
    store.write(later)   # writing on after a pass keeps the store exact
    check_exact(store)


def _obs(node: str, source: str, instance: str) -> tuple[ObservationPoint, ...]:
    return (ObservationPoint(node, source, instance=instance),)


def _f(t: float, end: float, node: str, source: str, instance: str, *, flow_id: str = "",
       client_key: str = "") -> Flow:
    e = Endpoint("10.244.0.5", 40000)
    return Flow(t, e, replace(e, ip="10.244.1.7", port=9000), Protocol.TCP, end_time=end,
                state=FlowState.ENDED, observations=_obs(node, source, instance),
                flow_id=flow_id, client_key=client_key)


def _without_repair(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "_repair", lambda con: 0)


@pytest.mark.parametrize("repair", [True, False])
def test_deleted_connection_between_two_that_then_join(
        tmp_path: Path, repair: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """G1 (sockets, ends late), D (another socket instance: cut; conntrack C1), G2
    (conntrack C2: cut from D). D goes for age; G1 and G2, 4 s apart with no vantage in
    common, are then one connection."""
    rows = [_f(100.0, 400.0, "n1", "sockets", "S1", flow_id="k"),
            _f(102.0, 103.0, "n1", "sockets", "S2", flow_id="k"),
            _f(102.5, 103.0, "n1", "conntrack", "C1", flow_id="k"),
            _f(104.0, 400.0, "n1", "conntrack", "C2", flow_id="k")]
    store = DuckDBStore(tmp_path / "s.duckdb")
    store.write(rows)
    assert len(store.flows()) == 3
    if not repair:
        _without_repair(monkeypatch)
    result = store.prune(max_age=1000.0, max_bytes=None, now=1200.0)
    assert (result.rows_deleted, result.connections_deleted) == (2, 1)
    want = merge_all([rows[0], rows[3]])
    assert len(want) == 1
    if repair:
        assert result.regrouped == 1 and store.flows() == want
        check_exact(store)
    else:
        assert store.flows() != want   # the repair is what keeps the store exact


@pytest.mark.parametrize("repair", [True, False])
def test_deleted_bridge_key_chosen_again(tmp_path: Path, repair: bool,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """r took its key from bridge b, but a second socket instance cut it from b's
    connection; b's connection goes for age, and r now takes bridge b2's key, joining it."""
    s0 = _f(99.9, 101.0, "n1", "sockets", "S0", client_key="c")
    b = _f(100.0, 101.0, "n1", "conntrack", "X", flow_id="s", client_key="c")
    r = _f(100.2, 500.0, "n1", "sockets", "S1", client_key="c")
    b2 = _f(100.5, 500.0, "n2", "conntrack", "Y", flow_id="a2", client_key="c")
    store = DuckDBStore(tmp_path / "s.duckdb")
    store.write([s0, b, r, b2])
    assert len(store.flows()) == 3
    if not repair:
        _without_repair(monkeypatch)
    result = store.prune(max_age=1000.0, max_bytes=None, now=1200.0)
    assert result.rows_deleted == 2
    want = merge_all([r, b2])
    assert len(want) == 1
    if repair:
        assert store.flows() == want
        check_exact(store)
        with duckdb.connect(str(store.path)) as con:   # no row points at a deleted bridge
            assert con.execute("SELECT count(*) FROM flows WHERE bridge_seq NOT IN "
                               "(SELECT seq FROM flows)").fetchall() == [(0,)]
    else:
        assert store.flows() != want


def test_health_reports_pruned(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "s.duckdb")
    store.write([_f(100.0 * i, 100.0 * i + 1, "n1", "sockets", f"S{i}", flow_id=f"k{i}")
                 for i in range(1, 10)])
    for node, at in (("n1", 150.0), ("n1", 250.0), ("n1", 850.0), ("n2", 120.0),
                     ("n3", 130.0), ("n3", 140.0)):
        store.write_status(node, {"at": at}, at=at)
    assert store.prune(max_age=100.0, max_bytes=None, now=300.0).statuses_deleted == 4
    assert [(s["node"], s["time"]) for s in store.statuses()] == [("n1", 850.0)]
    store.write_status("n2", {"at": 320.0}, at=320.0)
    with duckdb.connect(str(store.path)) as con:   # make the size pass delete a lot
        con.execute("INSERT INTO agent_status SELECT 260.0 + range / 1000, 'n1', "
                    "repeat('x', 300) FROM range(20000)")
    size = store.prune(None, None).bytes_before
    result = store.prune(None, int(size / 4))
    assert result.size_cutoff is not None and result.statuses_deleted > 0
    assert {s["node"] for s in store.statuses()} == {"n1", "n2"}   # each node's newest stays


def _batch(b: int, n: int) -> list[Flow]:
    t0 = 10_000.0 + 100.0 * b
    return [_f(t0 + i * 0.01, t0 + i * 0.01 + 1, "n1", "conntrack", "", flow_id=f"f{b}-{i}",
               client_key=f"c{b}-{i}") for i in range(n)]


def test_size_prune_deletes_the_oldest(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "s.duckdb")
    for b in range(8):
        store.write(_batch(b, 1500))
    size = store.prune(None, None).bytes_before
    idle = store.prune(None, 2 * size)   # well under the limit: nothing to do
    assert (idle.rows_deleted, idle.size_cutoff) == (0, None)
    used = idle.data_bytes
    before = ages(store.path)
    limit = used // 2
    result = store.prune(None, limit)
    assert result.size_cutoff is not None and result.connections_deleted > 0
    kept = ages(store.path)
    assert min(a for _, a in kept) >= result.size_cutoff   # the oldest went, and only they
    assert len(before) - len(kept) == result.connections_deleted
    share = SIZE_TARGET * limit / used   # what the pass aims to keep, by its estimate
    assert len(kept) == pytest.approx(share * len(before), rel=0.02)
    check_exact(store)


def test_file_stays_under_the_limit(tmp_path: Path) -> None:
    """Writing and pruning in turns: the file stays under the limit (DuckDB reuses the
    blocks the passes free, see :mod:`podflow.store.retention`) while the flows written
    would fill several times it."""
    store = DuckDBStore(tmp_path / "s.duckdb")
    limit, sizes = 5_000_000, []
    for b in range(24):
        store.write(_batch(b, 1000))
        result = store.prune(None, limit)
        assert result.data_bytes <= SIZE_TRIGGER * limit + 2 * BLOCK   # whole blocks
        sizes.append(result.bytes_after)
    assert max(sizes) <= limit, sizes
    assert store.stats()["rows"] < 24_000 / 2
    check_exact(store)


def test_prune_arguments_and_odd_stores(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    assert DuckDBStore(path).prune(60.0, 10**9) == PruneResult()
    assert not path.exists()   # nothing created
    for bad in ((0.0, None), (-1.0, None), (math.nan, None), (None, 0), (None, -5)):
        with pytest.raises(ValueError):
            DuckDBStore(path).prune(*bad)
    DuckDBStore(path).write(_batch(0, 3))
    with pytest.raises(StoreError, match="read-only"):
        DuckDBStore(path, read_only=True).prune(60.0, None)
    assert DuckDBStore(path).prune(None, None).rows_deleted == 0
    assert DuckDBStore(path).prune(1.0, None, now=20_000.0).rows_deleted == 3
    assert DuckDBStore(path).flows() == []


# -- the flags ----------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "want"), [
    ("20GB", 20 * 10**9), ("20gb", 20 * 10**9), ("20G", 20 * 10**9), ("512MiB", 512 * 2**20),
    ("1.5 TiB", int(1.5 * 2**40)), ("1048576", 2**20), ("100 kB", 100_000), ("7b", 7),
    ("2Gi", 2 * 2**30)])
def test_parse_size(text: str, want: int) -> None:
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["", "GB", "20 XB", "-5GB", "1e9", "20 G B", "nan", "1,5GB",
                                  "99999999999TB"])
def test_parse_size_errors(text: str) -> None:
    with pytest.raises(ValueError, match="bad size"):
        parse_size(text)


def test_parse_retention_and_store_size() -> None:
    assert parse_retention("14d") == 14 * 86400
    assert parse_retention("1d12h") == 1.5 * 86400
    assert parse_retention("2w") == 14 * 86400
    for bad in ("0d", "14", "14 days", "-1d", ""):
        with pytest.raises(ValueError):
            parse_retention(bad)
    assert parse_store_size("20GB") == 20 * 10**9
    with pytest.raises(ValueError, match="too small"):
        parse_store_size("1MB")


def _agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[Any, ...]:
    import podflow.agent.runner as runner_mod

    seen: dict[str, Any] = {}

    class FakeAgent:
        spool = None   # store mode: nothing to hand to a hub

        def __init__(self, cfg: Any) -> None:
            seen["cfg"] = cfg

        def run(self) -> runner_mod.AgentStats:
            return runner_mod.AgentStats(node="n1")

    monkeypatch.setattr(runner_mod, "Agent", FakeAgent)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    import typer

    app = typer.Typer()
    agent_cli.register(app)
    app.command("other")(lambda: None)   # keep "agent" a subcommand
    r = CliRunner().invoke(app, ["agent", "--node", "n1", "--cluster-state", str(tmp_path),
                                 "--store", str(tmp_path / "s.duckdb"), *args])
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stderr, seen.get("cfg")


def test_agent_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, err, cfg = _agent(tmp_path, monkeypatch, "--retention", "14d", "--max-size", "20GB")
    assert code == 0, err
    assert (cfg.retention, cfg.max_store_bytes) == (14 * 86400.0, 20 * 10**9)
    code, err, cfg = _agent(tmp_path, monkeypatch)
    assert code == 0 and (cfg.retention, cfg.max_store_bytes) == (None, None)
    for args, where in ((["--retention", "14 days"], "--retention: bad duration"),
                        (["--max-size", "20XB"], "--max-size: bad size"),
                        (["--max-size", "1MB"], "--max-size: '1MB' is too small")):
        code, err, cfg = _agent(tmp_path, monkeypatch, *args)
        assert code == 2 and cfg is None and err.count("\n") == 1, err
        assert err.startswith(f"podflow agent: {where}"), err


def test_agent_metrics_flags_are_checked_before_collecting(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    for args, where in ((["--metrics", "flow"], "--metrics needs --metrics-listen"),
                        (["--metrics-listen", "9965"], "--metrics-listen/--metrics: expected "
                                                       "HOST:PORT"),
                        (["--metrics-listen", "127.0.0.1:0", "--metrics", "flows"],
                         "--metrics-listen/--metrics: unknown metric 'flows'")):
        code, err, _ = _agent(tmp_path, monkeypatch, *args)
        assert code == 2 and err.startswith(f"podflow agent: {where}"), err
    code, err, _ = _agent(tmp_path, monkeypatch, "--metrics-listen", "127.0.0.1:0")
    assert code == 0, err


def test_agent_store_or_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store and a spool (hub mode) exclude each other."""
    code, err, cfg = _agent(tmp_path, monkeypatch, "--spool", str(tmp_path / "sp"),
                            "--observer-listen", "127.0.0.1:0")
    assert code == 2 and cfg is None and "give --store FILE, or --spool DIR" in err, err
