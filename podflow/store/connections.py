"""The ``connections`` table: merged connections materialised at write time.

Why: merging observations at query time (window functions over every row, wide columns
included, then picking primaries) made a service map over 10M rows take a minute and every
follower poll merge the whole table. Merging belongs where the data changes: a writer holds
DuckDB's exclusive file lock for its whole batch, so it can group its rows with what is
stored without racing other agents, and readers then read one row per connection.

How, per write batch (one transaction, see :func:`write_batch`):

1. fetch the grouping columns of stored rows near the batch: within ``WINDOW`` seconds of a
   batch row's start (the table is appended roughly in time order, so DuckDB's zone maps on
   ``time`` skip the rest) and sharing a key (``flow_id``, ``client_key``, group key), then
   the rest of every chain of bridges found (NAT chained across nodes, a hop per node);
2. decide the batch rows' connections and which stored groups change with the exact rules
   of :func:`podflow.store.correlate.group` (:mod:`podflow.store.grouping`); a changed
   segment whose rows reach the edge of the fetched windows (a rare chain of starts every
   few seconds) is searched further until it ends inside them;
3. update the stored rows that moved, append the batch with its ``conn_id``, then replace the
   merged row of every connection the batch touched (DELETE + INSERT of only those, computed
   in SQL by :func:`merged_sql` from their rows).

The merge rules are :func:`podflow.store.correlate.merge`'s: the primary row (at the
server's end of the chain, undid NAT, knows the server key, real source, earliest, node, seq)
gives destination, service and NAT; the best source view (at the client's end of the chain
first) gives the source; counters are maxima, nodes a union, the verdict the
worst, ``rtt_us`` the first measured (client side first), L7 the first row's that has one.
Readers filter and aggregate these rows directly and fetch observation rows only for the
connections they return (``m_seqs``). :func:`reindex` recomputes everything in bulk (the
upgrade of a version 1 store, or a store written directly, like the benchmark's).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import duckdb
import pyarrow as pa

from podflow.store.correlate import SPLIT_GAP
from podflow.store.edges import number_edges
from podflow.store.grouping import (
    Row,
    affected,
    chain_keys,
    choose_keys,
    finish,
    regroup,
)
from podflow.store.schema import COLUMNS, CONN_COLUMNS, GROUPING_COLUMNS

WINDOW = 6 * SPLIT_GAP
"""Seconds around each batch row searched for stored rows of the same connection (the rules
need 2 x SPLIT_GAP; the margin lets groups reaching further be detected and fetched)."""
MAX_WINDOWS = 32
"""At most this many time ranges per search (nearest ones are joined beyond it)."""

_GAP = float(SPLIT_GAP)
_UNDID = "(svc_name IS NOT NULL OR nat_orig_dst_ip IS NOT NULL OR nat_snat_ip IS NOT NULL)"
_SRC_KNOWN = "(src_kind NOT IN ('node', 'unknown'))"
_SRC_COLS = [n for n, _ in COLUMNS if n.startswith("src_")]
_L7_COLS = ["l7_latency_ns", *(n for n, _ in COLUMNS if n.startswith(("dns_", "http_")))]
_L7_PRESENT = "(dns_query IS NOT NULL OR http_protocol IS NOT NULL OR l7_latency_ns IS NOT NULL)"
HAS_L7 = "(dns_query IS NOT NULL OR http_method IS NOT NULL OR http_code IS NOT NULL)"
"""A row with an HTTP or DNS record (``connections.has_l7``: one of the rows has)."""
_FETCH = ("seq, time, flow_id, client_key, conn_id, conn_key, bridge_time, bridge_seq, "
          "obs_node, obs_source, obs_instance")


def merged_sql(rel: str, *, materialize: bool = True) -> str:
    """SELECT of the ``connections`` rows of every ``conn_id`` in relation ``rel`` (rows)."""
    repl = ", ".join([
        "a.m_time AS time", "a.m_end AS end_time", "a.m_pd AS packets_to_dst",
        "a.m_bd AS bytes_to_dst", "a.m_ps AS packets_to_src", "a.m_bs AS bytes_to_src",
        "CASE WHEN a.m_ended THEN 'ended' ELSE 'active' END AS state",
        "CASE a.m_vrank WHEN 3 THEN 'DROPPED' WHEN 2 THEN 'ERROR' WHEN 1 THEN 'FORWARDED' "
        "ELSE 'UNKNOWN' END AS verdict",
        "coalesce(nullif(p.flow_id, ''), a.m_fid, '') AS flow_id",
        "coalesce(nullif(p.client_key, ''), nullif(s.client_key, ''), a.m_ckey, '') "
        "AS client_key", "a.m_rtt AS rtt_us",
        "CASE WHEN p.nat_snat_ip IS NULL THEN a.m_snat.ip ELSE p.nat_snat_ip END "
        "AS nat_snat_ip",
        "CASE WHEN p.nat_snat_ip IS NULL THEN a.m_snat.port ELSE p.nat_snat_port END "
        "AS nat_snat_port",
        *(f"s.{c} AS {c}" for c in _SRC_COLS), *(f"l.{c} AS {c}" for c in _L7_COLS)])
    bridge = "b.flow_id <> '' AND b.client_key <> '' AND b.flow_id <> b.client_key"
    return f"""WITH g AS {"MATERIALIZED " if materialize else ""}({rel}),
up AS (SELECT DISTINCT r.seq FROM g r JOIN g b ON b.conn_id = r.conn_id
       AND b.client_key = r.flow_id WHERE r.flow_id <> '' AND {bridge}),
dn AS (SELECT DISTINCT r.seq FROM g r JOIN g b ON b.conn_id = r.conn_id
       AND b.flow_id = r.client_key WHERE r.client_key <> '' AND {bridge}),
gx AS (SELECT *, seq IN (SELECT seq FROM up) AS m_up, seq IN (SELECT seq FROM dn) AS m_dn
       FROM g),
a AS (SELECT conn_id, min(time) AS m_time, max(end_time) AS m_end, max(seq) AS m_seq,
             list(seq ORDER BY seq) AS m_seqs,
             list(DISTINCT obs_node ORDER BY obs_node) FILTER (WHERE obs_node IS NOT NULL)
                 AS obs_nodes,
             max(packets_to_dst) AS m_pd, max(bytes_to_dst) AS m_bd,
             max(packets_to_src) AS m_ps, max(bytes_to_src) AS m_bs,
             bool_or(state = 'ended') AS m_ended,
             max(CASE verdict WHEN 'DROPPED' THEN 3 WHEN 'ERROR' THEN 2
                 WHEN 'FORWARDED' THEN 1 ELSE 0 END) AS m_vrank,
             max(nullif(flow_id, '')) AS m_fid, max(nullif(client_key, '')) AS m_ckey,
             arg_min(rtt_us, (flow_id <> '', time, seq)) FILTER (WHERE rtt_us IS NOT NULL)
                 AS m_rtt,
             arg_min(seq, (time, seq)) FILTER (WHERE {_L7_PRESENT}) AS l_seq,
             arg_min({{'ip': nat_snat_ip, 'port': nat_snat_port}},
                     (m_up, time, coalesce(obs_node, ''), seq))
                 FILTER (WHERE nat_snat_ip IS NOT NULL) AS m_snat,
             arg_min(seq, (m_up, NOT {_UNDID}, flow_id = '', NOT {_SRC_KNOWN}, time,
                           coalesce(obs_node, ''), seq)) AS p_seq,
             arg_min(seq, (m_dn, NOT {_UNDID}, NOT {_SRC_KNOWN},
                           coalesce(client_key, '') = '', time, coalesce(obs_node, ''), seq))
                 AS s_seq,
             arg_min(coalesce(nullif(flow_id, ''), client_key, ''), (time, seq)) AS okey,
             bool_or({HAS_L7}) AS has_l7
      FROM gx GROUP BY conn_id)
SELECT p.* EXCLUDE (seq, {", ".join(c for c in GROUPING_COLUMNS if c != "conn_id")})
       REPLACE ({repl}),
       a.m_seq, a.m_seqs, a.obs_nodes, a.okey, a.has_l7
FROM a JOIN g p ON p.seq = a.p_seq JOIN g s ON s.seq = a.s_seq
     LEFT JOIN g l ON l.seq = a.l_seq"""


_CONN_NAMES = ", ".join(n for n, _ in CONN_COLUMNS if n != "edge_id")


def windows(times: Iterable[float]) -> list[tuple[float, float]]:
    """Disjoint ``[lo, hi]`` ranges covering ``WINDOW`` seconds around every time.

    >>> windows([100.0, 130.0, 1000.0])
    [(70.0, 160.0), (970.0, 1030.0)]
    """
    spans: list[tuple[float, float]] = []
    for t in sorted(times):
        if spans and t - WINDOW <= spans[-1][1]:
            spans[-1] = (spans[-1][0], t + WINDOW)
        else:
            spans.append((t - WINDOW, t + WINDOW))
    if len(spans) <= MAX_WINDOWS:
        return spans
    gaps = sorted(range(len(spans) - 1), key=lambda j: spans[j][1] - spans[j + 1][0])
    out, start = [], 0
    for j in sorted(gaps[:MAX_WINDOWS - 1]):   # keep the widest gaps, join across the rest
        out.append((spans[start][0], spans[j][1]))
        start = j + 1
    out.append((spans[start][0], spans[-1][1]))
    return out


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[object]) -> list[Row]:
    return [Row(*r) for r in con.execute(sql, params).fetchall()]


def register(con: duckdb.DuckDBPyConnection, name: str, values: Iterable[object],
             typ: pa.DataType) -> str:
    """Make ``values`` the one-column relation ``name`` (column ``v``); return a subquery.

    Much cheaper than a list parameter (whose conversion costs ~10 us per value).
    """
    con.register(name, pa.table({"v": pa.array(list(values), typ)}))
    return f"(SELECT v FROM {name})"


def _near(con: duckdb.DuckDBPyConnection, wins: list[tuple[float, float]], keys: set[str],
          columns: tuple[str, ...]) -> list[Row]:
    if not keys:
        return []
    span = " OR ".join("time BETWEEN ? AND ?" for _ in wins)
    params: list[object] = [x for w in wins for x in w]
    sub = register(con, "podflow_keys", sorted(keys), pa.string())
    parts = [f"SELECT {_FETCH} FROM flows WHERE ({span}) AND {c} IN {sub}" for c in columns]
    return _rows(con, " UNION ".join(parts), params * len(columns))


def _at_edge(t: float, wins: list[tuple[float, float]]) -> bool:
    """Within SPLIT_GAP of an edge of the searched windows (or outside them)."""
    i = bisect.bisect_right([w[0] for w in wins], t) - 1
    return i < 0 or t - wins[i][0] <= _GAP or wins[i][1] - t <= _GAP


def _union(a: list[tuple[float, float]], b: list[tuple[float, float]]
           ) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for lo, hi in sorted([*a, *b]):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def write_batch(con: duckdb.DuckDBPyConnection, table: pa.Table) -> None:
    """Insert a batch (``seq`` assigned) and keep grouping and ``connections`` exact."""
    cols = table.select(["seq", "time", "flow_id", "client_key", "obs_node", "obs_source",
                         "obs_instance"]).to_pydict()
    new = [Row(q, t, f, c, obs_node=n, obs_source=o, obs_instance=i)
           for q, t, f, c, n, o, i in zip(cols["seq"], cols["time"], cols["flow_id"],
                                          cols["client_key"], cols["obs_node"],
                                          cols["obs_source"], cols["obs_instance"],
                                          strict=True)]
    wins = windows(r.time for r in new)
    keys = {k for r in new for k in r.key_values()}
    stored = {r.seq: r for r in _near(con, wins, keys, ("flow_id", "client_key", "conn_key"))}
    fetch_chains(con, stored, set(keys))
    moved = choose_keys(new, list(stored.values()))
    want = {r.conn_key for r in new if r.conn_key} | {r.conn_key for r, _, _ in moved
                                                       if r.conn_key}
    want |= {k for _, k, _ in moved if k}
    for r in _near(con, wins, want - keys, ("conn_key",)):
        stored.setdefault(r.seq, r)
    ids = affected(new, moved, list(stored.values()))
    old_keys = {r.seq: k for r, k, _ in moved}
    while True:   # a changed segment reaching the searched edge: search further (rare)
        edge = [r for r in stored.values() if r.conn_id in ids and _at_edge(r.time, wins)]
        if not edge:
            break
        more = windows(r.time for r in edge)
        ekeys = {k for r in edge for k in (r.conn_key, old_keys.get(r.seq)) if k}
        for r in _near(con, more, ekeys, ("conn_key",)):
            stored.setdefault(r.seq, r)
        wins = _union(wins, more)
        ids = affected(new, moved, list(stored.values()))
    done = finish(new, moved, list(stored.values()), ids)
    update_grouping(con, done.changed)
    for name, typ, values in (
            ("conn_id", pa.int64(), [r.conn_id for r in new]),
            ("conn_key", pa.string(), [r.conn_key for r in new]),
            ("bridge_time", pa.float64(), [r.bridge_time for r in new]),
            ("bridge_seq", pa.int64(), [r.bridge_seq for r in new])):
        table = table.set_column(table.schema.get_field_index(name), name,
                                 pa.array(values, typ))
    con.register("podflow_batch", table)
    con.execute("INSERT INTO flows BY NAME SELECT * FROM podflow_batch")
    con.unregister("podflow_batch")
    refresh(con, done.gone, sorted(done.ids))


def fetch_chains(con: duckdb.DuckDBPyConnection, rows: dict[int, Row], asked: set[str]
                 ) -> None:
    """Add to ``rows`` (by ``seq``) the rest of every chain of bridges among them, searched
    around each bridge's own start; ``asked`` holds the keys already searched (updated).

    Chains are short (a hop per node a connection crossed), so this ends in a query or two.
    """
    while extra := chain_keys(rows.values()) - asked:
        asked |= extra
        around = windows(r.time for r in rows.values() if r.is_bridge()
                         and (r.flow_id in extra or r.client_key in extra))
        for r in _near(con, around, extra, ("flow_id", "client_key", "conn_key")):
            rows.setdefault(r.seq, r)


def update_grouping(con: duckdb.DuckDBPyConnection, rows: list[Row]) -> None:
    """Store the grouping columns of stored ``rows`` (whose connection or key changed)."""
    if not rows:
        return
    upd = pa.table({
        "seq": pa.array([r.seq for r in rows], pa.int64()),
        "conn_id": pa.array([r.conn_id for r in rows], pa.int64()),
        "conn_key": pa.array([r.conn_key for r in rows], pa.string()),
        "bridge_time": pa.array([r.bridge_time for r in rows], pa.float64()),
        "bridge_seq": pa.array([r.bridge_seq for r in rows], pa.int64())})
    lo, hi = min(r.seq for r in rows), max(r.seq for r in rows)
    con.register("podflow_upd", upd)
    con.execute("UPDATE flows SET conn_id = u.conn_id, conn_key = u.conn_key, "
                "bridge_time = u.bridge_time, bridge_seq = u.bridge_seq "
                "FROM podflow_upd u WHERE flows.seq = u.seq AND flows.seq BETWEEN ? AND ?",
                [lo, hi])
    con.unregister("podflow_upd")


def rows_where(con: duckdb.DuckDBPyConnection, where: str, params: list[object]) -> list[Row]:
    """The grouping columns of the stored rows matching ``where`` (SQL over ``flows``)."""
    return _rows(con, f"SELECT {_FETCH} FROM flows WHERE {where}", params)


def rows_near(con: duckdb.DuckDBPyConnection, times: Iterable[float], keys: set[str]
              ) -> list[Row]:
    """Stored rows within ``WINDOW`` of one of ``times`` whose flow_id or client_key is in
    ``keys`` (what choosing a row's key looks at)."""
    times = list(times)
    if not times:
        return []
    return _near(con, windows(times), keys, ("flow_id", "client_key"))


def refresh(con: duckdb.DuckDBPyConnection, gone: Iterable[int], seqs: list[int]) -> None:
    """Replace the merged rows of connections ``gone`` by those of the rows ``seqs``."""
    old = sorted(gone)
    if old:
        sub = register(con, "podflow_gone", old, pa.int64())
        con.execute(f"DELETE FROM connections WHERE conn_id IN {sub}")
    if seqs:
        sub = register(con, "podflow_seqs", seqs, pa.int64())
        rel = f"SELECT * FROM flows WHERE seq IN {sub}"
        con.execute(f"INSERT INTO connections ({_CONN_NAMES}) SELECT {_CONN_NAMES} FROM "
                    f"({merged_sql(rel)})")
        number_edges(con)


_BRIDGES_SQL = """CREATE TEMP TABLE podflow_bridges AS
SELECT flow_id, client_key, least(flow_id, client_key) AS canon, time AS btime, seq AS bseq
FROM flows WHERE flow_id <> '' AND client_key <> '' AND flow_id <> client_key"""

_LABEL_SQL = f"""UPDATE podflow_bridges SET canon = n.m FROM (
    SELECT bseq, min(canon) AS m FROM (
        SELECT x.bseq, y.canon FROM podflow_bridges x JOIN podflow_bridges y
            ON x.flow_id = y.client_key AND abs(x.btime - y.btime) <= {_GAP}
        UNION ALL
        SELECT x.bseq, y.canon FROM podflow_bridges x JOIN podflow_bridges y
            ON x.client_key = y.flow_id AND abs(x.btime - y.btime) <= {_GAP})
    GROUP BY bseq) n
WHERE podflow_bridges.bseq = n.bseq AND n.m < podflow_bridges.canon"""
"""One step of spreading the smallest key along chained bridges (correlate.chain_labels)."""

_KEYS_SQL = f"""
WITH bridges AS (SELECT flow_id, client_key, canon, btime, bseq FROM podflow_bridges),
bkeys AS (SELECT flow_id AS k, canon, btime, bseq FROM bridges
          UNION ALL SELECT client_key AS k, canon, btime, bseq FROM bridges),
rkeys AS (SELECT seq AS rseq, time AS rtime, flow_id AS k FROM flows WHERE flow_id <> ''
          UNION ALL SELECT seq, time, client_key FROM flows
          WHERE client_key <> '' AND client_key <> flow_id),
hit AS (SELECT rseq, arg_min({{'canon': canon, 'btime': btime, 'bseq': bseq}},
                             (abs(rtime - btime), btime, bseq)) AS b
        FROM rkeys JOIN bkeys USING (k) WHERE abs(rtime - btime) <= {_GAP} GROUP BY rseq),
keyed AS (SELECT seq, time, coalesce(hit.b.canon, nullif(flow_id, ''),
                                     nullif(client_key, '')) AS gkey,
                 hit.b.btime AS btime, hit.b.bseq AS bseq
          FROM flows LEFT JOIN hit ON hit.rseq = flows.seq),
marked AS (SELECT *, CASE WHEN time - lag(time) OVER (PARTITION BY gkey ORDER BY time, seq)
                          > {_GAP} THEN 1 ELSE 0 END AS brk FROM keyed),
split AS (SELECT *, sum(brk) OVER (PARTITION BY gkey ORDER BY time, seq
                                   ROWS UNBOUNDED PRECEDING) AS grp FROM marked)
SELECT seq, CASE WHEN gkey IS NULL THEN seq ELSE min(seq) OVER (PARTITION BY gkey, grp) END
           AS cid, gkey, btime, bseq FROM split"""


_CONFLICTS_SQL = """
WITH t AS (SELECT k.cid, f.obs_node, f.obs_source, f.obs_instance, f.flow_id, f.client_key
           FROM podflow_keys k JOIN flows f USING (seq)
           WHERE coalesce(f.obs_instance, '') <> ''),
v AS (SELECT cid, obs_node, obs_source, obs_instance, 'f' AS slot, flow_id AS k FROM t
      WHERE flow_id <> ''
      UNION ALL SELECT cid, obs_node, obs_source, obs_instance, 'c', client_key FROM t
      WHERE client_key <> ''),
bad AS (SELECT DISTINCT cid FROM (
    SELECT cid FROM v GROUP BY cid, obs_node, obs_source, slot, k
    HAVING count(DISTINCT obs_instance) > 1))
SELECT k.seq, f.time, f.flow_id, f.client_key, k.cid, k.gkey, k.btime, k.bseq, f.obs_node,
       f.obs_source, f.obs_instance
FROM podflow_keys k JOIN flows f USING (seq) WHERE k.cid IN (SELECT cid FROM bad)"""


def _cut_instances(con: duckdb.DuckDBPyConnection) -> None:
    """Cut the time-only groups of ``_KEYS_SQL`` where a vantage's second instance starts.

    SQL splits on time gaps; the instance rule needs the rows in order with what the group
    holds so far, which window functions cannot say, so the few groups concerned (a port
    reused within SPLIT_GAP) are fetched and cut by :func:`regroup`, the write path's code.
    """
    rows = _rows(con, _CONFLICTS_SQL, [])
    if not rows:
        return
    upd: dict[int, int] = {}
    for members in regroup(rows):
        cid = min(r.seq for r in members)
        upd.update((r.seq, cid) for r in members)
    con.register("podflow_cut", pa.table({"seq": list(upd), "cid": list(upd.values())}))
    con.execute("UPDATE podflow_keys SET cid = c.cid FROM podflow_cut c "
                "WHERE podflow_keys.seq = c.seq")
    con.unregister("podflow_cut")


def _changed(result: list[tuple[object, ...]]) -> bool:
    """Whether an UPDATE's result (``[(count,)]``) changed any row."""
    return bool(result) and bool(result[0][0])


def reindex(con: duckdb.DuckDBPyConnection) -> None:
    """Recompute every row's connection and the whole ``connections`` table (in bulk SQL)."""
    con.execute(_BRIDGES_SQL)
    while _changed(con.execute(_LABEL_SQL).fetchall()):   # as many steps as the longest chain
        pass
    con.execute(f"CREATE TEMP TABLE podflow_keys AS {_KEYS_SQL}")
    con.execute("DROP TABLE podflow_bridges")
    _cut_instances(con)
    con.execute("UPDATE flows SET conn_id = k.cid, conn_key = k.gkey, bridge_time = k.btime, "
                "bridge_seq = k.bseq FROM podflow_keys k WHERE flows.seq = k.seq")
    con.execute("DROP TABLE podflow_keys")
    con.execute("DELETE FROM connections")
    con.execute(f"INSERT INTO connections ({_CONN_NAMES}) SELECT {_CONN_NAMES} FROM "
                f"({merged_sql('SELECT * FROM flows', materialize=False)}) ORDER BY m_seq")
    number_edges(con)
