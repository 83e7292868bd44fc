"""``GET /api/inventory``: the cluster as podflow knows it, and what its agents run.

Nodes, pods and services come from the cluster state (the Kubernetes API's watches, or a
directory of Kubernetes JSON; :mod:`podflow.inventory.source`, parsed as the agents parse
it); a lab adds its external hosts. The CNI profile and the running sources come from the
agents' latest health reports in the store (:meth:`~podflow.store.base.FlowStore.statuses`).

Example::

    >>> inv = cluster_inventory(None)
    >>> inv["nodes"], inv["source"]
    ([], 'none')
"""

from __future__ import annotations

import time
from typing import Any

from podflow.inventory.k8s import ServiceRecord
from podflow.inventory.source import ClusterSource


def cluster_inventory(state: ClusterSource | None) -> dict[str, Any]:
    """Nodes, pods, services and external names of the cluster state (a directory or the
    API's watches); ``source`` says which.

    ``state`` is re-polled (cheap when nothing changed), so keep one per server.
    """
    out: dict[str, Any] = {"source": "none", "nodes": [], "pods": [], "services": [],
                           "externals": []}
    if state is None:
        return out
    state.poll(time.time())
    objs = state.objects()
    out["source"] = state.description
    out["nodes"] = [{"name": n.name, "ips": list(n.internal_ips), "podCIDRs": list(n.pod_cidrs),
                     "labels": dict(n.labels)} for n in objs.nodes]
    out["pods"] = [{"namespace": p.namespace, "name": p.name, "ips": list(p.ips),
                    "node": p.node_name, "phase": p.phase, "host_network": p.host_network,
                    "labels": dict(p.labels),
                    "owner": next((f"{o.kind}/{o.name}" for o in p.owners if o.controller),
                                  None)}
                   for p in objs.pods]
    out["services"] = [_service(s) for s in objs.services]
    out["externals"] = [{"name": name, "ip": ip} for name, ip in objs.external_names]
    return out


def _service(s: ServiceRecord) -> dict[str, Any]:
    return {"namespace": s.namespace, "name": s.name, "type": s.type,
            "cluster_ips": list(s.cluster_ips), "external_ips": list(s.external_ips),
            "external_traffic_policy": s.external_traffic_policy,
            "selector": dict(s.selector),
            "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol,
                       "target_port": p.target_port, "node_port": p.node_port}
                      for p in s.ports]}


def agents_summary(statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """Profiles, sources and losses per agent from the store's health reports."""
    agents: list[dict[str, Any]] = []
    for st in statuses:
        s = st.get("status") or {}
        lost = sum(int(v) for v in (s.get("queue_lost") or {}).values())
        agents.append({"node": st.get("node"), "time": st.get("time"),
                       "profile": s.get("profile"), "evidence": s.get("evidence") or [],
                       "sources": s.get("sources") or [], "flows": s.get("flows"),
                       "lost": lost + int(s.get("store_lost") or 0),
                       "age_s": None if st.get("time") is None
                       else round(time.time() - float(st["time"]), 1)})
    profiles = sorted({a["profile"] for a in agents if a["profile"]})
    sources = sorted({str(x) for a in agents for x in a["sources"]})
    return {"agents": agents, "cni_profiles": profiles, "sources": sources}


def node_addresses(inventory: dict[str, Any]) -> dict[str, list[str]]:
    """Cluster node name -> its addresses (for the map's node filters)."""
    return {n["name"]: list(n.get("ips") or []) for n in inventory.get("nodes", [])}
