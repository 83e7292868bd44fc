"""The service map as a graph for the web UI: nodes with ids, edges between node pairs.

:func:`build_graph` is pure: it takes the store's :class:`~podflow.query.servicemap.Edge`
list (one per source, destination, service, port, protocol), the L7 facts of
:mod:`podflow.server.l7` and the cluster nodes' addresses, and returns the JSON the UI draws:

- node ids: ``workload:NS/NAME`` (or a bare pod), ``node:NAME``, ``service:NS/NAME`` (with
  ``services=True``), ``external:NAME`` for externals named by the external-names ConfigMap
  or by DNS answers (all their IPs grouped in one node), ``ip:ADDR`` for unnamed ones, or a
  single ``world`` node for all of those with ``world=True``;
- one graph edge per (source id, target id), id ``SRC->DST``, listing its ports, services,
  connections, bytes, verdict counts (``dropped`` > 0 draws it red), L7 summary, and the
  store edges it aggregates (``parts``);
- every node and edge carries ``filter``: the flow-filter parameters selecting its flows,
  which the UI passes to ``/api/flows`` as they are.

Example::

    >>> from podflow.query.servicemap import Edge, MapNode
    >>> a = MapNode("pod", "shop", "frontend", "frontend")
    >>> b = MapNode("external", None, None, "db", "192.168.100.10")
    >>> g = build_graph([Edge(a, b, None, 5432, "TCP", 3, 900, 9, (), (("FORWARDED", 3),),
    ...                       1.0, 2.0)])
    >>> [n["id"] for n in g["nodes"]], g["edges"][0]["id"]
    (['external:db', 'workload:shop/frontend'], 'workload:shop/frontend->external:db')
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from podflow.query.servicemap import Edge, MapNode
from podflow.server.l7 import L7Facts, L7Summary

MAX_PARTS = 50
"""Store edges listed per graph edge."""
MAX_FILTER_IPS = 64
"""IPs put in one node's filter (a grouped external or ``world``)."""


def raw_id(m: MapNode) -> str:
    """The id of a map node before externals are grouped (externals by IP)."""
    if m.kind == "pod":
        return f"workload:{m.namespace}/{m.name}"
    if m.kind == "node":
        return f"node:{m.name}"
    return f"ip:{m.ip}"


class _Graph:
    def __init__(self, dns: Mapping[str, list[str]], node_ips: Mapping[str, list[str]],
                 world: bool) -> None:
        self.dns, self.node_ips, self.world = dns, node_ips, world
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: dict[tuple[str, str], dict[str, Any]] = {}

    def node(self, m: MapNode) -> dict[str, Any]:
        if m.kind == "pod":
            nid, kind = raw_id(m), "workload" if m.workload else "pod"
            base = {"namespace": m.namespace, "name": m.name, "label": m.name,
                    "filter_key": "workload" if m.workload else "pod",
                    "filter_value": [f"{m.namespace}/{m.name}"]}
        elif m.kind == "node":
            nid, kind = raw_id(m), "node"
            base = {"name": m.name, "label": m.name, "filter_key": "ip",
                    "filter_value": list(self.node_ips.get(str(m.name), []))}
        else:
            name = m.name or next(iter(self.dns.get(str(m.ip), [])), None)
            if name:
                nid, kind = f"external:{name}", "external"
            elif self.world:
                nid, kind = "world", "world"
            else:
                nid, kind = raw_id(m), m.kind
            base = {"name": name, "label": name or ("world" if nid == "world" else m.ip),
                    "filter_key": "ip", "filter_value": []}
        n = self.nodes.get(nid)
        if n is None:
            n = self.nodes[nid] = {"id": nid, "kind": kind, "namespace": None, "ips": [],
                                   "dns_names": [], "connections_in": 0, "connections_out": 0,
                                   "bytes": 0, "dropped": 0, **base}
        if m.ip and m.ip not in n["ips"]:
            n["ips"].append(m.ip)
            n["dns_names"] = sorted(set(n["dns_names"]) | set(self.dns.get(m.ip, [])))
            if len(n["filter_value"]) < MAX_FILTER_IPS:
                n["filter_value"].append(m.ip)
        return n

    def service(self, name: str) -> dict[str, Any]:
        nid = f"service:{name}"
        ns, _, svc = name.partition("/")
        return self.nodes.setdefault(nid, {
            "id": nid, "kind": "service", "namespace": ns, "name": svc, "label": svc,
            "ips": [], "dns_names": [], "connections_in": 0, "connections_out": 0, "bytes": 0,
            "dropped": 0, "filter_key": "service", "filter_value": [name]})

    def add(self, src: dict[str, Any], dst: dict[str, Any], e: Edge,
            l7: L7Summary | None) -> None:
        key = (src["id"], dst["id"])
        g = self.edges.get(key)
        if g is None:
            g = self.edges[key] = {
                "id": f"{key[0]}->{key[1]}", "source": key[0], "target": key[1], "ports": [],
                "services": [], "connections": 0, "bytes": 0, "packets": 0,
                "verdicts": Counter(), "snat": set(), "first_seen": e.first_seen,
                "last_seen": e.last_seen, "l7": L7Summary(), "parts": []}
        port = f"{e.port}/{e.protocol}" if e.port is not None else e.protocol
        if port not in g["ports"]:
            g["ports"].append(port)
        if e.service and e.service not in g["services"]:
            g["services"].append(e.service)
        g["connections"] += e.connections
        g["bytes"] += e.bytes
        g["packets"] += e.packets
        g["verdicts"].update(dict(e.verdicts))
        g["snat"].update(e.snat)
        g["first_seen"] = min(g["first_seen"], e.first_seen)
        g["last_seen"] = max(g["last_seen"], e.last_seen)
        if l7 is not None:
            g["l7"].merge(l7)
        if len(g["parts"]) < MAX_PARTS:
            g["parts"].append(e.to_dict())
        dropped = dict(e.verdicts).get("DROPPED", 0)
        src["connections_out"] += e.connections
        dst["connections_in"] += e.connections
        for n in (src, dst):
            n["bytes"] += e.bytes
            n["dropped"] += dropped


def _filter(n: dict[str, Any], prefix: str) -> dict[str, list[str]]:
    key, values = n["filter_key"], n["filter_value"]
    if not values:
        return {}
    if prefix == "to_" and key == "service":
        return {"to_service": values}
    if prefix == "from_" and key == "service":
        return {}
    return {prefix + key: values}


def build_graph(edges: Iterable[Edge], facts: L7Facts | None = None, *,
                node_ips: Mapping[str, list[str]] | None = None, world: bool = False,
                services: bool = False) -> dict[str, Any]:
    """``{"nodes": [...], "edges": [...]}`` for the UI (see the module doc)."""
    facts = facts or L7Facts()
    g = _Graph(facts.dns_names, node_ips or {}, world)
    for e in edges:
        src, dst = g.node(e.source), g.node(e.destination)
        l7 = facts.edges.get((raw_id(e.source), raw_id(e.destination), e.service, e.port,
                              e.protocol))
        if services and e.service:
            svc = g.service(e.service)
            g.add(src, svc, e, l7)
            g.add(svc, dst, e, l7)
        else:
            g.add(src, dst, e, l7)
    out_edges = []
    for (s, t), ge in sorted(g.edges.items()):
        verdicts: Counter[str] = ge["verdicts"]
        ge.update(verdicts=dict(sorted(verdicts.items())), dropped=verdicts.get("DROPPED", 0),
                  errors=verdicts.get("ERROR", 0), snat=sorted(ge["snat"]),
                  l7=ge["l7"].to_dict(),
                  filter={**_filter(g.nodes[s], "from_"), **_filter(g.nodes[t], "to_")})
        out_edges.append(ge)
    nodes = []
    for n in sorted(g.nodes.values(), key=lambda n: n["id"]):
        n["filter"] = _filter(n, "")
        del n["filter_key"], n["filter_value"]
        nodes.append(n)
    return {"nodes": nodes, "edges": out_edges}
