"""Flannel with the VXLAN backend: detector and profile.

What a flannel-vxlan node looks like (and what the detector looks for):

- a vxlan link ``flannel.<VNI>`` (VNI 1 by default) on UDP port 8472 (flannel's default;
  4789 when configured), holding the node's VTEP address ``10.244.N.0/32``;
- a bridge ``cni0`` holding the pods' gateway ``10.244.N.1/24``;
- onlink routes ``10.244.M.0/24 via 10.244.M.0 dev flannel.1`` to every other node;
- ``/run/flannel/subnet.env`` (``FLANNEL_NETWORK``, ``FLANNEL_SUBNET``, ``FLANNEL_IPMASQ``)
  and a CNI conflist whose plugin has ``"type": "flannel"``.

The vxlan link is required; the rest adds evidence. The profile maps the VTEP (offset 0)
and the cni0 gateway (offset 1) of every node's podCIDR to that node, and drops the VXLAN
underlay (UDP to the VXLAN port between node addresses) as infrastructure.

Example::

    >>> from podflow.cni.snapshot import LinkInfo, NodeSnapshot
    >>> snap = NodeSnapshot(links=(LinkInfo("flannel.1", "vxlan", vxlan_id=1, vxlan_port=8472,
    ...                                     addresses=("10.244.0.0/32",)),))
    >>> d = detect(snap, "node1")
    >>> d.profile.name, d.profile.pod_cidrs
    ('flannel-vxlan', ('10.244.0.0/24',))
"""

from __future__ import annotations

import ipaddress
from typing import Any

from podflow.cni.profile import CniProfile, Detection, Tunnel
from podflow.cni.snapshot import LinkInfo, NodeSnapshot
from podflow.inventory.history import Inventory

NAME = "flannel-vxlan"
HELP = ("Flannel, VXLAN backend: cni0 bridge, flannel.<VNI> VXLAN device (UDP 8472), "
        "VTEP 10.244.N.0 and gateway 10.244.N.1 stand for node N, pod egress masqueraded.")
DEFAULT_PORT = 8472


def _flannel_vxlan_link(snapshot: NodeSnapshot) -> LinkInfo | None:
    for link in snapshot.links_of_kind("vxlan"):
        if link.name.startswith("flannel.") and link.name[len("flannel."):].isdigit():
            return link
    return None


def _conf_mentions_flannel(conf: Any) -> bool:
    plugins = conf.get("plugins") if isinstance(conf, dict) else None
    candidates = plugins if isinstance(plugins, list) else [conf]
    return any(isinstance(p, dict) and p.get("type") == "flannel" for p in candidates)


def _infer_node_name(inventory: Inventory | None, underlay: str | None) -> str | None:
    if inventory is None or underlay is None:
        return None
    return inventory.node_by_ip(underlay, float("inf"))


def detect(snapshot: NodeSnapshot, node_name: str | None = None,
           inventory: Inventory | None = None) -> Detection | None:
    """A flannel-vxlan :class:`Detection` if ``snapshot`` shows a ``flannel.<VNI>`` vxlan link.

    ``node_name`` defaults to the node whose address is the VTEP's underlay address in the
    inventory. Returns None when the datapath is not flannel-vxlan.
    """
    vx = _flannel_vxlan_link(snapshot)
    if vx is None:
        return None
    port = vx.vxlan_port or DEFAULT_PORT
    evidence = [f"vxlan link {vx.name} (VNI {vx.vxlan_id}, UDP port {port}, "
                f"local {vx.vxlan_local})"]
    if port != DEFAULT_PORT:
        evidence.append(f"note: VXLAN port {port} is not flannel's default {DEFAULT_PORT}")
    node = node_name or _infer_node_name(inventory, vx.vxlan_local) or "unknown"
    local: dict[str, str] = {}
    for a in vx.addresses:
        local[a.split("/")[0]] = node
    if vx.vxlan_local:
        local[vx.vxlan_local] = node
    pod_cidrs: list[str] = []
    cni0 = snapshot.link("cni0")
    if cni0 is not None and cni0.kind == "bridge":
        evidence.append(f"bridge cni0 with {', '.join(cni0.addresses) or 'no address'}")
        for a in cni0.addresses:
            local[a.split("/")[0]] = node
            if ":" not in a:
                pod_cidrs.append(str(ipaddress.ip_interface(a).network))
    onlink = [r for r in snapshot.routes if r.dev == vx.name and r.onlink and r.gateway]
    if onlink:
        evidence.append(f"{len(onlink)} onlink route(s) via {vx.name} to other nodes' VTEPs")
    env = snapshot.subnet_env
    cluster: list[str] = []
    if env.get("FLANNEL_NETWORK"):
        cluster.append(str(ipaddress.ip_network(env["FLANNEL_NETWORK"], strict=False)))
        evidence.append(f"subnet.env FLANNEL_NETWORK={env['FLANNEL_NETWORK']} "
                        f"FLANNEL_SUBNET={env.get('FLANNEL_SUBNET')}")
    if env.get("FLANNEL_SUBNET"):
        subnet = str(ipaddress.ip_interface(env["FLANNEL_SUBNET"]).network)
        pod_cidrs = [subnet] + [c for c in pod_cidrs if c != subnet]
    for name, conf in sorted(snapshot.cni_conf.items()):
        if _conf_mentions_flannel(conf):
            evidence.append(f"CNI config {name} uses plugin type flannel")
    if not pod_cidrs:
        # a VTEP 10.244.N.0/32 on its own still tells the node's /24 by flannel's convention
        pod_cidrs = [str(ipaddress.ip_network(a.split("/")[0] + "/24", strict=False))
                     for a in vx.addresses if ":" not in a]
        if pod_cidrs:
            evidence.append(f"pod CIDR assumed /24 around the VTEP address: {pod_cidrs[0]}")
    if not cluster and inventory is not None:
        nets = [ipaddress.IPv4Network(c, strict=False) for r in inventory.nodes()
                for c in r.pod_cidrs if ":" not in c]
        cluster = [str(n) for n in ipaddress.collapse_addresses(nets)]
    masq = env.get("FLANNEL_IPMASQ", "true").lower() == "true"
    profile = CniProfile(
        NAME, node, pod_cidrs=tuple(pod_cidrs), cluster_cidrs=tuple(cluster),
        gateway_offsets=(0, 1), local_addresses=tuple(sorted(local.items())),
        tunnels=(Tunnel(17, port, vx.name),), default_sources=("conntrack", "sockets", "packets"),
        masquerade=masq)
    return Detection(profile, tuple(evidence))
