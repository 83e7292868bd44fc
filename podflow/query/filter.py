"""One declarative flow filter: each field declared once, as a predicate and for front-ends.

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
- ``protocol`` is an L4 protocol (``TCP``, ``UDP`` ...) or, as ``hubble observe --protocol``
  takes, an L7 one: ``DNS`` / ``HTTP`` select the flows carrying a DNS / HTTP record.
- ``node`` matches any node that observed the flow.
- ``since`` / ``until`` select flows whose lifetime overlaps the window:
  ``(end_time or time) >= since`` and ``time <= until``; both must be finite numbers (NaN
  would compare as no bound at all in the store).
- ``settled`` leaves out the connections that started after it and are not yet *reported
  from both ends* (:func:`reported_from_both_ends`): each end that lives on a node (a pod, a
  host-network pod, a node) was observed by that node's agent, and the destination is not a
  bare service VIP. Until then the connection may still merge with another agent's view (a
  backend's node sees ``pod -> backend`` without the service the client's node resolved, or
  ``node -> backend`` behind a NodePort's SNAT), so a live map must not draw it; one older
  than ``settled`` is shown as stored (an end whose node runs no agent never reports).
- the L7 and verdict fields (``fqdn``, ``from_fqdn``, ``to_fqdn``, ``http_status``,
  ``http_method``, ``http_path``, ``dns_rcode``, ``type``) are described in
  :mod:`podflow.query.l7filter`; ``verdict`` is ``FORWARDED``, ``DROPPED``, ``ERROR`` or
  ``UNKNOWN``, the merged flow's (the worst any vantage point saw).

Each field of :class:`FilterSpec` carries its front-end declaration (:class:`Declared`:
metavar, help, short flag) in its dataclass metadata, so the CLI options
(:mod:`podflow.cli.filteropts`), the HTTP query parameters and the OpenAPI document
(:func:`podflow.query.params.filter_fields`) are all built from this one class, as
mitmproxy's ``flowfilter.py`` builds its help from its filter classes.

This module is pure: :meth:`FilterSpec.matches` is the predicate for followers and lists;
the SQL rendering of the same spec lives next to the store (:mod:`podflow.store.sql`).
Tests keep both in agreement over a corpus of flows.

Example::

    >>> spec = FilterSpec(to_namespace=("shop",), port=(9000, 6379), protocol=("dns",))
    >>> spec.protocol
    ('DNS',)
    >>> FilterSpec.__dataclass_fields__["namespace"].metadata["filter"].short
    '-n'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

from podflow.model.flow import Endpoint, EndpointKind, Flow, Protocol, Verdict
from podflow.model.ipkey import cidr_key_range, ip_key
from podflow.query.l7filter import L7_PROTOCOLS, check_l7_values, has_l7_protocol, l7_matches


@lru_cache(maxsize=1024)
def ns_name(value: str) -> tuple[str | None, str]:
    """``"ns/name"`` -> ``("ns", "name")``; ``"name"`` -> ``(None, "name")``."""
    ns, sep, name = value.partition("/")
    return (ns, name) if sep else (None, value)


@lru_cache(maxsize=1024)
def selector(value: str) -> tuple[tuple[str, str | None], ...]:
    """A label selector ``k=v[,k2]`` as ``((k, v), (k2, None))``; ValueError if malformed."""
    terms = []
    for term in value.split(","):
        k, sep, v = term.strip().partition("=")
        if not k:
            raise ValueError(f"bad label selector {value!r}: expected key=value or key")
        terms.append((k, v if sep else None))
    return tuple(terms)


@lru_cache(maxsize=1024)
def net_range(value: str) -> tuple[str, str]:
    """First and last :func:`~podflow.model.ipkey.ip_key` of a CIDR or address."""
    try:
        return cidr_key_range(value)
    except ValueError:
        raise ValueError(f"bad IP or CIDR {value!r}") from None


def _ip_in(ip: str, value: str) -> bool:
    lo, hi = net_range(value)
    try:
        return lo <= ip_key(ip) <= hi
    except ValueError:
        return False


def _pod_py(e: Endpoint, v: str) -> bool:
    ns, prefix = ns_name(v)
    return (e.pod_name is not None and e.pod_name.startswith(prefix)
            and (ns is None or e.namespace == ns))


def _label_py(e: Endpoint, v: str) -> bool:
    labels = e.label_dict()
    return all(k in labels if val is None else labels.get(k) == val for k, val in selector(v))


def _workload_py(e: Endpoint, v: str) -> bool:
    ns, name = ns_name(v)
    return (e.workload is not None and e.workload.name == name
            and (ns is None or e.namespace == ns))


EndPy = Callable[[Endpoint, Any], bool]
END_FIELDS: dict[str, EndPy] = {
    "namespace": lambda e, v: e.namespace == v,
    "pod": _pod_py,
    "label": _label_py,
    "workload": _workload_py,
    "ip": lambda e, v: _ip_in(e.ip, v),
    "port": lambda e, v: e.port == v,
}
"""The endpoint fields: ``x`` (either end), ``from_x`` and ``to_x`` exist for each."""

L4_PROTOCOLS = tuple(p.value for p in Protocol)
"""The L4 names ``protocol`` takes (besides :data:`~podflow.query.l7filter.L7_PROTOCOLS`)."""


_ON_NODE = (EndpointKind.POD, EndpointKind.HOST_NETWORK_POD)


def end_node(e: Endpoint) -> str | None:
    """The node an endpoint lives on (a pod's, a node itself), None for the others."""
    if e.kind in _ON_NODE:
        return e.node_name
    if e.kind is EndpointKind.NODE:
        return e.name or e.node_name
    return None


def reported_from_both_ends(flow: Flow) -> bool:
    """Each end living on a node was observed by that node, and the destination is not a
    bare service VIP (see ``settled`` in the module doc).

    >>> from dataclasses import replace
    >>> from podflow.model.flow import ObservationPoint
    >>> pod = Endpoint("10.244.0.5", 1, EndpointKind.POD, "shop", "fe-1", node_name="n1")
    >>> be = Endpoint("10.244.1.7", 9000, EndpointKind.POD, "shop", "be-1", node_name="n2")
    >>> seen = lambda *nodes: tuple(ObservationPoint(n, "conntrack") for n in nodes)
    >>> f = Flow(0.0, pod, be, Protocol.TCP, observations=seen("n2"))
    >>> reported_from_both_ends(f), reported_from_both_ends(replace(f, observations=seen(
    ...     "n2", "n1")))
    (False, True)
    """
    if flow.destination.kind is EndpointKind.SERVICE:
        return False
    nodes = {o.node_name for o in flow.observations}
    return all(n is None or n in nodes for n in (end_node(flow.source),
                                                 end_node(flow.destination)))


def _protocol(v: str) -> str:
    for p in L4_PROTOCOLS:
        if p.lower() == v.lower():
            return p
    if v.upper() in L7_PROTOCOLS:
        return v.upper()
    raise ValueError(f"unknown protocol {v!r} (one of {', '.join(L4_PROTOCOLS)}, "
                     f"or an L7 protocol: {', '.join(p.lower() for p in L7_PROTOCOLS)})")


def _verdict(v: str) -> str:
    try:
        return Verdict(v.upper()).value
    except ValueError:
        raise ValueError(
            f"unknown verdict {v!r} (one of {', '.join(x.value for x in Verdict)})") from None


@dataclass(frozen=True, slots=True)
class Declared:
    """How one filter field appears in the front-ends (CLI flag, query parameter, help)."""

    metavar: str
    """The value's shape in help, e.g. ``[NS/]PREFIX``."""
    help: str
    """One line for ``--help``, the OpenAPI document and ``GET /api/filters``."""
    short: str | None = None
    """The CLI's short flag, e.g. ``-n``; the long flag is ``--`` + the name with dashes."""
    time: bool = False
    """A point in time given as RFC 3339, Unix seconds or a duration ago (``since``)."""


def _f(metavar: str, help_: str, short: str | None = None) -> Any:
    """A repeatable filter field (a tuple of alternatives) and its declaration."""
    return field(default=(), metadata={"filter": Declared(metavar, help_, short)})


def _t(help_: str) -> Any:
    """A time bound field and its declaration."""
    return field(default=None, metadata={"filter": Declared("TIME", help_, time=True)})


_PROTO_HELP = (f"{', '.join(L4_PROTOCOLS[:-1])}; or {', '.join(p.lower() for p in L7_PROTOCOLS)}"
               " (flows with that L7 record, as hubble observe --protocol).")


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """A flow filter: each field a tuple of alternatives (see the module doc)."""

    namespace: tuple[str, ...] = _f("NS", "Either end in namespace NS.", "-n")
    from_namespace: tuple[str, ...] = _f("NS", "Source in namespace NS.")
    to_namespace: tuple[str, ...] = _f("NS", "Destination in namespace NS.")
    pod: tuple[str, ...] = _f("[NS/]PREFIX", "Either end is a pod whose name starts with "
                              "PREFIX.")
    from_pod: tuple[str, ...] = _f("[NS/]PREFIX", "Source pod name starts with PREFIX.")
    to_pod: tuple[str, ...] = _f("[NS/]PREFIX", "Destination pod name starts with PREFIX.")
    label: tuple[str, ...] = _f("K=V[,K2]", "Either end has all these labels (K alone: "
                                "present).", "-l")
    from_label: tuple[str, ...] = _f("K=V[,K2]", "Source has all these labels.")
    to_label: tuple[str, ...] = _f("K=V[,K2]", "Destination has all these labels.")
    workload: tuple[str, ...] = _f("[NS/]NAME", "Either end owned by this workload "
                                   "(Deployment ...).")
    from_workload: tuple[str, ...] = _f("[NS/]NAME", "Source owned by this workload.")
    to_workload: tuple[str, ...] = _f("[NS/]NAME", "Destination owned by this workload.")
    ip: tuple[str, ...] = _f("CIDR", "Either end's IP (after NAT was undone) in CIDR or equal.")
    from_ip: tuple[str, ...] = _f("CIDR", "Source IP in CIDR.")
    to_ip: tuple[str, ...] = _f("CIDR", "Destination IP in CIDR.")
    port: tuple[int, ...] = _f("PORT", "Either end's port.")
    from_port: tuple[int, ...] = _f("PORT", "Source port.")
    to_port: tuple[int, ...] = _f("PORT", "Destination port (the backend's, after NAT).")
    service: tuple[str, ...] = _f("[NS/]NAME", "Went through this Service.")
    to_service: tuple[str, ...] = _f("[NS/]NAME", "Went through this Service (same as "
                                     "service).")
    protocol: tuple[str, ...] = _f("PROTO", _PROTO_HELP)
    node: tuple[str, ...] = _f("NODE", "Observed on this node.")
    verdict: tuple[str, ...] = _f("VERDICT", ", ".join(v.value for v in Verdict) + ".")
    fqdn: tuple[str, ...] = _f("NAME", "Either end named NAME (* wildcard: *.example.com), or "
                               "the DNS query or Service FQDN of the destination.")
    from_fqdn: tuple[str, ...] = _f("NAME", "Source endpoint named NAME (* wildcard).")
    to_fqdn: tuple[str, ...] = _f("NAME", "Destination named NAME, DNS query for NAME, or via "
                                  "the Service NAME.NS.svc.cluster.local (* wildcard).")
    http_status: tuple[str, ...] = _f("CODE", "HTTP status code (404) or prefix (5+, 40+).")
    http_method: tuple[str, ...] = _f("METHOD", "HTTP method (GET, POST ...).")
    http_path: tuple[str, ...] = _f("REGEX", "HTTP path matches REGEX (searched; ^/api/ for a "
                                    "prefix; the query string is not matched).")
    dns_rcode: tuple[str, ...] = _f("RCODE", "DNS response code: NOERROR, NXDOMAIN, ... or a "
                                    "number.")
    type: tuple[str, ...] = _f("TYPE", "drop (verdict DROPPED), l7 (has DNS/HTTP), trace "
                               "(every other flow), as hubble's event types.", "-t")
    since: float | None = _t("Flows alive since TIME: RFC3339, Unix seconds, or a duration "
                             "ago (30s, 5m, 2h, 1d).")
    until: float | None = _t("Flows started until TIME (same forms).")
    settled: float | None = _t("Leave out connections started after TIME that the nodes of "
                               "both ends have not both reported yet (still merging across "
                               "agents; the live map uses 10s).")

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
                selector(v)
        for name in ("ip", "from_ip", "to_ip"):
            for v in getattr(self, name):
                net_range(v)
        for name in ("port", "from_port", "to_port"):
            for v in getattr(self, name):
                if not isinstance(v, int) or not 0 <= v <= 65535:
                    raise ValueError(f"bad port {v!r}: expected an integer 0-65535")
        for name in ("since", "until", "settled"):
            t = getattr(self, name)
            if t is not None and (isinstance(t, bool) or not isinstance(t, int | float)
                                  or not math.isfinite(t)):
                raise ValueError(f"{name}: bad time {t!r}: expected finite Unix seconds")

    def is_empty(self) -> bool:
        """True when nothing is constrained."""
        return all(getattr(self, f.name) in ((), None) for f in fields(self))

    def matches(self, flow: Flow) -> bool:
        """The predicate form, for live followers and in-memory lists."""
        for name, py in END_FIELDS.items():
            for prefix, ends in ((name, (flow.source, flow.destination)),
                                 (f"from_{name}", (flow.source,)),
                                 (f"to_{name}", (flow.destination,))):
                values: Sequence[Any] = getattr(self, prefix)
                if values and not any(py(e, v) for v in values for e in ends):
                    return False
        svc = flow.destination_service
        for values in (self.service, self.to_service):
            if values and not (svc is not None and any(
                    svc.name == ns_name(v)[1] and ns_name(v)[0] in (None, svc.namespace)
                    for v in values)):
                return False
        if self.protocol and not any(
                has_l7_protocol(flow, p) if p in L7_PROTOCOLS else flow.protocol.value == p
                for p in self.protocol):
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
        if self.settled is not None and flow.time > self.settled and \
                not reported_from_both_ends(flow):
            return False
        return self.until is None or flow.time <= self.until
