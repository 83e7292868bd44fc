"""L7 facts for the service map: HTTP/DNS summaries per edge and DNS names of external IPs.

The edges themselves come from :meth:`FlowStore.map_edges`; this module adds what the
packet source's L7 records say about them. It reads only the merged connections that have
an L7 row (:meth:`FlowStore.l7_connections`, which also says whether each matches the
whole filter) and aggregates in Python:

- per edge key ``(source id, destination id, service, port, protocol)`` (the ids of
  :func:`podflow.server.graph.node_id`): HTTP requests by status code and method, a few
  paths; DNS queries by name and rcode;
- ``dns_names``: external IP -> the names DNS answers pointed at it (within the time window,
  whatever the other filters), so the map can name externals "api.example.com".

Example::

    >>> s = L7Summary()
    >>> from podflow.model.flow import HttpInfo, L7
    >>> s.add(L7(http=HttpInfo(method="GET", url="/a", code=200)))
    >>> s.to_dict()["http"]["codes"]
    {'200': 1}
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from podflow.model.flow import L7
from podflow.query.filter import FilterSpec
from podflow.query.servicemap import map_node
from podflow.store.base import FlowStore

EdgeKey = tuple[str, str, str | None, int | None, str]
"""(source node id, destination node id, service ``ns/name``, port, protocol)."""

_TOP = 8


@dataclass
class L7Summary:
    """Counts of the L7 exchanges on one edge."""

    http_codes: Counter[str] = field(default_factory=Counter)
    http_methods: Counter[str] = field(default_factory=Counter)
    http_paths: Counter[str] = field(default_factory=Counter)
    http_requests: int = 0
    dns_names: Counter[str] = field(default_factory=Counter)
    dns_rcodes: Counter[str] = field(default_factory=Counter)
    dns_queries: int = 0

    def add(self, l7: L7) -> None:
        """Count one exchange."""
        if l7.http is not None:
            h = l7.http
            self.http_requests += 1
            self.http_codes[str(h.code) if h.code is not None else "none"] += 1
            if h.method:
                self.http_methods[h.method] += 1
            if h.url:
                self.http_paths[h.url.split("?", 1)[0]] += 1
        if l7.dns is not None:
            self.dns_queries += 1
            self.dns_names[l7.dns.query] += 1
            rc = l7.dns.rcode
            self.dns_rcodes[str(rc) if rc is not None else "none"] += 1

    def merge(self, other: L7Summary) -> None:
        """Add another summary's counts (when edges are grouped)."""
        for name in ("http_codes", "http_methods", "http_paths", "dns_names", "dns_rcodes"):
            getattr(self, name).update(getattr(other, name))
        self.http_requests += other.http_requests
        self.dns_queries += other.dns_queries

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"http": {...} | None, "dns": {...} | None}``."""
        http = None if not self.http_requests else {
            "requests": self.http_requests, "codes": dict(sorted(self.http_codes.items())),
            "methods": dict(self.http_methods.most_common()),
            "paths": [p for p, _ in self.http_paths.most_common(_TOP)]}
        dns = None if not self.dns_queries else {
            "queries": self.dns_queries, "names": [n for n, _ in self.dns_names.most_common(_TOP)],
            "rcodes": dict(sorted(self.dns_rcodes.items()))}
        return {"http": http, "dns": dns}


@dataclass
class L7Facts:
    """What :func:`l7_facts` found."""

    edges: dict[EdgeKey, L7Summary] = field(default_factory=dict)
    dns_names: dict[str, list[str]] = field(default_factory=dict)
    """External IP -> names DNS answered with it (most frequent first)."""


def l7_facts(store: FlowStore, spec: FilterSpec, node_id: Any) -> L7Facts:
    """L7 summaries per edge for flows matching ``spec``, and DNS names of IPs in its window.

    ``node_id`` maps a :class:`~podflow.query.servicemap.MapNode` to the graph's node id.
    """
    facts = L7Facts()
    names: dict[str, Counter[str]] = {}
    for flow, matched in store.l7_connections(spec):
        rec = flow.l7
        if rec is None:
            continue
        if rec.dns is not None and rec.dns.rcode in (0, None):
            for ip in rec.dns.ips:
                names.setdefault(ip, Counter())[rec.dns.query] += 1
        if not matched:
            continue
        svc = flow.destination_service
        key: EdgeKey = (node_id(map_node(flow.source)), node_id(map_node(flow.destination)),
                        f"{svc.namespace}/{svc.name}" if svc else None, flow.destination.port,
                        flow.protocol.value)
        facts.edges.setdefault(key, L7Summary()).add(rec)
    facts.dns_names = {ip: [n for n, _ in c.most_common()] for ip, c in names.items()}
    return facts
