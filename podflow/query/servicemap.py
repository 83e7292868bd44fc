"""The service map: who talks to whom, aggregated from merged flows into edges.

Nodes of the map are *workloads* (pods grouped by namespace and top owner; a bare pod by its
name), *externals* (by IP, named when the inventory knows them), cluster *nodes* (by node
name) and *unknown* addresses (by IP). An edge is one (source, destination, service,
destination port after NAT, protocol) with its number of connections, traffic, verdicts,
and for egress the addresses the source was masqueraded to (``snat``).

:func:`build_edges` is the pure reference; the store computes the same aggregation in SQL
(:mod:`podflow.store.sql` for the map-node rules, :mod:`podflow.store.edges` for the query).
Tests keep them equal.

Example::

    >>> from podflow.model.flow import Endpoint, EndpointKind, Flow, Protocol, Workload
    >>> fe = Endpoint("10.244.0.5", 41000, EndpointKind.POD, "shop", "frontend-1",
    ...               Workload("Deployment", "frontend"))
    >>> db = Endpoint("192.168.100.10", 5432, EndpointKind.EXTERNAL, name="db")
    >>> [e] = build_edges([Flow(1.0, fe, db, Protocol.TCP)])
    >>> e.source.name, e.destination.ip, e.port, e.connections
    ('frontend', '192.168.100.10', 5432, 1)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from podflow.model.flow import Endpoint, EndpointKind, Flow

LIVE_SETTLE = 10.0
"""Seconds a live map waits for a connection to be reported from both ends before drawing it
as stored (``FilterSpec.settled``): agents report within a few seconds, so an edge drawn
earlier could be a view still to merge with another agent's (see
:func:`podflow.query.filter.reported_from_both_ends`)."""

AGENT_STALE = 60.0
"""An agent not heard from for this long (health report every 10 s, progress beacon every
flush) is not waited for: it stopped."""

AGENT_MAX_LAG = 300.0
"""An agent that is alive but behind (its store writes wait for a busy file, its conntrack
dumps are late) is waited for this long at most: past it, a live map draws what is stored
rather than stand still."""


def settled_time(now: float, progress: Mapping[str, float], settle: float = LIVE_SETTLE
                 ) -> float:
    """The ``settled`` time of a live map: ``settle`` seconds before now, or before the
    time up to which the slowest agent has stored every connection (an agent that is
    behind, e.g. waiting for a busy store or with late conntrack dumps, has not stored its
    end of the connections since then: drawing their other end alone would show
    half-resolved edges). ``progress`` is
    :meth:`~podflow.store.base.FlowStore.progress` since ``now - AGENT_STALE``.

    >>> settled_time(100.0, {}), settled_time(100.0, {"n1": 99.0, "n2": 80.0})
    (90.0, 70.0)
    """
    return min([now, *progress.values()]) - settle


@dataclass(frozen=True, slots=True)
class MapNode:
    """One node of the map."""

    kind: str
    """``pod`` (a workload or bare pod), ``external``, ``node`` or ``unknown``."""
    namespace: str | None = None
    """Namespace, for pods."""
    workload: str | None = None
    """Top owner name (e.g. the Deployment), for pods that have one."""
    name: str | None = None
    """Workload name, bare pod name, node name, or the external's name when known."""
    ip: str | None = None
    """The address, for externals and unknown ends."""

    def display(self) -> str:
        """``ns/workload``, ``node:NAME``, ``name (ip)`` or the IP."""
        if self.kind == "pod":
            return f"{self.namespace}/{self.name}"
        if self.kind == "node":
            return f"node:{self.name}"
        return f"{self.name} ({self.ip})" if self.name else str(self.ip)

    def to_dict(self) -> dict[str, Any]:
        """JSON form used by ``podflow map -o json``."""
        return {"kind": self.kind, "namespace": self.namespace, "workload": self.workload,
                "name": self.name, "ip": self.ip}


@dataclass(frozen=True, slots=True)
class Edge:
    """Aggregated connections between two map nodes."""

    source: MapNode
    destination: MapNode
    service: str | None
    """``namespace/name`` of the Service used, if any."""
    port: int | None
    """Destination port after NAT (the backend's port)."""
    protocol: str
    connections: int
    """Distinct (merged) flows."""
    bytes: int
    packets: int
    snat: tuple[str, ...]
    """Sorted translated source IPs, for egress to externals; empty otherwise."""
    verdicts: tuple[tuple[str, int], ...]
    """(verdict, count) pairs, sorted by verdict."""
    first_seen: float
    last_seen: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form used by ``podflow map -o json``."""
        return {"source": self.source.to_dict(), "destination": self.destination.to_dict(),
                "service": self.service, "port": self.port, "protocol": self.protocol,
                "connections": self.connections, "bytes": self.bytes, "packets": self.packets,
                "snat": list(self.snat), "verdicts": dict(self.verdicts),
                "first_seen": self.first_seen, "last_seen": self.last_seen}


def _node_key(e: Endpoint) -> tuple[str, str | None, str | None, str | None]:
    if e.kind in (EndpointKind.POD, EndpointKind.HOST_NETWORK_POD) and (
            e.workload is not None or e.pod_name is not None):
        name = e.workload.name if e.workload is not None else e.pod_name
        return "pod", e.namespace, e.workload.name if e.workload else None, name
    if e.kind is EndpointKind.NODE:
        return "node", None, None, next(x for x in (e.name, e.node_name, e.ip) if x is not None)
    kind = "external" if e.kind is EndpointKind.EXTERNAL else "unknown"
    return kind, None, None, e.ip


def map_node(e: Endpoint) -> MapNode:
    """The map node an endpoint belongs to."""
    kind, ns, wl, key = _node_key(e)
    if kind in ("external", "unknown"):
        return MapNode(kind, None, None, e.name, e.ip)
    return MapNode(kind, ns, wl, key, None)


def _sort_key(e: Edge) -> tuple[Any, ...]:
    def n(m: MapNode) -> tuple[str, ...]:
        return tuple(x or "" for x in (m.kind, m.namespace, m.workload, m.name, m.ip))
    return (-e.connections, -e.bytes, n(e.source), n(e.destination), e.service or "",
            e.port if e.port is not None else -1, e.protocol)


def sort_edges(edges: Iterable[Edge]) -> list[Edge]:
    """Most connections first, then most bytes, then by names (a total, stable order)."""
    return sorted(edges, key=_sort_key)


def build_edges(flows: Iterable[Flow]) -> list[Edge]:
    """Aggregate merged flows into edges (see the module doc), most connections first."""
    acc: dict[tuple[Any, ...], dict[str, Any]] = {}
    for f in flows:
        svc = f.destination_service
        service = f"{svc.namespace}/{svc.name}" if svc else None
        key = (_node_key(f.source), _node_key(f.destination), service, f.destination.port,
               f.protocol.value)
        a = acc.setdefault(key, {"src": [], "dst": [], "n": 0, "b": 0, "p": 0, "snat": set(),
                                 "v": {}, "first": f.time, "last": f.time})
        a["src"].append(f.source)
        a["dst"].append(f.destination)
        a["n"] += 1
        a["b"] += f.traffic.bytes
        a["p"] += f.traffic.packets
        if f.destination.kind is EndpointKind.EXTERNAL and f.nat.translated_source:
            a["snat"].add(f.nat.translated_source.ip)
        a["v"][f.verdict.value] = a["v"].get(f.verdict.value, 0) + 1
        a["first"] = min(a["first"], f.time)
        a["last"] = max(a["last"], f.end_time if f.end_time is not None else f.time)
    edges = []
    for (_, _, service, port, proto), a in acc.items():
        ends = []
        for eps in (a["src"], a["dst"]):
            m = map_node(eps[0])
            if m.kind in ("external", "unknown"):
                names = [e.name for e in eps if e.name is not None]
                m = MapNode(m.kind, None, None, max(names) if names else None, m.ip)
            ends.append(m)
        edges.append(Edge(ends[0], ends[1], service, port, proto, a["n"], a["b"], a["p"],
                          tuple(sorted(a["snat"])), tuple(sorted(a["v"].items())),
                          a["first"], a["last"]))
    return sort_edges(edges)
