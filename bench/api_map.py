"""Service-map query latency over 1M and 10M stored flow rows, next to a plain GROUP BY.

    .venv/bin/python bench/api_map.py [--sizes 1000000,10000000] [--repeat 10]
                                      [--budget 40] [--keep DIR]

For each size the bench writes a DuckDB store in a temp directory, straight into the store's
table layout (:data:`podflow.store.schema.COLUMNS` / ``ARROW_SCHEMA`` / ``DDL``) from
pyarrow arrays (a 1M-row block, repeated with shifted time, ``seq`` and ids for larger
sizes), then ``DuckDBStore.reindex()`` groups them into connections as writes do: a cluster
of 20 namespaces x 8 workloads x 3 pods on 3 nodes plus external hosts, ~1500 edges
(Zipf-like popularity), flows spread over 24 h, one or two rows per connection (a cross-node
connection is seen by both nodes, sharing ``flow_id``), ~2% of connections dropped or
failed. Then it times, after one warm-up run each:

* ``podflow all``: ``DuckDBStore.map_edges(FilterSpec())`` -- every namespace, all time;
* ``podflow ns+1h``: ``map_edges(FilterSpec(namespace=("ns03",), since=T-3600, until=T))``;
* ``groupby all`` / ``groupby ns+1h``: the reference, a plain DuckDB ``GROUP BY`` of the same
  table by (source namespace/workload, destination namespace/workload, service, port,
  protocol) -> count, sum(bytes), with the same WHERE, on one held read-only connection.

podflow's call is what the API serves: it opens the file (the store never holds it), filters
the merged connections (materialised by the writes) and aggregates edges. The reference does
none of that, so ``ratio`` (printed last: podflow p95 / GROUP BY p95 for the all-namespaces
query at the largest size) measures what that costs: below 1 is impossible, near 1 means no
overhead. Each query repeats up to ``--repeat`` times or until ``--budget`` seconds are spent
on it (at least 3 runs).
Whatever ``map_edges`` is when the bench runs is what gets measured.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from podflow.model.ipkey import ip_key  # noqa: E402
from podflow.query.filter import FilterSpec  # noqa: E402
from podflow.store.duckdb import DuckDBStore  # noqa: E402
from podflow.store.schema import (  # noqa: E402
    ARROW_SCHEMA,
    DDL,
    STATUS_DDL,
    STORE_SCHEMA_VERSION,
)

SPAN = 24 * 3600.0
T_END = 1_790_000_000.0
NODES = ["node1", "node2", "node3"]
CHUNK = 1_000_000

REF_SQL = """SELECT src_namespace, src_workload, dst_namespace, dst_workload, svc_namespace,
       svc_name, dst_port, protocol, count(*) AS connections,
       sum(bytes_to_dst + bytes_to_src) AS bytes
FROM flows WHERE {where}
GROUP BY src_namespace, src_workload, dst_namespace, dst_workload, svc_namespace, svc_name,
         dst_port, protocol"""


def endpoints() -> tuple[pa.Table, list[tuple[int, int, str | None, int, str]]]:
    """The endpoint vocabulary (one row per pod/external) and the edges between them."""
    rows: list[dict[str, Any]] = []
    for ns in range(20):
        for wl in range(8):
            for p in range(3):
                ip = f"10.244.{(ns * 24 + wl * 3 + p) % 3}.{(ns * 24 + wl * 3 + p) % 250 + 2}"
                rows.append({"ip": ip, "kind": "pod", "namespace": f"ns{ns:02d}",
                             "pod": f"wl{wl}-7d9f8c-{p:05d}", "workload_kind": "Deployment",
                             "workload": f"wl{wl}", "labels": [("app", f"wl{wl}")],
                             "node": NODES[(ns + wl + p) % 3], "name": None})
    n_pods = len(rows)
    for x in range(10):
        rows.append({"ip": f"192.168.100.{10 + x}", "kind": "external", "namespace": None,
                     "pod": None, "workload_kind": None, "workload": None, "labels": [],
                     "node": None, "name": f"ext{x}"})
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    cols["ipkey"] = [ip_key(ip) for ip in cols["ip"]]
    table = pa.table({k: pa.array(v, type=ARROW_SCHEMA.field(f"src_{k}").type)
                      for k, v in cols.items()})
    edges = []  # (src endpoint base, dst endpoint base, service, port, protocol)
    for ns in range(20):
        for wl in range(8):
            src = (ns * 8 + wl) * 3
            for k in range(1, 10):
                t = (ns * 8 + wl + k * 7) % 160
                dst_ns = ns if k < 7 else (ns + k) % 20
                dst = (dst_ns * 8 + t % 8) * 3
                proto = "UDP" if k == 9 else "TCP"
                svc = f"ns{dst_ns:02d}/wl{t % 8}" if k % 3 else None
                edges.append((src, dst, svc, 53 if proto == "UDP" else 8000 + t % 8, proto))
            edges.append((src, n_pods + (ns + wl) % 10, None, 5432, "TCP"))
    return table, edges


def _int(a: Any, typ: pa.DataType) -> Any:
    return pc.cast(pc.floor(a), typ)


def chunk(start_conn: int, n_conn: int, total_conn: int, ep: pa.Table,
          edges: list[tuple[int, int, str | None, int, str]], seq0: int) -> pa.Table:
    """Rows for connections ``start_conn .. start_conn+n_conn`` in the store's layout."""
    rnd = [pc.random(n_conn, initializer=start_conn * 10 + i) for i in range(5)]
    two = pc.less(rnd[0], 0.35)  # cross-node: seen by two agents
    per = pc.add(pc.cast(two, pa.int32()), 1)
    offsets = pc.cumulative_sum(pc.cast(per, pa.int32()))
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), offsets])
    n = offsets[-1].as_py()
    parent = pc.list_parent_indices(pa.ListArray.from_arrays(offsets, pa.nulls(n, pa.int8())))
    pos = pc.subtract(pa.array(range(n), pa.int32()), pc.take(offsets, parent))

    def per_row(a: pa.Array) -> pa.Array:
        return pc.take(a, parent)

    n_edges = len(edges)
    e_idx = _int(pc.multiply(pc.power(rnd[1], 2.0), n_edges), pa.int64())
    et = pa.table({"src": [e[0] for e in edges], "dst": [e[1] for e in edges],
                   "svc": [e[2] for e in edges], "port": [e[3] for e in edges],
                   "proto": [e[4] for e in edges]}).take(e_idx)
    pick = _int(pc.multiply(rnd[2], 3.0), pa.int64())
    src_i = pc.add(et["src"], pick)
    is_ext = pc.greater_equal(et["dst"], 480)
    dst_i = pc.if_else(is_ext, et["dst"], pc.add(et["dst"], pick))
    conn_id = pa.array(range(start_conn, start_conn + n_conn), pa.int64())
    t = pc.add(pc.multiply(pc.cast(conn_id, pa.float64()), SPAN / total_conn), T_END - SPAN)
    cols: dict[str, pa.Array | pa.ChunkedArray] = {}
    for p, idx in (("src", src_i), ("dst", dst_i)):
        rows = ep.take(per_row(idx))
        for c in ep.column_names:
            cols[f"{p}_{c}"] = rows[c]
    cols["src_port"] = per_row(_int(pc.add(pc.multiply(rnd[3], 28000), 32768), pa.int32()))
    cols["dst_port"] = per_row(pc.cast(et["port"], pa.int32()))
    svc = et["svc"]
    svc_ns = pc.utf8_slice_codeunits(svc, 0, 4)
    svc_name = pc.utf8_slice_codeunits(svc, 5, 100)
    verdict = pc.if_else(pc.less(rnd[4], 0.01), "DROPPED",
                         pc.if_else(pc.less(rnd[4], 0.02), "ERROR", "FORWARDED"))
    bytes_ = _int(pc.multiply(rnd[3], 50000), pa.int64())
    obs_node = pc.if_else(pc.equal(pos, 0), cols["src_node"], cols["dst_node"])
    cols.update({
        "seq": pa.array(range(seq0, seq0 + n), pa.int64()),
        "flow_id": per_row(pc.cast(conn_id, pa.string())),
        "time": per_row(t), "end_time": per_row(pc.add(t, pc.multiply(rnd[3], 5.0))),
        "state": pa.array(["ended"] * n), "protocol": per_row(et["proto"]),
        "svc_namespace": per_row(svc_ns), "svc_name": per_row(svc_name),
        "svc_port_name": per_row(pc.if_else(pc.is_null(svc), None, "http")),
        "svc_type": per_row(pc.if_else(pc.is_null(svc), None, "ClusterIP")),
        "svc_frontend_ip": per_row(pc.if_else(pc.is_null(svc), None, "10.96.0.10")),
        "svc_frontend_port": per_row(pc.cast(pc.if_else(pc.is_null(svc), None, 80),
                                             pa.int32())),
        "nat_orig_dst_ip": per_row(pc.if_else(pc.is_null(svc), None, "10.96.0.10")),
        "nat_orig_dst_port": per_row(pc.cast(pc.if_else(pc.is_null(svc), None, 80),
                                             pa.int32())),
        "packets_to_dst": per_row(pc.add(pc.divide(bytes_, 500), 1)),
        "bytes_to_dst": per_row(bytes_),
        "packets_to_src": per_row(pc.add(pc.divide(bytes_, 300), 1)),
        "bytes_to_src": per_row(pc.multiply(bytes_, 3)),
        "tcp_state": per_row(pc.if_else(pc.equal(et["proto"], "TCP"), "TIME_WAIT", None)),
        "verdict": per_row(verdict),
        "drop_reason": per_row(pc.if_else(pc.equal(verdict, "DROPPED"), "POLICY_DENIED",
                                          None)),
        "is_reply": pa.array([False] * n), "obs_node": obs_node,
        "obs_source": pa.array(["conntrack"] * n), "cni_profile": pa.array(["flannel"] * n),
        "ingested_at": per_row(pc.add(t, 1.0)),
        "client_key": per_row(pc.cast(conn_id, pa.string())),
    })
    arrays = [cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in ARROW_SCHEMA]
    return pa.table([pa.chunked_array([a]) if isinstance(a, pa.Array) else a
                     for a in arrays], schema=ARROW_SCHEMA)


def build(path: Path, rows: int) -> int:
    """Write a store of about ``rows`` rows; return the exact number.

    A block of up to 1M rows is generated with pyarrow; larger stores repeat that block
    with time, ``seq`` and ids shifted (the same traffic, a longer history).
    """
    ep, edges = endpoints()
    block = int(CHUNK / 1.35)
    reps = max(1, round(rows / CHUNK))
    n_conn = min(block, int(rows / 1.35))
    total_conn = n_conn * reps
    con = duckdb.connect(str(path))
    con.execute("SET enable_progress_bar = false")
    for stmt in DDL:
        con.execute(stmt)
    con.execute(STATUS_DDL)
    con.execute("INSERT INTO podflow_meta VALUES ('schema_version', ?)",
                [str(STORE_SCHEMA_VERSION)])
    table = chunk(0, n_conn, total_conn, ep, edges, 1)
    base = int(table.num_rows)
    for k in range(reps):
        dt = k * n_conn * SPAN / total_conn
        shifted = _shifted(table, k * base, k * n_conn, dt)
        con.register("batch", shifted)
        con.execute("INSERT INTO flows SELECT * FROM batch")
        con.unregister("batch")
    con.execute("CHECKPOINT")
    con.close()
    DuckDBStore(path).reindex()   # group the rows into connections, as writes do
    return base * reps


def _shifted(table: pa.Table, seq: int, ids: int, dt: float) -> pa.Table:
    """The block with ``seq``, the ids and the times moved on (a later copy of it)."""
    for name in ("seq", "flow_id", "client_key", "time", "end_time", "ingested_at"):
        col = table[name]
        if name == "seq":
            col = pc.add(col, seq)
        elif name in ("flow_id", "client_key"):
            col = pc.cast(pc.add(pc.cast(col, pa.int64()), ids), pa.string())
        else:
            col = pc.add(col, dt)
        table = table.set_column(table.schema.get_field_index(name), name, col)
    return table


def timed(fn: Callable[[], Any], repeat: int, budget: float) -> list[float]:
    """Latencies (s) of ``fn`` after one warm-up: ``repeat`` runs or ``budget`` seconds."""
    fn()
    out: list[float] = []
    deadline = time.monotonic() + budget
    while len(out) < repeat and (len(out) < 3 or time.monotonic() < deadline):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _child(path: str, spec: FilterSpec, repeat: int, budget: float,
           conn: Connection) -> None:
    store = DuckDBStore(path, read_only=True)
    deadline = time.monotonic() + budget
    for i in range(repeat + 1):  # run 0 is the warm-up
        t0 = time.perf_counter()
        store.map_edges(spec)
        conn.send((i, time.perf_counter() - t0))
        if time.monotonic() >= deadline and i >= 3:
            break
    conn.send(None)


def timed_podflow(path: Path, spec: FilterSpec, repeat: int, budget: float,
                  cap: float) -> tuple[list[float], bool]:
    """Latencies of ``map_edges(spec)`` in a child process killed after ``cap`` seconds.

    Returns (latencies, censored): when the child is killed mid-run, the time that run had
    taken so far is added as a lower bound and ``censored`` is True.
    """
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(str(path), spec, repeat, budget, child))
    proc.start()
    child.close()
    out: list[float] = []
    censored = False
    started = time.monotonic()
    run_start = started
    try:
        while True:
            left = cap - (time.monotonic() - started)
            if left <= 0 or not parent.poll(left):
                censored = True
                if not out or time.monotonic() - run_start > max(out):
                    out.append(time.monotonic() - run_start)
                break
            msg = parent.recv()
            if msg is None:
                break
            i, dt = msg
            run_start = time.monotonic()
            if i > 0 or dt > budget:  # a warm-up longer than the budget counts too
                out.append(dt)
    except EOFError:
        pass
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
    return out, censored


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


def _plain(con: duckdb.DuckDBPyConnection, sql: str) -> list[Any]:
    return con.execute(sql).fetchall()


def _line(size: int, name: str, lat: list[float], censored: bool) -> str:
    mark = ">=" if censored else "  "
    return (f"{size:>9} rows  {name:<14} n={len(lat):<3} "
            f"p50{mark}{statistics.median(lat) * 1e3:9.1f} ms  "
            f"p95{mark}{pct(lat, 0.95) * 1e3:9.1f} ms" + ("  (killed at the cap)" if censored
                                                       else ""))


def main() -> None:
    """Build the stores, time the queries, print p50/p95 and the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--budget", type=float, default=10.0,
                    help="seconds after which a query stops repeating (min 3 runs)")
    ap.add_argument("--cap", type=float, default=45.0,
                    help="hard limit (s) per podflow query and size, warm-up included")
    ap.add_argument("--keep", type=Path, help="keep the stores in this directory")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="podflow-bench-map-"))
    results: dict[tuple[int, str], tuple[list[float], bool]] = {}
    sizes = [int(s) for s in args.sizes.split(",")]
    ns_spec = FilterSpec(namespace=("ns03",), since=T_END - 3600, until=T_END)
    ns_where = ("(src_namespace = 'ns03' OR dst_namespace = 'ns03') AND "
                f"coalesce(end_time, time) >= {T_END - 3600} AND time <= {T_END}")
    try:
        for size in sizes:
            path = (args.keep or tmp) / f"flows-{size}.duckdb"
            t0 = time.perf_counter()
            rows = build(path, size)
            print(f"# {rows} rows written in {time.perf_counter() - t0:.1f}s "
                  f"({path.stat().st_size / 1e6:.0f} MB)", flush=True)
            for name, spec in (("podflow all", FilterSpec()), ("podflow ns+1h", ns_spec)):
                lat, cens = timed_podflow(path, spec, args.repeat, args.budget, args.cap)
                results[(size, name)] = (lat, cens)
                print(_line(size, name, lat, cens), flush=True)
            ref = duckdb.connect(str(path), read_only=True)
            for name, where in (("groupby all", "TRUE"), ("groupby ns+1h", ns_where)):
                sql = REF_SQL.format(where=where)
                lat = timed(partial(_plain, ref, sql), args.repeat, args.budget)
                results[(size, name)] = (lat, False)
                print(_line(size, name, lat, False), flush=True)
            ref.close()
            if args.keep is None:
                path.unlink()
        big = max(sizes)
        ratios = {}
        for q in ("ns+1h", "all"):
            (pod, cens), (ref_lat, _) = results[(big, f"podflow {q}")], results[
                (big, f"groupby {q}")]
            ratios[q] = (pct(pod, 0.95) / pct(ref_lat, 0.95), cens)
        r, cens = ratios["ns+1h"]
        print(f"# ratio for the namespace + 1 h query at {big} rows: "
              f"{'>=' if cens else ''}{r:.1f}")
        r, cens = ratios["all"]
        if cens:
            print("# podflow's query was killed at the cap: the ratio is a lower bound")
        print(f"ratio: {r:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
