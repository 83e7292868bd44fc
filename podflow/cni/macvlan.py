"""macvlan (and ipvlan) pods on the underlay: detector and profile.

A macvlan node shows almost nothing: the pods' interfaces are macvlan children of the
node's ``eth0`` living in the pod namespaces, there is no bridge, no ``cali*`` veth, no
tunnel, and pod-to-pod traffic never enters the node's stack (conntrack and the node's
interfaces see none of it). The evidence is the CNI config (``"type": "macvlan"``, its
``master`` and ``mode``, the host-local range), plus the absence of any node-side pod
plumbing. Only pod-namespace vantage points (sockets) can see the flows, so that is the
default source; nothing is masqueraded (pods reach the outside through the underlay's
router with their own IPs).

Example::

    >>> from podflow.cni.snapshot import NodeSnapshot
    >>> snap = NodeSnapshot(cni_conf={"10-macvlan.conflist": {"plugins": [
    ...     {"type": "macvlan", "master": "eth0", "mode": "bridge"}]}})
    >>> detect(snap, "node1").profile.default_sources
    ('sockets', 'packets')
"""

from __future__ import annotations

import ipaddress
from typing import Any

from podflow.cni.profile import CniProfile, Detection, inventory_cluster_cidrs
from podflow.cni.snapshot import NodeSnapshot
from podflow.inventory.history import Inventory

NAME = "macvlan"
HELP = ("macvlan/ipvlan pods on the underlay (CNI type macvlan): pod traffic bypasses the "
        "node's stack, so only pod-netns sockets see it; no NAT, no services.")
TYPES = ("macvlan", "ipvlan")
"""CNI plugin types that attach pods straight to the underlay."""


def _ranges(plugin: dict[str, Any]) -> list[str]:
    ipam = plugin.get("ipam") if isinstance(plugin.get("ipam"), dict) else {}
    out = [str(ipam["subnet"])] if isinstance(ipam, dict) and ipam.get("subnet") else []
    for rs in (ipam or {}).get("ranges") or []:
        for r in rs if isinstance(rs, list) else []:
            if isinstance(r, dict) and r.get("subnet"):
                out.append(str(ipaddress.ip_network(r["subnet"], strict=False)))
    return out


def detect(snapshot: NodeSnapshot, node_name: str | None = None,
           inventory: Inventory | None = None) -> Detection | None:
    """A macvlan :class:`Detection` if a CNI config attaches pods with macvlan/ipvlan."""
    found = [(f, p) for f, p in snapshot.conf_plugins() if p.get("type") in TYPES]
    if not found:
        return None
    underlay = snapshot.underlay_address()
    inferred = inventory.node_by_ip(underlay, float("inf")) \
        if inventory is not None and underlay else None
    node = node_name or inferred or "unknown"
    evidence, pod_cidrs = [], []
    for f, p in found:
        ranges = _ranges(p)
        pod_cidrs += ranges
        evidence.append(f"CNI config {f} uses plugin type {p.get('type')} (master "
                        f"{p.get('master')}, mode {p.get('mode')}, ipam "
                        f"{(p.get('ipam') or {}).get('type')} {', '.join(ranges)})")
    plumbing = [x.name for x in snapshot.links if x.name == "cni0" or x.name.startswith("cali")
                or x.kind == "vxlan"]
    if not plumbing:
        evidence.append("no cni0 bridge, cali* veth or VXLAN device on the node: pod traffic "
                        "bypasses the node's stack (conntrack sees none of it)")
    local = ((underlay, node),) if underlay else ()
    profile = CniProfile(NAME, node, pod_cidrs=tuple(pod_cidrs),
                         cluster_cidrs=inventory_cluster_cidrs(inventory),
                         local_addresses=local, default_sources=("sockets", "packets"),
                         source_options=(("sidecar", True),), masquerade=False)
    return Detection(profile, tuple(evidence))
