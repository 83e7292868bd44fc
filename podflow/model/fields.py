"""Every field of a Flow, declared once: its attribute, JSON key, store column and codec.

:data:`FLOW` is a tree of :class:`Struct` (a value object) and :class:`Field` (one of its
attributes). The JSON form (:mod:`podflow.model.serialize`) and the store's flat rows
(:mod:`podflow.store.schema`) are both derived from it, as mitmproxy's ``stateobject.py``
derives its state from one attribute list: adding a field to the Flow is one entry here (plus
a bump of ``SCHEMA_VERSION`` / ``STORE_SCHEMA_VERSION`` and, for the store, an upgrade
statement).

- The JSON key is the attribute name; JSON objects list their keys in the order declared here.
- ``column`` is a template: ``{p}`` is the prefix its parent gives (``src``/``dst`` for the
  two endpoints), so one :class:`Struct` serves several places. A nested struct's ``column``
  is the prefix of its children; a ``many`` struct (observations) becomes one row each.
- A :class:`Codec` says, as Python expression templates over ``{x}`` (the value) and ``{p}``
  (the column prefix), how a value crosses each boundary. The codecs are compiled into plain
  functions once, at import, so they run as fast as hand-written ones.

Example::

    >>> [f.attr for f in FLOW.fields][:4]
    ['flow_id', 'time', 'end_time', 'state']
    >>> [c for c, _ in columns(ENDPOINT, "src")][:3]
    ['src_ip', 'src_ipkey', 'src_port']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

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


@dataclass(frozen=True, slots=True)
class Codec:
    """How a value is written and read at each boundary (expression templates)."""

    to_json: str = "{x}"
    from_json: str = "{x}"
    to_column: str = "{x}"
    from_column: str = "{x}"


PLAIN = Codec()
"""Strings, optional numbers: the value as it is everywhere."""
TEXT = Codec(to_column="str({x})")
"""A string the store coerces (ids)."""
FLOAT = Codec(from_json="float({x})", to_column="float({x})")
"""A required float."""
OPT_FLOAT = Codec(to_column="None if {x} is None else float({x})")
"""An optional float."""
INT = Codec(to_column="int({x})")
"""A counter."""
BOOL = Codec(from_json="bool({x})", to_column="bool({x})", from_column="bool({x})")
"""A flag."""
STRS = Codec("list({x})", "tuple({x})", "list({x})", "tuple({x})")
"""A tuple of strings: a JSON list, a ``VARCHAR[]`` column."""
LABELS = Codec("dict({x})", "tuple(sorted({x}.items()))",
               "[(str(k), str(v)) for k, v in {x}]", "_shared(_labels({x}))")
"""Sorted (key, value) pairs: a JSON object, a ``MAP`` column."""
IP = Codec(to_column="_check_ip({p!r}, {x})")
"""An endpoint's address (the store refuses a non-string)."""
IP_KEY = Codec(to_column="ip_key({x})")
"""The address as a sortable key (an index column, see :func:`podflow.store.schema.ip_key`)."""
PORT = Codec(to_column="_check_port({p!r}, {x})")
"""An endpoint's port (the store refuses one outside 0-65535)."""
EMPTY_IS_NULL = Codec(to_column="({x} or None)")
"""A string whose empty value is stored as NULL."""


def enum_codec(cls: type[Enum]) -> Codec:
    """An enum: its value in JSON and in the store (``_<Name>`` maps values back)."""
    n = cls.__name__
    return Codec("{x}.value", f"{n}({{x}})", f"{n}({{x}}).value", f"_{n}[{{x}}]")


ENUMS: tuple[type[Enum], ...] = (EndpointKind, FlowState, Protocol, Verdict)
"""The enums codecs refer to (compiled code finds ``Name`` and ``_Name`` for each)."""

NO_FILL: Any = object()
"""``Field.fill`` when a NULL column is read as None."""


@dataclass(frozen=True, slots=True)
class Field:
    """One attribute of a value object."""

    attr: str
    """Attribute name, and the key in JSON."""
    column: str
    """Store column (a template over the parent's prefix ``{p}``); a prefix for a struct."""
    sql: str = "VARCHAR"
    """Column type (DuckDB SQL)."""
    codec: Codec = PLAIN
    """How the value crosses each boundary."""
    json: Literal["get", "req", "or"] = "get"
    """Reading JSON: a missing key means the default (``get``) or is malformed (``req``);
    ``or``: a null or empty value means the default too."""
    fill: Any = NO_FILL
    """Reading the store: the value a NULL column stands for (default: NULL is None)."""
    struct: Struct | None = None
    """The nested value object's declaration, when this field holds one."""
    optional: bool = False
    """The nested value object may be None."""
    many: bool = False
    """A tuple of nested value objects: a JSON list, and one store row each."""
    index: bool = False
    """A column computed from the attribute for queries: not in JSON, never read back."""


@dataclass(frozen=True, slots=True)
class Struct:
    """A value object: its class and fields (JSON order, which is also column order)."""

    cls: type
    fields: tuple[Field, ...]
    present: str | None = None
    """For an optional struct, the field whose non-NULL column says it is there; None: any
    field or nested struct being there does."""
    shared: bool = False
    """Equal instances read from the store are shared (they are immutable)."""
    strict: bool = False
    """Reading JSON, an unknown key is malformed (the object is built with ``cls(**d)``)."""

    def default_json(self, f: Field) -> Any:
        """The JSON value meaning the dataclass default of ``f`` (for ``get``/``or``)."""
        fd = {x.name: x for x in dataclasses.fields(self.cls)}[f.attr]
        if fd.default is not dataclasses.MISSING:
            value = fd.default
        elif fd.default_factory is not dataclasses.MISSING:
            value = fd.default_factory()
        else:
            raise TypeError(f"{self.cls.__name__}.{f.attr} has no default: declare it 'req'")
        if f.struct is not None:
            raise TypeError(f"{self.cls.__name__}.{f.attr} holds a struct: it has no JSON default")
        if value is None:
            return None
        return eval(f.codec.to_json.format(x="_v", p=""), dict(NAMESPACE), {"_v": value})


NAMESPACE: dict[str, Any] = {
    c.__name__: c for c in (L7, Address, Counters, DnsInfo, Endpoint, Flow, HttpInfo, Nat,
                            ObservationPoint, Service, TcpInfo, Traffic, Workload, *ENUMS)}
NAMESPACE.update({f"_{e.__name__}": {m.value: m for m in e} for e in ENUMS})
"""Names compiled codecs may use (the model classes, and enum lookups by value)."""


WORKLOAD = Struct(Workload, (
    Field("kind", "{p}_kind", json="req", fill=""),
    Field("name", "{p}", json="req"),
), present="name", shared=True)

ENDPOINT = Struct(Endpoint, (
    Field("ip", "{p}_ip", codec=IP, json="req"),
    Field("ip", "{p}_ipkey", codec=IP_KEY, index=True),
    Field("port", "{p}_port", "INTEGER", PORT),
    Field("kind", "{p}_kind", codec=enum_codec(EndpointKind)),
    Field("namespace", "{p}_namespace"),
    Field("pod_name", "{p}_pod"),
    Field("workload", "{p}_workload", struct=WORKLOAD, optional=True, json="or"),
    Field("labels", "{p}_labels", "MAP(VARCHAR, VARCHAR)", LABELS, json="or"),
    Field("node_name", "{p}_node"),
    Field("name", "{p}_name"),
), shared=True)

SERVICE = Struct(Service, (
    Field("namespace", "{p}_namespace", json="req", fill=""),
    Field("name", "{p}_name", json="req"),
    Field("port_name", "{p}_port_name"),
    Field("type", "{p}_type", fill="ClusterIP"),
    Field("frontend_ip", "{p}_frontend_ip"),
    Field("frontend_port", "{p}_frontend_port", "INTEGER"),
), present="name", shared=True)

ADDRESS = Struct(Address, (
    Field("ip", "{p}_ip", json="req"),
    Field("port", "{p}_port", "INTEGER"),
), present="ip")

NAT = Struct(Nat, (
    Field("original_destination", "nat_orig_dst", struct=ADDRESS, optional=True),
    Field("translated_source", "nat_snat", struct=ADDRESS, optional=True),
))

COUNTERS = Struct(Counters, (
    Field("packets", "packets_{p}", "BIGINT", INT),
    Field("bytes", "bytes_{p}", "BIGINT", INT),
), strict=True)

TRAFFIC = Struct(Traffic, (
    Field("to_destination", "to_dst", struct=COUNTERS, json="or"),
    Field("to_source", "to_src", struct=COUNTERS, json="or"),
))

TCP = Struct(TcpInfo, (
    Field("state", "{p}_state"),
    Field("flags", "{p}_flags", "VARCHAR[]", STRS),
), present="flags")

OBSERVATION = Struct(ObservationPoint, (
    Field("node_name", "{p}_node", json="req"),
    Field("source", "{p}_source", json="req", fill=""),
    Field("original", "{p}_original"),
    Field("reply", "{p}_reply"),
    Field("instance", "{p}_instance", codec=EMPTY_IS_NULL, json="or", fill=""),
), present="node_name")

DNS = Struct(DnsInfo, (
    Field("query", "{p}_query", json="req"),
    Field("qtypes", "{p}_qtypes", "VARCHAR[]", STRS, json="or", fill=()),
    Field("rcode", "{p}_rcode", "INTEGER"),
    Field("ips", "{p}_ips", "VARCHAR[]", STRS, json="or", fill=()),
    Field("ttl", "{p}_ttl", "BIGINT"),
    Field("cnames", "{p}_cnames", "VARCHAR[]", STRS, json="or", fill=()),
    Field("queries", "{p}_queries", "INTEGER", json="or", fill=0),
    Field("rcodes", "{p}_rcodes", "INTEGER[]", STRS, json="or", fill=()),
), present="query")

HTTP = Struct(HttpInfo, (
    Field("method", "{p}_method"),
    Field("url", "{p}_url"),
    Field("host", "{p}_host"),
    Field("code", "{p}_code", "INTEGER"),
    Field("protocol", "{p}_protocol", json="or"),
), present="protocol")

L7_RECORD = Struct(L7, (
    Field("latency_ns", "{p}_latency_ns", "BIGINT"),
    Field("dns", "dns", struct=DNS, optional=True, json="or"),
    Field("http", "http", struct=HTTP, optional=True, json="or"),
))

FLOW = Struct(Flow, (
    Field("flow_id", "flow_id", codec=TEXT),
    Field("time", "time", "DOUBLE", FLOAT, json="req"),
    Field("end_time", "end_time", "DOUBLE", OPT_FLOAT),
    Field("state", "state", codec=enum_codec(FlowState)),
    Field("source", "src", struct=ENDPOINT, json="req"),
    Field("destination", "dst", struct=ENDPOINT, json="req"),
    Field("protocol", "protocol", codec=enum_codec(Protocol), json="req"),
    Field("destination_service", "svc", struct=SERVICE, optional=True, json="or"),
    Field("nat", "nat", struct=NAT, json="or"),
    Field("traffic", "", struct=TRAFFIC, json="or"),
    Field("tcp", "tcp", struct=TCP, optional=True),
    Field("rtt_us", "rtt_us", "DOUBLE", OPT_FLOAT),
    Field("verdict", "verdict", codec=enum_codec(Verdict)),
    Field("drop_reason_desc", "drop_reason"),
    Field("is_reply", "is_reply", "BOOLEAN", BOOL),
    Field("observations", "obs", struct=OBSERVATION, many=True),
    Field("cni_profile", "cni_profile"),
    Field("client_key", "client_key", codec=TEXT, fill=""),
    Field("l7", "l7", struct=L7_RECORD, optional=True, json="or"),
))
"""The Flow, field by field, in JSON order."""


def columns(struct: Struct = FLOW, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Every store column (name, SQL type) of ``struct``, depth first in declared order."""
    for f in struct.fields:
        name = f.column.format(p=prefix)
        if f.struct is not None:
            yield from columns(f.struct, name)
        else:
            yield name, f.sql


def compile_function(name: str, source: str, names: dict[str, Any]) -> Callable[..., Any]:
    """Compile generated ``source`` defining ``name`` with the model ``NAMESPACE`` plus
    ``names``; the source is kept as the function's ``__source__`` for reading."""
    ns = {**NAMESPACE, **names}
    exec(compile(source, f"<podflow.fields {name}>", "exec"), ns)
    fn: Callable[..., Any] = ns[name]
    fn.__source__ = source  # type: ignore[attr-defined]
    return fn
