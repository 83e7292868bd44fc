"""The flow store's table layout: one flattened row per observation, versioned.

Every agent writes what it saw: a :class:`~podflow.model.flow.Flow` with N observation points
becomes N rows (one per point) carrying the same connection data, and reading merges the rows
of one connection back (:mod:`podflow.store.correlate`). Columns are flat so DuckDB can
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

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from podflow.model import fields
from podflow.model.fields import compile_function
from podflow.model.flow import Flow
from podflow.model.ipkey import ip_key

STORE_SCHEMA_VERSION = 4
"""Version of the table layout; a store with a higher one is refused, an older one upgraded.

1: ``flows`` only. 2: ``flows`` carries each row's connection (``conn_id`` and how it was
grouped, :data:`GROUPING_COLUMNS`) and ``connections`` holds one merged row per connection
(see :mod:`podflow.store.connections`). 3: rows name the kernel object their source tracked
(``obs_instance``), which splits a reused port's connections; older rows have none.
4: DNS records count their query messages and list each response's code (``dns_queries``,
``dns_rcodes``); older rows have neither.
"""

_S, _I, _B, _F = pa.string(), pa.int32(), pa.int64(), pa.float64()
_LABELS = pa.map_(pa.string(), pa.string())
_ARROW_TYPES = {"VARCHAR": _S, "INTEGER": _I, "BIGINT": _B, "DOUBLE": _F,
                "BOOLEAN": pa.bool_(), "MAP(VARCHAR, VARCHAR)": _LABELS,
                "VARCHAR[]": pa.list_(pa.string()), "INTEGER[]": pa.list_(pa.int32())}

GROUPING_COLUMNS = ("conn_id", "conn_key", "bridge_time", "bridge_seq")
"""The columns the store fills when a row is written (see :mod:`podflow.store.grouping`):
the row's connection (the ``seq`` of one of its rows), its group key and the bridge that
chose it. Not part of a Flow."""

_STORE_ONLY = {"seq": "BIGINT", "ingested_at": "DOUBLE", "conn_id": "BIGINT",
               "conn_key": "VARCHAR", "bridge_time": "DOUBLE", "bridge_seq": "BIGINT"}


def _layout() -> list[tuple[str, str]]:
    """The ``flows`` columns: the Flow's (:data:`podflow.model.fields.FLOW`, in its order)
    and the store's own, placed as earlier versions placed them: ``seq`` first, ``protocol``
    before the endpoints, ``ingested_at`` after ``cni_profile``, the grouping columns last.
    A new field goes where the table puts it (``ALTER TABLE ... ADD COLUMN`` appends it in
    older stores, which is fine: rows are written and read by name)."""
    cols = list(fields.columns(fields.FLOW))
    proto = next(c for c in cols if c[0] == "protocol")
    cols.remove(proto)
    cols.insert(cols.index(("src_ip", "VARCHAR")), proto)
    cols.insert(cols.index(("cni_profile", "VARCHAR")) + 1,
                ("ingested_at", _STORE_ONLY["ingested_at"]))
    return [("seq", _STORE_ONLY["seq"]), *cols, *((c, _STORE_ONLY[c]) for c in GROUPING_COLUMNS)]


COLUMNS: list[tuple[str, pa.DataType]] = [(n, _ARROW_TYPES[t]) for n, t in _layout()]
"""Every column of the ``flows`` table, in order, with its Arrow type."""

CONN_EXTRA: list[tuple[str, str]] = [
    ("conn_id", "BIGINT"), ("m_seq", "BIGINT"), ("m_seqs", "BIGINT[]"),
    ("obs_nodes", "VARCHAR[]"), ("okey", "VARCHAR"), ("has_l7", "BOOLEAN"),
    ("edge_id", "BIGINT")]
"""Columns of ``connections`` besides the merged flow's: its id, newest row, rows, observing
nodes, order key (the first row's ``flow_id or client_key``), whether a row has L7 and its
service-map edge ends (``edge_ends``, see :mod:`podflow.store.edges`)."""

ARROW_SCHEMA = pa.schema([pa.field(n, t) for n, t in COLUMNS])
"""The Arrow schema a write batch is built with."""

_SQL_TYPES = {t: n for n, t in _ARROW_TYPES.items()}

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

_ADDED = {2: ("obs_instance",), 3: ("dns_queries", "dns_rcodes")}
"""Flow columns each version after 2 added (``_ADDED[v]``: what v + 1 has and v lacks)."""


def upgrade_from(version: int) -> list[str]:
    """Statements turning a version 2 (or later) layout into this one: the columns added
    since, in both tables (older rows have none of them: a row without an instance never
    splits a connection, a DNS record without counts is one query and its one response)."""
    types = dict(COLUMNS)
    return [f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {n} {_SQL_TYPES[types[n]]}"
            for v in range(version, STORE_SCHEMA_VERSION) for n in _ADDED[v]
            for table in ("flows", "connections")]


V1_UPGRADE = [f"ALTER TABLE flows ADD COLUMN {n} {_SQL_TYPES[t]}"
              for n, t in COLUMNS
              if n in GROUPING_COLUMNS or any(n in added for added in _ADDED.values())] + [
                  CONNECTIONS_DDL, EDGE_ENDS_DDL]
"""Statements turning a version 1 layout into this one (the rows are then re-indexed)."""


STATUS_DDL = ("CREATE TABLE IF NOT EXISTS agent_status (time DOUBLE, node VARCHAR, "
              "status VARCHAR)")
"""Agents' health reports (one JSON document per report), read by ``statuses()``."""

FEED_DDL = ("CREATE TABLE IF NOT EXISTS feed_cursors (node VARCHAR PRIMARY KEY, "
            "epoch VARCHAR, seq BIGINT, time DOUBLE)")
"""A hub's cursor in each agent's spool (:mod:`podflow.cluster.feed`), committed with the
flows it covers, read by ``feed_cursors()``."""


class _RowGen:
    """Python source of :func:`flow_to_rows` and :func:`columns_to_flows` from the table."""

    def __init__(self) -> None:
        self.n = 0
        self.pending: dict[str, str] = {}  # nested object -> its binding, until first used
        self.values: dict[str, str] = {}  # column -> expression (writing)
        self.per_point: dict[str, str] = {}  # the ``many`` struct's columns (writing)
        self.many: tuple[fields.Field, str] | None = None
        self.reads: dict[str, int] = {}  # columns read back, numbered

    def var(self) -> str:
        self.n += 1
        return f"_n{self.n}"

    def ref(self, v: str) -> str:
        """``v``, bound where first used (``(v := f.source)``): values are computed in
        column order, so the first unstorable one is the one reported."""
        bind = self.pending.pop(v, None)
        return v if bind is None else f"({v} := {bind})"

    def write(self, s: fields.Struct, obj: str, prefix: str, maybe_none: bool,
              out: dict[str, str]) -> None:
        for f in s.fields:
            col = f.column.format(p=prefix)
            if f.struct is not None and f.many:
                if self.many is not None:
                    raise TypeError("one field of a Flow may hold many structs (rows)")
                self.many = (f, col)
                self.write(f.struct, "_o", col, True, self.per_point)
            elif f.struct is not None:
                v = self.var()
                self.pending[v] = (f"{obj}.{f.attr} if {self.ref(obj)} else None" if maybe_none
                                   else f"{self.ref(obj)}.{f.attr}")
                self.write(f.struct, v, col, maybe_none or f.optional, out)
            elif maybe_none:
                test = self.ref(obj)
                expr = f.codec.to_column.format(x=f"{obj}.{f.attr}", p=prefix)
                out[col] = f"({expr} if {test} else None)"
            else:
                expr = f.codec.to_column.format(x=f"{self.ref(obj)}.{f.attr}", p=prefix)
                out[col] = expr

    def read(self, s: fields.Struct, prefix: str) -> str:
        args = [(f.attr, self.read_field(f, prefix)) for f in s.fields if not f.index]
        call = f"{s.cls.__name__}({_arguments(s.cls, args)})"
        return f"_shared({call})" if s.shared else call

    def read_field(self, f: fields.Field, prefix: str) -> str:
        col = f.column.format(p=prefix)
        if f.struct is None:
            x = self.column(col)
            if f.fill is not fields.NO_FILL:
                x = f"({x} or {f.fill!r})"
            return f.codec.from_column.format(x=x, p=prefix)
        st = f.struct
        if not (f.optional or f.many):
            return self.read(st, col)
        if st.present is None:
            if st.shared or f.many:
                raise TypeError(f"{st.cls.__name__}: declare which field is present")
            return self.any_of(st, col)
        pf = next(x for x in st.fields if x.attr == st.present)
        test = f"{self.column(pf.column.format(p=col))} is not None"
        expr = self.read(st, col)
        return f"(({expr},) if {test} else ())" if f.many else f"({expr} if {test} else None)"

    def any_of(self, s: fields.Struct, prefix: str) -> str:
        """An optional struct that is there when any of its fields is (not None)."""
        self.n += 1
        t = f"_t{self.n}"
        parts: list[str] = []
        args: list[tuple[str, str]] = []
        for f in s.fields:
            if not f.index:
                args.append((f.attr, f"{t}[{len(parts)}]"))
                parts.append(self.read_field(f, prefix))
        call = f"{s.cls.__name__}({_arguments(s.cls, args)})"
        return (f"({call} if ({t} := ({', '.join(parts)},)).count(None) != {len(parts)} "
                "else None)")

    def column(self, name: str) -> str:
        return f"_c{self.reads.setdefault(name, len(self.reads))}[i]"


def _arguments(cls: type, args: list[tuple[str, str]]) -> str:
    """Positional when in the class's order (faster), by keyword otherwise."""
    names = [f.name for f in dataclasses.fields(cls)]
    if [a for a, _ in args] == names[:len(args)]:
        return ", ".join(e for _, e in args)
    return ", ".join(f"{a}={e}" for a, e in args)


def _check_ip(p: str, ip: Any) -> Any:
    if not isinstance(ip, str):
        raise ValueError(f"{p} ip {ip!r} is not a string")
    return ip


def _check_port(p: str, port: Any) -> Any:
    if port is not None and not (isinstance(port, int) and 0 <= port <= 65535):
        raise ValueError(f"{p} port {port!r} is not an integer 0-65535")
    return port


def _labels(v: Any) -> tuple[tuple[str, str], ...]:
    if not v:
        return ()
    items = v.items() if isinstance(v, dict) else v
    return tuple(sorted((str(k), str(val)) for k, val in items))


def _compile_rows() -> tuple[Callable[..., list[dict[str, Any]]],
                             Callable[[Mapping[str, Sequence[Any]]], list[Flow]]]:
    g = _RowGen()
    g.write(fields.FLOW, "f", "", False, g.values)
    values = {**g.values, "seq": "None", "ingested_at": "ingested_at",
              **dict.fromkeys(GROUPING_COLUMNS, "None")}
    if g.many is None or set(values) | set(g.per_point) != {n for n, _ in COLUMNS}:
        raise TypeError("the field table and the store's columns disagree")
    base = ", ".join(f"{n!r}: {values[n]}" for n, _ in COLUMNS if n not in g.per_point)
    point = ", ".join(f"{n!r}: {e}" for n, e in g.per_point.items())
    to_rows = compile_function("flow_to_rows", (
        "def flow_to_rows(f, ingested_at=0.0):\n"
        + f"    base = {{{base}}}\n    rows = []\n"
        + f"    for _o in f.{g.many[0].attr} or (None,):\n"
        + f"        row = dict(base)\n        row.update({{{point}}})\n        rows.append(row)\n"
        + "    return rows\n"), {"ip_key": ip_key, "_check_ip": _check_ip,
                               "_check_port": _check_port})
    flow = g.read(fields.FLOW, "")
    cols = "".join(f"    _c{k} = cols[{n!r}]\n" for n, k in g.reads.items())
    to_flows = compile_function("columns_to_flows", (
        "def columns_to_flows(cols):\n    setdefault = {}.setdefault\n\n"
        "    def _shared(obj):\n        return setdefault(obj, obj)\n\n" + cols
        + "    out = []\n    append = out.append\n"
        + f"    for i in range(len(cols['time'])):\n        append({flow})\n    return out\n"),
        {"_labels": _labels})
    return to_rows, to_flows


_flow_to_rows, _columns_to_flows = _compile_rows()


def flow_to_rows(f: Flow, ingested_at: float = 0.0) -> list[dict[str, Any]]:
    """One row per observation point (one row if there is none); ValueError if unstorable.

    ``seq`` and the :data:`GROUPING_COLUMNS` are left None: the store assigns them when the
    batch is committed. Compiled from :data:`podflow.model.fields.FLOW` (its source is
    ``_flow_to_rows.__source__``).
    """
    rows: list[dict[str, Any]] = _flow_to_rows(f, ingested_at)
    return rows


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Build the Arrow table of a write batch (raises if a value does not fit its type)."""
    return pa.table({n: pa.array([r[n] for r in rows], type=t) for n, t in COLUMNS},
                    schema=ARROW_SCHEMA)


def columns_to_flows(cols: Mapping[str, Sequence[Any]]) -> list[Flow]:
    """The single-observation Flows of rows given column-wise (``{column: values}``).

    Identical endpoints and services are shared between flows (they are immutable), which
    keeps reading 100k rows fast. Compiled from :data:`podflow.model.fields.FLOW`.
    """
    flows: list[Flow] = _columns_to_flows(cols)
    return flows


def row_to_flow(r: Mapping[str, Any]) -> Flow:
    """The single-observation Flow one row (``{column: value}``) stands for."""
    return columns_to_flows({k: [v] for k, v in r.items()})[0]
