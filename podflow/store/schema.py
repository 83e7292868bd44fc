"""The flow store's table layout: one flattened row per observation, versioned.

Every agent writes what it saw: a :class:`~podflow.model.flow.Flow` with N observation points
becomes N rows (one per point) carrying the same connection data, and reading merges the rows
of one connection back (:mod:`podflow.pipeline.correlate`). Columns are flat so DuckDB can
filter and aggregate them; ``src_ipkey``/``dst_ipkey`` hold the address as 32 hex digits of
its IPv6 (or IPv4-mapped) form so a CIDR test is a string range.

Example::

    >>> from podflow.model.flow import Endpoint, Flow, Protocol
    >>> f = Flow(time=1.0, source=Endpoint("10.0.0.1", 1), destination=Endpoint("10.0.0.2", 2),
    ...          protocol=Protocol.TCP)
    >>> rows = flow_to_rows(f)
    >>> row_to_flow(rows[0]) == f
    True
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import pyarrow as pa

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

STORE_SCHEMA_VERSION = 3
"""Version of the table layout; a store with a higher one is refused, an older one upgraded.

1: ``flows`` only. 2: ``flows`` carries each row's connection (``conn_id`` and how it was
grouped, :data:`GROUPING_COLUMNS`) and ``connections`` holds one merged row per connection
(see :mod:`podflow.store.connections`). 3: rows name the kernel object their source tracked
(``obs_instance``), which splits a reused port's connections; older rows have none.
"""

_S, _I, _B, _F = pa.string(), pa.int32(), pa.int64(), pa.float64()
_LABELS = pa.map_(pa.string(), pa.string())


def _end(p: str) -> list[tuple[str, pa.DataType]]:
    return [(f"{p}_ip", _S), (f"{p}_ipkey", _S), (f"{p}_port", _I), (f"{p}_kind", _S),
            (f"{p}_namespace", _S), (f"{p}_pod", _S), (f"{p}_workload_kind", _S),
            (f"{p}_workload", _S), (f"{p}_labels", _LABELS), (f"{p}_node", _S),
            (f"{p}_name", _S)]


COLUMNS: list[tuple[str, pa.DataType]] = [
    ("seq", _B), ("flow_id", _S), ("time", _F), ("end_time", _F), ("state", _S),
    ("protocol", _S), *_end("src"), *_end("dst"),
    ("svc_namespace", _S), ("svc_name", _S), ("svc_port_name", _S), ("svc_type", _S),
    ("svc_frontend_ip", _S), ("svc_frontend_port", _I),
    ("nat_orig_dst_ip", _S), ("nat_orig_dst_port", _I), ("nat_snat_ip", _S),
    ("nat_snat_port", _I),
    ("packets_to_dst", _B), ("bytes_to_dst", _B), ("packets_to_src", _B), ("bytes_to_src", _B),
    ("tcp_state", _S), ("tcp_flags", pa.list_(pa.string())), ("rtt_us", _F),
    ("verdict", _S), ("drop_reason", _S), ("is_reply", pa.bool_()),
    ("obs_node", _S), ("obs_source", _S), ("obs_original", _S), ("obs_reply", _S),
    ("obs_instance", _S),
    ("cni_profile", _S), ("ingested_at", _F), ("client_key", _S),
    ("l7_latency_ns", _B), ("dns_query", _S), ("dns_qtypes", pa.list_(pa.string())),
    ("dns_rcode", _I), ("dns_ips", pa.list_(pa.string())), ("dns_ttl", _B),
    ("dns_cnames", pa.list_(pa.string())), ("http_method", _S), ("http_url", _S),
    ("http_host", _S), ("http_code", _I), ("http_protocol", _S),
    ("conn_id", _B), ("conn_key", _S), ("bridge_time", _F), ("bridge_seq", _B),
]
"""Every column of the ``flows`` table, in order, with its Arrow type."""

GROUPING_COLUMNS = ("conn_id", "conn_key", "bridge_time", "bridge_seq")
"""The columns the store fills when a row is written (see :mod:`podflow.store.grouping`):
the row's connection (the ``seq`` of one of its rows), its group key and the bridge that
chose it. Not part of a Flow."""

CONN_EXTRA: list[tuple[str, str]] = [
    ("conn_id", "BIGINT"), ("m_seq", "BIGINT"), ("m_seqs", "BIGINT[]"),
    ("obs_nodes", "VARCHAR[]"), ("okey", "VARCHAR"), ("has_l7", "BOOLEAN"),
    ("edge_id", "BIGINT")]
"""Columns of ``connections`` besides the merged flow's: its id, newest row, rows, observing
nodes, order key (the first row's ``flow_id or client_key``), whether a row has L7 and its
service-map edge ends (``edge_ends``, see :mod:`podflow.store.edges`)."""

ARROW_SCHEMA = pa.schema([pa.field(n, t) for n, t in COLUMNS])
"""The Arrow schema a write batch is built with."""

_SQL_TYPES = {_S: "VARCHAR", _I: "INTEGER", _B: "BIGINT", _F: "DOUBLE", pa.bool_(): "BOOLEAN",
              _LABELS: "MAP(VARCHAR, VARCHAR)", pa.list_(pa.string()): "VARCHAR[]"}

CONN_COLUMNS: list[tuple[str, str]] = CONN_EXTRA + [
    (n, _SQL_TYPES[t]) for n, t in COLUMNS if n != "seq" and n not in GROUPING_COLUMNS]
"""Every column of the ``connections`` table (one merged row per connection) and its type."""

CONNECTIONS_DDL = ("CREATE TABLE IF NOT EXISTS connections ("
                   + ", ".join(f"{n} {t}" for n, t in CONN_COLUMNS) + ")")
"""The materialised merged connections (maintained by every write)."""

EDGE_END_COLUMNS = [f"{p}_{c}" for p in ("src", "dst") for c in (
    "kind", "namespace", "workload", "pod", "name", "node", "ip")] + [
    "svc_namespace", "svc_name", "dst_port", "protocol"]
"""What a service-map edge's ends are made of (every column the map-node rules read)."""

EDGE_ENDS_DDL = ("CREATE TABLE IF NOT EXISTS edge_ends (edge_id BIGINT, " + ", ".join(
    f"{c} {dict(CONN_COLUMNS)[c]}" for c in EDGE_END_COLUMNS) + ")")
"""The distinct edge ends of the store's connections, numbered (``connections.edge_id``)."""

DDL = [
    "CREATE TABLE IF NOT EXISTS podflow_meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
    "CREATE TABLE IF NOT EXISTS flows ("
    + ", ".join(f"{n} {_SQL_TYPES[t]}" for n, t in COLUMNS) + ")",
    CONNECTIONS_DDL, EDGE_ENDS_DDL,
]
"""Statements creating an empty store (the version row is inserted separately).

There is deliberately no ART index: agents append roughly in time order, so DuckDB's per
row-group min/max (zone maps) already prune time and ``seq`` ranges, and inserts stay cheap.
"""

V2_UPGRADE = ["ALTER TABLE flows ADD COLUMN IF NOT EXISTS obs_instance VARCHAR",
              "ALTER TABLE connections ADD COLUMN IF NOT EXISTS obs_instance VARCHAR"]
"""Statements turning a version 2 layout into this one (rows without an instance never split
a connection, so the grouping stays as it was)."""

V1_UPGRADE = [f"ALTER TABLE flows ADD COLUMN {n} {_SQL_TYPES[t]}"
              for n, t in COLUMNS if n in (*GROUPING_COLUMNS, "obs_instance")] + [
                  CONNECTIONS_DDL, EDGE_ENDS_DDL]
"""Statements turning a version 1 layout into this one (the rows are then re-indexed)."""


STATUS_DDL = ("CREATE TABLE IF NOT EXISTS agent_status (time DOUBLE, node VARCHAR, "
              "status VARCHAR)")
"""Agents' health reports (one JSON document per report), read by ``statuses()``."""


@lru_cache(maxsize=65536)
def ip_key(ip: str) -> str:
    """The address as 32 hex digits (IPv4 mapped into ``::ffff:0:0/96``); ValueError if bad.

    >>> ip_key("10.0.0.1")
    '00000000000000000000ffff0a000001'
    """
    addr = ipaddress.ip_address(ip)
    n = int(addr) | (0xFFFF << 32) if addr.version == 4 else int(addr)
    return format(n, "032x")


def cidr_key_range(cidr: str) -> tuple[str, str]:
    """First and last :func:`ip_key` of a CIDR or single address; ValueError if bad.

    >>> cidr_key_range("10.0.0.0/8")[1]
    '00000000000000000000ffff0affffff'
    """
    net = ipaddress.ip_network(cidr, strict=False)
    return ip_key(str(net.network_address)), ip_key(str(net.broadcast_address))


def _end_values(p: str, e: Endpoint) -> dict[str, Any]:
    if not isinstance(e.ip, str):
        raise ValueError(f"{p} ip {e.ip!r} is not a string")
    if e.port is not None and not (isinstance(e.port, int) and 0 <= e.port <= 65535):
        raise ValueError(f"{p} port {e.port!r} is not an integer 0-65535")
    labels = [(str(k), str(v)) for k, v in e.labels]
    return {
        f"{p}_ip": e.ip, f"{p}_ipkey": ip_key(e.ip), f"{p}_port": e.port,
        f"{p}_kind": EndpointKind(e.kind).value, f"{p}_namespace": e.namespace,
        f"{p}_pod": e.pod_name,
        f"{p}_workload_kind": e.workload.kind if e.workload else None,
        f"{p}_workload": e.workload.name if e.workload else None,
        f"{p}_labels": labels, f"{p}_node": e.node_name, f"{p}_name": e.name,
    }


def _l7_values(l7: L7 | None) -> dict[str, Any]:
    dns = l7.dns if l7 else None
    http = l7.http if l7 else None
    return {
        "l7_latency_ns": l7.latency_ns if l7 else None,
        "dns_query": dns.query if dns else None,
        "dns_qtypes": list(dns.qtypes) if dns else None,
        "dns_rcode": dns.rcode if dns else None, "dns_ips": list(dns.ips) if dns else None,
        "dns_ttl": dns.ttl if dns else None, "dns_cnames": list(dns.cnames) if dns else None,
        "http_method": http.method if http else None, "http_url": http.url if http else None,
        "http_host": http.host if http else None, "http_code": http.code if http else None,
        "http_protocol": http.protocol if http else None,
    }


def _l7_from(c: Mapping[str, Sequence[Any]], i: int) -> L7 | None:
    dns = http = None
    if c["dns_query"][i] is not None:
        dns = DnsInfo(c["dns_query"][i], tuple(c["dns_qtypes"][i] or ()), c["dns_rcode"][i],
                      tuple(c["dns_ips"][i] or ()), c["dns_ttl"][i],
                      tuple(c["dns_cnames"][i] or ()))
    if c["http_protocol"][i] is not None:
        http = HttpInfo(c["http_method"][i], c["http_url"][i], c["http_host"][i],
                        c["http_code"][i], c["http_protocol"][i])
    if dns is None and http is None and c["l7_latency_ns"][i] is None:
        return None
    return L7(dns, http, c["l7_latency_ns"][i])


def flow_to_rows(f: Flow, ingested_at: float = 0.0) -> list[dict[str, Any]]:
    """One row per observation point (one row if there is none); ValueError if unstorable.

    ``seq`` and the :data:`GROUPING_COLUMNS` are left None: the store assigns them when the
    batch is committed.
    """
    svc, nat, tr = f.destination_service, f.nat, f.traffic
    base: dict[str, Any] = {
        "seq": None, "flow_id": str(f.flow_id), "time": float(f.time),
        "end_time": None if f.end_time is None else float(f.end_time),
        "state": FlowState(f.state).value, "protocol": Protocol(f.protocol).value,
        **_end_values("src", f.source), **_end_values("dst", f.destination),
        "svc_namespace": svc.namespace if svc else None, "svc_name": svc.name if svc else None,
        "svc_port_name": svc.port_name if svc else None, "svc_type": svc.type if svc else None,
        "svc_frontend_ip": svc.frontend_ip if svc else None,
        "svc_frontend_port": svc.frontend_port if svc else None,
        "nat_orig_dst_ip": nat.original_destination.ip if nat.original_destination else None,
        "nat_orig_dst_port": nat.original_destination.port if nat.original_destination else None,
        "nat_snat_ip": nat.translated_source.ip if nat.translated_source else None,
        "nat_snat_port": nat.translated_source.port if nat.translated_source else None,
        "packets_to_dst": int(tr.to_destination.packets),
        "bytes_to_dst": int(tr.to_destination.bytes),
        "packets_to_src": int(tr.to_source.packets), "bytes_to_src": int(tr.to_source.bytes),
        "tcp_state": f.tcp.state if f.tcp else None,
        "tcp_flags": list(f.tcp.flags) if f.tcp else None,
        "rtt_us": None if f.rtt_us is None else float(f.rtt_us),
        "verdict": Verdict(f.verdict).value, "drop_reason": f.drop_reason_desc,
        "is_reply": bool(f.is_reply), "cni_profile": f.cni_profile,
        "ingested_at": ingested_at, "client_key": str(f.client_key),
        **_l7_values(f.l7), **dict.fromkeys(GROUPING_COLUMNS),
    }
    points: Sequence[ObservationPoint | None] = f.observations or (None,)
    rows = []
    for o in points:
        row = dict(base)
        row.update(obs_node=o.node_name if o else None, obs_source=o.source if o else None,
                   obs_original=o.original if o else None, obs_reply=o.reply if o else None,
                   obs_instance=(o.instance or None) if o else None)
        rows.append(row)
    return rows


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Build the Arrow table of a write batch (raises if a value does not fit its type)."""
    return pa.table({n: pa.array([r[n] for r in rows], type=t) for n, t in COLUMNS},
                    schema=ARROW_SCHEMA)


_KINDS = {k.value: k for k in EndpointKind}
_PROTOS = {p.value: p for p in Protocol}
_VERDICTS = {v.value: v for v in Verdict}
_STATES = {s.value: s for s in FlowState}


def _labels(v: Any) -> tuple[tuple[str, str], ...]:
    if not v:
        return ()
    items = v.items() if isinstance(v, dict) else v
    return tuple(sorted((str(k), str(val)) for k, val in items))


def _addr(ip: str | None, port: int | None) -> Address | None:
    return None if ip is None else Address(ip, port)


def columns_to_flows(cols: Mapping[str, Sequence[Any]]) -> list[Flow]:
    """The single-observation Flows of rows given column-wise (``{column: values}``).

    Identical endpoints and services are shared between flows (they are immutable), which
    keeps reading 100k rows fast.
    """
    n = len(cols["time"])
    cache: dict[Any, Any] = {}

    def shared(obj: Any) -> Any:
        return cache.setdefault(obj, obj)

    ends: dict[str, list[Endpoint]] = {}
    for p in ("src", "dst"):
        ip, port, kind, ns, pod = (cols[f"{p}_{c}"] for c in ("ip", "port", "kind",
                                                                  "namespace", "pod"))
        wk, wn, lab, node, name = (cols[f"{p}_{c}"] for c in ("workload_kind", "workload",
                                                                  "labels", "node", "name"))
        ends[p] = [shared(Endpoint(
            ip[i], port[i], _KINDS[kind[i]], ns[i], pod[i],
            shared(Workload(wk[i] or "", wn[i])) if wn[i] is not None else None,
            shared(_labels(lab[i])), node[i], name[i])) for i in range(n)]
    c = cols
    out = []
    for i in range(n):
        svc = None
        if c["svc_name"][i] is not None:
            svc = shared(Service(c["svc_namespace"][i] or "", c["svc_name"][i],
                                 c["svc_port_name"][i], c["svc_type"][i] or "ClusterIP",
                                 c["svc_frontend_ip"][i], c["svc_frontend_port"][i]))
        obs: tuple[ObservationPoint, ...] = ()
        if c["obs_node"][i] is not None:
            obs = (ObservationPoint(c["obs_node"][i], c["obs_source"][i] or "",
                                    c["obs_original"][i], c["obs_reply"][i],
                                    c["obs_instance"][i] or ""),)
        flags = c["tcp_flags"][i]
        out.append(Flow(
            time=c["time"][i], end_time=c["end_time"][i], state=_STATES[c["state"][i]],
            source=ends["src"][i], destination=ends["dst"][i],
            protocol=_PROTOS[c["protocol"][i]], destination_service=svc,
            nat=Nat(_addr(c["nat_orig_dst_ip"][i], c["nat_orig_dst_port"][i]),
                    _addr(c["nat_snat_ip"][i], c["nat_snat_port"][i])),
            traffic=Traffic(Counters(c["packets_to_dst"][i], c["bytes_to_dst"][i]),
                            Counters(c["packets_to_src"][i], c["bytes_to_src"][i])),
            tcp=None if flags is None else TcpInfo(c["tcp_state"][i], tuple(flags)),
            rtt_us=c["rtt_us"][i], verdict=_VERDICTS[c["verdict"][i]],
            drop_reason_desc=c["drop_reason"][i], is_reply=bool(c["is_reply"][i]),
            observations=obs, cni_profile=c["cni_profile"][i], flow_id=c["flow_id"][i],
            client_key=c["client_key"][i] or "", l7=_l7_from(c, i)))
    return out


def row_to_flow(r: Mapping[str, Any]) -> Flow:
    """The single-observation Flow one row (``{column: value}``) stands for."""
    return columns_to_flows({k: [v] for k, v in r.items()})[0]
