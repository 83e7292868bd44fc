"""One declarative flow filter, rendered as SQL for stores and as a predicate for followers.

Semantics follow ``hubble observe``: the values of one field are OR-ed, different fields are
AND-ed, and an empty field does not constrain. ``x`` fields match either end, ``from_x`` the
source and ``to_x`` the destination, always *after NAT was undone* (the real client and the
backend pod). Choices podflow makes:

- ``pod`` is ``[namespace/]name-prefix``; without a namespace any namespace matches.
- ``label`` is a selector ``k=v[,k2=v2|,k3]``: every term must hold (``k`` alone = present).
- ``service`` / ``to_service`` are ``[namespace/]name`` and match ``destination_service``
  (sources are never services once NAT is undone, so there is no ``from_service``).
- ``ip`` / ``from_ip`` / ``to_ip`` are CIDRs or addresses and, as in Hubble, match the
  endpoint addresses only, never the NAT addresses (the service VIP or masquerade IP):
  use ``service`` for the former; the latter are shown in the ``nat`` of each flow.
- ``node`` matches any node that observed the flow.
- ``since`` / ``until`` select flows whose lifetime overlaps the window:
  ``(end_time or time) >= since`` and ``time <= until``; both must be finite numbers (NaN
  would compare as no bound at all in the store).
- the L7 and verdict fields (``fqdn``, ``from_fqdn``, ``to_fqdn``, ``http_status``,
  ``http_method``, ``http_path``, ``dns_rcode``, ``type``) are described in
  :mod:`podflow.query.l7filter`; ``verdict`` is ``FORWARDED``, ``DROPPED``, ``ERROR`` or
  ``UNKNOWN``, the merged flow's (the worst any vantage point saw).

Both renderings are kept in step by tests over a corpus of flows. :meth:`FilterSpec.to_sql`
addresses the columns of :mod:`podflow.store.schema` plus ``obs_nodes`` (the list of
observing nodes of a merged flow).

Example::

    >>> spec = FilterSpec(to_namespace=("shop",), port=(9000, 6379))
    >>> where, params = spec.to_sql()
    >>> where
    '(dst_namespace = ?) AND (src_port = ? OR dst_port = ? OR src_port = ? OR dst_port = ?)'
    >>> params
    ['shop', 9000, 9000, 6379, 6379]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

from podflow.model.flow import Endpoint, Flow, Protocol, Verdict
from podflow.query.l7filter import check_l7_values, l7_matches, l7_sql
from podflow.store.schema import cidr_key_range, ip_key

Sql = tuple[str, list[Any]]


@lru_cache(maxsize=1024)
def _ns_name(value: str) -> tuple[str | None, str]:
    ns, sep, name = value.partition("/")
    return (ns, name) if sep else (None, value)


@lru_cache(maxsize=1024)
def _selector(value: str) -> tuple[tuple[str, str | None], ...]:
    terms = []
    for term in value.split(","):
        k, sep, v = term.strip().partition("=")
        if not k:
            raise ValueError(f"bad label selector {value!r}: expected key=value or key")
        terms.append((k, v if sep else None))
    return tuple(terms)


@lru_cache(maxsize=1024)
def _net(value: str) -> tuple[str, str]:
    try:
        return cidr_key_range(value)
    except ValueError:
        raise ValueError(f"bad IP or CIDR {value!r}") from None


def _ip_in(ip: str, value: str) -> bool:
    lo, hi = _net(value)
    try:
        return lo <= ip_key(ip) <= hi
    except ValueError:
        return False


def _pod_py(e: Endpoint, v: str) -> bool:
    ns, prefix = _ns_name(v)
    return (e.pod_name is not None and e.pod_name.startswith(prefix)
            and (ns is None or e.namespace == ns))


def _pod_sql(p: str, v: str) -> Sql:
    ns, prefix = _ns_name(v)
    if ns is None:
        return f"starts_with({p}_pod, ?)", [prefix]
    return f"(starts_with({p}_pod, ?) AND {p}_namespace = ?)", [prefix, ns]


def _label_py(e: Endpoint, v: str) -> bool:
    labels = e.label_dict()
    return all(k in labels if val is None else labels.get(k) == val for k, val in _selector(v))


def _label_sql(p: str, v: str) -> Sql:
    parts, params = [], []
    for k, val in _selector(v):
        if val is None:
            parts.append(f"map_contains({p}_labels, ?)")
            params.append(k)
        else:
            parts.append(f"{p}_labels[?] = ?")
            params += [k, val]
    return "(" + " AND ".join(parts) + ")", params


def _workload_py(e: Endpoint, v: str) -> bool:
    ns, name = _ns_name(v)
    return (e.workload is not None and e.workload.name == name
            and (ns is None or e.namespace == ns))


def _workload_sql(p: str, v: str) -> Sql:
    ns, name = _ns_name(v)
    if ns is None:
        return f"{p}_workload = ?", [name]
    return f"({p}_workload = ? AND {p}_namespace = ?)", [name, ns]


def _ip_sql(p: str, v: str) -> Sql:
    return f"{p}_ipkey BETWEEN ? AND ?", list(_net(v))


EndPy = Callable[[Endpoint, Any], bool]
EndSql = Callable[[str, Any], Sql]
_END_FIELDS: dict[str, tuple[EndPy, EndSql]] = {
    "namespace": (lambda e, v: e.namespace == v, lambda p, v: (f"{p}_namespace = ?", [v])),
    "pod": (_pod_py, _pod_sql),
    "label": (_label_py, _label_sql),
    "workload": (_workload_py, _workload_sql),
    "ip": (lambda e, v: _ip_in(e.ip, v), _ip_sql),
    "port": (lambda e, v: e.port == v, lambda p, v: (f"{p}_port = ?", [v])),
}


def _protocol(v: str) -> str:
    for p in Protocol:
        if p.value.lower() == v.lower():
            return p.value
    raise ValueError(f"unknown protocol {v!r} (one of {', '.join(p.value for p in Protocol)})")


def _verdict(v: str) -> str:
    try:
        return Verdict(v.upper()).value
    except ValueError:
        raise ValueError(
            f"unknown verdict {v!r} (one of {', '.join(x.value for x in Verdict)})") from None


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """A flow filter: each field a tuple of alternatives (see the module doc)."""

    namespace: tuple[str, ...] = ()
    from_namespace: tuple[str, ...] = ()
    to_namespace: tuple[str, ...] = ()
    pod: tuple[str, ...] = ()
    from_pod: tuple[str, ...] = ()
    to_pod: tuple[str, ...] = ()
    label: tuple[str, ...] = ()
    from_label: tuple[str, ...] = ()
    to_label: tuple[str, ...] = ()
    workload: tuple[str, ...] = ()
    from_workload: tuple[str, ...] = ()
    to_workload: tuple[str, ...] = ()
    ip: tuple[str, ...] = ()
    from_ip: tuple[str, ...] = ()
    to_ip: tuple[str, ...] = ()
    port: tuple[int, ...] = ()
    from_port: tuple[int, ...] = ()
    to_port: tuple[int, ...] = ()
    service: tuple[str, ...] = ()
    to_service: tuple[str, ...] = ()
    protocol: tuple[str, ...] = ()
    node: tuple[str, ...] = ()
    verdict: tuple[str, ...] = ()
    fqdn: tuple[str, ...] = ()
    from_fqdn: tuple[str, ...] = ()
    to_fqdn: tuple[str, ...] = ()
    http_status: tuple[str, ...] = ()
    http_method: tuple[str, ...] = ()
    http_path: tuple[str, ...] = ()
    dns_rcode: tuple[str, ...] = ()
    type: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None

    def __post_init__(self) -> None:
        """Normalise names and reject malformed values with a clear ValueError."""
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list | str):
                raise ValueError(f"filter field {f.name} must be a tuple, got {v!r}")
        object.__setattr__(self, "protocol", tuple(_protocol(p) for p in self.protocol))
        object.__setattr__(self, "verdict", tuple(_verdict(v) for v in self.verdict))
        check_l7_values(self)
        for name in ("label", "from_label", "to_label"):
            for v in getattr(self, name):
                _selector(v)
        for name in ("ip", "from_ip", "to_ip"):
            for v in getattr(self, name):
                _net(v)
        for name in ("port", "from_port", "to_port"):
            for v in getattr(self, name):
                if not isinstance(v, int) or not 0 <= v <= 65535:
                    raise ValueError(f"bad port {v!r}: expected an integer 0-65535")
        for name in ("since", "until"):
            t = getattr(self, name)
            if t is not None and (isinstance(t, bool) or not isinstance(t, int | float)
                                  or not math.isfinite(t)):
                raise ValueError(f"{name}: bad time {t!r}: expected finite Unix seconds")

    def is_empty(self) -> bool:
        """True when nothing is constrained."""
        return all(getattr(self, f.name) in ((), None) for f in fields(self))

    def matches(self, flow: Flow) -> bool:
        """The predicate form, for live followers and in-memory lists."""
        for name, (py, _) in _END_FIELDS.items():
            for prefix, ends in ((name, (flow.source, flow.destination)),
                                 (f"from_{name}", (flow.source,)),
                                 (f"to_{name}", (flow.destination,))):
                values: Sequence[Any] = getattr(self, prefix)
                if values and not any(py(e, v) for v in values for e in ends):
                    return False
        svc = flow.destination_service
        for values in (self.service, self.to_service):
            if values and not (svc is not None and any(
                    svc.name == _ns_name(v)[1] and _ns_name(v)[0] in (None, svc.namespace)
                    for v in values)):
                return False
        if self.protocol and flow.protocol.value not in self.protocol:
            return False
        if self.verdict and flow.verdict.value not in self.verdict:
            return False
        if self.node and not any(o.node_name in self.node for o in flow.observations):
            return False
        if not l7_matches(self, flow):
            return False
        end = flow.end_time if flow.end_time is not None else flow.time
        if self.since is not None and end < self.since:
            return False
        return self.until is None or flow.time <= self.until

    def to_sql(self) -> tuple[str, list[Any]]:
        """``(where_clause, params)`` with ``?`` placeholders; ``"TRUE"`` when empty."""
        clauses: list[str] = []
        params: list[Any] = []

        def any_of(parts: list[Sql]) -> None:
            clauses.append("(" + " OR ".join(s for s, _ in parts) + ")")
            for _, p in parts:
                params.extend(p)

        for name, (_, sql) in _END_FIELDS.items():
            if vals := getattr(self, name):
                both = [sql("src", v) for v in vals]
                dst = [sql("dst", v) for v in vals]
                any_of([(f"{a[0]} OR {b[0]}", a[1] + b[1]) for a, b in zip(both, dst,
                                                                           strict=True)])
            for prefix, end in (("from", "src"), ("to", "dst")):
                if vals := getattr(self, f"{prefix}_{name}"):
                    any_of([sql(end, v) for v in vals])
        for vals in (self.service, self.to_service):
            if vals:
                parts: list[Sql] = []
                for v in vals:
                    ns, svc = _ns_name(v)
                    parts.append(("svc_name = ?", [svc]) if ns is None else
                                 ("(svc_name = ? AND svc_namespace = ?)", [svc, ns]))
                any_of(parts)
        if self.protocol:
            any_of([("protocol = ?", [p]) for p in self.protocol])
        if self.verdict:
            any_of([("verdict = ?", [v]) for v in self.verdict])
        if self.node:
            any_of([("list_contains(obs_nodes, ?)", [n]) for n in self.node])
        for part in l7_sql(self):
            any_of(part)
        if self.since is not None:
            any_of([("coalesce(end_time, time) >= ?", [float(self.since)])])
        if self.until is not None:
            any_of([("time <= ?", [float(self.until)])])
        return (" AND ".join(clauses) or "TRUE"), params
