"""The SQL renderings of the pure query layer, over the store's columns.

:func:`to_sql` renders a :class:`~podflow.query.filter.FilterSpec` as a WHERE clause with the
exact meaning of :meth:`FilterSpec.matches <podflow.query.filter.FilterSpec.matches>` (tests
keep the two equal over a corpus); :func:`end_sql` and :func:`edge_from_row` are the SQL
side of :mod:`podflow.query.servicemap`'s map-node rules; :func:`engine_error` binds a filter's
SQL against the store's (empty) tables so front-ends refuse a value the engine would refuse
before any store is read. The columns are those of :mod:`podflow.store.schema` plus
``obs_nodes`` (the list of observing nodes of a merged flow).

Example::

    >>> where, params = to_sql(FilterSpec(to_namespace=("shop",), port=(9000, 6379)))
    >>> where
    '(dst_namespace = ?) AND (src_port = ? OR dst_port = ? OR src_port = ? OR dst_port = ?)'
    >>> params
    ['shop', 9000, 9000, 6379, 6379]
    >>> to_sql(FilterSpec(protocol=("tcp", "dns")))
    ('(protocol = ? OR dns_query IS NOT NULL)', ['TCP'])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from podflow.query.enginecheck import Engine
from podflow.query.filter import FilterSpec, net_range, ns_name, selector
from podflow.query.l7filter import CLUSTER_DOMAIN, fqdn_pattern, status_range
from podflow.query.servicemap import Edge, MapNode

Sql = tuple[str, list[Any]]


def _pod_sql(p: str, v: str) -> Sql:
    ns, prefix = ns_name(v)
    if ns is None:
        return f"starts_with({p}_pod, ?)", [prefix]
    return f"(starts_with({p}_pod, ?) AND {p}_namespace = ?)", [prefix, ns]


def _label_sql(p: str, v: str) -> Sql:
    parts, params = [], []
    for k, val in selector(v):
        if val is None:
            parts.append(f"map_contains({p}_labels, ?)")
            params.append(k)
        else:
            parts.append(f"{p}_labels[?] = ?")
            params += [k, val]
    return "(" + " AND ".join(parts) + ")", params


def _workload_sql(p: str, v: str) -> Sql:
    ns, name = ns_name(v)
    if ns is None:
        return f"{p}_workload = ?", [name]
    return f"({p}_workload = ? AND {p}_namespace = ?)", [name, ns]


END_SQL: dict[str, Callable[[str, Any], Sql]] = {
    "namespace": lambda p, v: (f"{p}_namespace = ?", [v]),
    "pod": _pod_sql,
    "label": _label_sql,
    "workload": _workload_sql,
    "ip": lambda p, v: (f"{p}_ipkey BETWEEN ? AND ?", list(net_range(v))),
    "port": lambda p, v: (f"{p}_port = ?", [v]),
}
"""The SQL twin of :data:`podflow.query.filter.END_FIELDS` (same keys; a test checks)."""

HAS_L7 = "(dns_query IS NOT NULL OR http_protocol IS NOT NULL OR l7_latency_ns IS NOT NULL)"
"""A flow row carries an L7 record (:func:`podflow.query.l7filter.has_l7`)."""
_L7_PROTOCOL = {"DNS": "dns_query IS NOT NULL", "HTTP": "http_protocol IS NOT NULL"}
_NAME_SQL = "rtrim(lower({}), '.') LIKE ? ESCAPE '\\'"
_FQDN_COLS = {"src": ["src_name"], "dst": [
    "dst_name", "dns_query", f"svc_name || '.' || svc_namespace || '.svc.{CLUSTER_DOMAIN}'"]}


def l7_sql(spec: FilterSpec) -> list[list[Sql]]:
    """The SQL alternatives of every L7/type field of ``spec`` (each list is OR-ed)."""
    out: list[list[Sql]] = []
    any_of = out.append
    for name, ends in (("fqdn", ("src", "dst")), ("from_fqdn", ("src",)),
                       ("to_fqdn", ("dst",))):
        if vals := getattr(spec, name):
            any_of([(_NAME_SQL.format(col), [fqdn_pattern(v)[1]]) for v in vals for e in ends
                    for col in _FQDN_COLS[e]])
    if spec.http_status:
        any_of([("http_code BETWEEN ? AND ?", list(status_range(v)))
                for v in spec.http_status])
    if spec.http_method:
        any_of([("upper(http_method) = ?", [m]) for m in spec.http_method])
    if spec.http_path:
        any_of([("regexp_matches(split_part(http_url, '?', 1), ?)", [p])
                for p in spec.http_path])
    if spec.dns_rcode:
        any_of([("dns_rcode = ?", [int(r)]) for r in spec.dns_rcode])
    if spec.type:
        sql = {"drop": "verdict = 'DROPPED'", "l7": HAS_L7,
               "trace": f"(verdict <> 'DROPPED' AND NOT {HAS_L7})"}
        any_of([(sql[t], []) for t in spec.type])
    return out


def _end_seen(p: str) -> str:
    node = (f"CASE WHEN {p}_kind IN ('pod', 'host-network-pod') THEN {p}_node "
            f"WHEN {p}_kind = 'node' THEN coalesce({p}_name, {p}_node) END")
    return f"({node} IS NULL OR list_contains(obs_nodes, {node}))"


REPORTED_FROM_BOTH_ENDS = (f"(coalesce(dst_kind, '') <> 'service' AND {_end_seen('src')} "
                           f"AND {_end_seen('dst')})")
"""The SQL twin of :func:`podflow.query.filter.reported_from_both_ends`."""


def to_sql(spec: FilterSpec) -> tuple[str, list[Any]]:
    """``(where_clause, params)`` with ``?`` placeholders; ``"TRUE"`` when ``spec`` is empty."""
    clauses: list[str] = []
    params: list[Any] = []

    def any_of(parts: list[Sql]) -> None:
        clauses.append("(" + " OR ".join(s for s, _ in parts) + ")")
        for _, p in parts:
            params.extend(p)

    for name, sql in END_SQL.items():
        if vals := getattr(spec, name):
            both = [sql("src", v) for v in vals]
            dst = [sql("dst", v) for v in vals]
            any_of([(f"{a[0]} OR {b[0]}", a[1] + b[1]) for a, b in zip(both, dst, strict=True)])
        for prefix, end in (("from", "src"), ("to", "dst")):
            if vals := getattr(spec, f"{prefix}_{name}"):
                any_of([sql(end, v) for v in vals])
    for vals in (spec.service, spec.to_service):
        if vals:
            parts: list[Sql] = []
            for v in vals:
                ns, svc = ns_name(v)
                parts.append(("svc_name = ?", [svc]) if ns is None else
                             ("(svc_name = ? AND svc_namespace = ?)", [svc, ns]))
            any_of(parts)
    if spec.protocol:
        any_of([(_L7_PROTOCOL[p], []) if p in _L7_PROTOCOL else ("protocol = ?", [p])
                for p in spec.protocol])
    if spec.verdict:
        any_of([("verdict = ?", [v]) for v in spec.verdict])
    if spec.node:
        any_of([("list_contains(obs_nodes, ?)", [n]) for n in spec.node])
    for part in l7_sql(spec):
        any_of(part)
    if spec.since is not None:
        any_of([("coalesce(end_time, time) >= ?", [float(spec.since)])])
    if spec.until is not None:
        any_of([("time <= ?", [float(spec.until)])])
    if spec.settled is not None:
        any_of([(f"time <= ? OR {REPORTED_FROM_BOTH_ENDS}", [float(spec.settled)])])
    return (" AND ".join(clauses) or "TRUE"), params


def _ddl() -> list[str]:
    from podflow.store.schema import DDL

    return list(DDL)


_ENGINE = Engine(_ddl)


def engine_error(spec: FilterSpec) -> str | None:
    """Why DuckDB refuses ``spec``'s SQL over the store's columns, or None when it binds."""
    where, params = to_sql(spec)
    return _ENGINE.error(f"SELECT count(*) FROM connections WHERE {where}", list(params))


def end_sql(p: str, s: str) -> str:
    """SQL columns naming one end of a flow row as a map node (``{s}_kind``, ``_ns``,
    ``_wl``, ``_key``, ``_xname``) from its columns with prefix ``p`` (``src``/``dst``);
    the rules of :func:`podflow.query.servicemap.map_node`."""
    kind = (f"CASE WHEN {p}_kind IN ('pod', 'host-network-pod') AND ({p}_workload IS NOT NULL "
            f"OR {p}_pod IS NOT NULL) THEN 'pod' WHEN {p}_kind = 'node' THEN 'node' "
            f"WHEN {p}_kind = 'external' THEN 'external' ELSE 'unknown' END")
    return (f"{kind} AS {s}_kind, "
            f"CASE WHEN {kind} = 'pod' THEN {p}_namespace END AS {s}_ns, "
            f"CASE WHEN {kind} = 'pod' THEN {p}_workload END AS {s}_wl, "
            f"CASE {kind} WHEN 'pod' THEN coalesce({p}_workload, {p}_pod) "
            f"WHEN 'node' THEN coalesce({p}_name, {p}_node, {p}_ip) ELSE {p}_ip END AS {s}_key, "
            f"CASE WHEN {kind} IN ('external', 'unknown') THEN {p}_name END AS {s}_xname")


EDGES_SQL = f"""
, ends AS (SELECT *, {end_sql("src", "s")}, {end_sql("dst", "d")},
                  CASE WHEN svc_name IS NOT NULL THEN coalesce(svc_namespace, '') || '/' ||
                  svc_name END AS service FROM matched)
SELECT s_kind, s_ns, s_wl, s_key, max(s_xname) AS s_xname,
       d_kind, d_ns, d_wl, d_key, max(d_xname) AS d_xname,
       service, dst_port AS port, protocol, count(*) AS connections,
       sum(bytes_to_dst + bytes_to_src) AS bytes, sum(packets_to_dst + packets_to_src) AS packets,
       list(DISTINCT nat_snat_ip ORDER BY nat_snat_ip)
           FILTER (WHERE d_kind = 'external' AND nat_snat_ip IS NOT NULL) AS snat,
       histogram(verdict) AS verdicts, min(time) AS first_seen,
       max(coalesce(end_time, time)) AS last_seen
FROM ends
GROUP BY s_kind, s_ns, s_wl, s_key, d_kind, d_ns, d_wl, d_key, service, dst_port, protocol
"""
"""Edge aggregation over a ``matched`` relation of merged rows (append after the CTEs): the
plain form of :func:`podflow.store.edges.edges_sql`, same output columns."""


def edge_from_row(r: Mapping[str, Any]) -> Edge:
    """An Edge from one row of :data:`EDGES_SQL` (or :func:`~podflow.store.edges.edges_sql`)."""
    ends = []
    for s in ("s", "d"):
        kind = r[f"{s}_kind"]
        if kind in ("external", "unknown"):
            ends.append(MapNode(kind, None, None, r[f"{s}_xname"], r[f"{s}_key"]))
        else:
            ends.append(MapNode(kind, r[f"{s}_ns"], r[f"{s}_wl"], r[f"{s}_key"], None))
    return Edge(ends[0], ends[1], r["service"], r["port"], r["protocol"],
                int(r["connections"]), int(r["bytes"] or 0), int(r["packets"] or 0),
                tuple(r["snat"] or ()), tuple(sorted(dict(r["verdicts"] or {}).items())),
                float(r["first_seen"]), float(r["last_seen"]))
