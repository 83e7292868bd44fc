"""Flannel with the host-gw backend: detector and profile.

What a flannel-host-gw node looks like: the ``cni0`` bridge holding the pods' gateway
``10.244.N.1/24`` and flannel's files (``subnet.env``, a conflist with ``"type": "flannel"``)
as with VXLAN, but no ``flannel.<VNI>`` device: other nodes' pod subnets are plain routes
``10.244.M.0/24 via <node M's IP> dev eth0``. Nothing is encapsulated, so there is no
infrastructure traffic to drop; the cni0 gateway (offset 1) of every node's podCIDR stands
for that node, and node-originated traffic to remote pods carries the node IP.

Example::

    >>> from podflow.cni.snapshot import LinkInfo, NodeSnapshot
    >>> snap = NodeSnapshot(links=(LinkInfo("cni0", "bridge", addresses=("10.244.0.1/24",)),),
    ...                     subnet_env={"FLANNEL_NETWORK": "10.244.0.0/16"})
    >>> detect(snap, "node1").profile.gateway_offsets
    (1,)
"""

from __future__ import annotations

import ipaddress

from podflow.cni.flannel import _flannel_vxlan_link
from podflow.cni.profile import CniProfile, Detection, inventory_cluster_cidrs
from podflow.cni.snapshot import NodeSnapshot
from podflow.inventory.history import Inventory

NAME = "flannel-host-gw"
HELP = ("Flannel, host-gw backend: cni0 bridge, routes to other nodes' pod subnets via their "
        "node IPs (no tunnel), gateway 10.244.N.1 stands for node N, pod egress masqueraded.")


def detect(snapshot: NodeSnapshot, node_name: str | None = None,
           inventory: Inventory | None = None) -> Detection | None:
    """A flannel-host-gw :class:`Detection`, or None (a flannel.N vxlan link means VXLAN)."""
    cni0 = snapshot.link("cni0")
    env = snapshot.subnet_env
    flannel_conf = [f for f, p in snapshot.conf_plugins() if p.get("type") == "flannel"]
    if cni0 is None or cni0.kind != "bridge" or _flannel_vxlan_link(snapshot) is not None:
        return None
    if not flannel_conf and not env.get("FLANNEL_NETWORK"):
        return None
    underlay = snapshot.underlay_address()
    node = node_name or (inventory.node_by_ip(underlay, float("inf"))
                         if inventory is not None and underlay else None) or "unknown"
    evidence = [f"bridge cni0 with {', '.join(cni0.addresses) or 'no address'}",
                "no flannel.<VNI> VXLAN device"]
    local = {a.split("/")[0]: node for a in cni0.addresses}
    if underlay:
        local[underlay] = node
    pod_cidrs = [str(ipaddress.ip_interface(a).network) for a in cni0.addresses if ":" not in a]
    cluster = [str(ipaddress.ip_network(env["FLANNEL_NETWORK"], strict=False))] \
        if env.get("FLANNEL_NETWORK") else list(inventory_cluster_cidrs(inventory))
    nets = [ipaddress.ip_network(c) for c in cluster]
    direct = [r for r in snapshot.routes if r.gateway and not r.onlink and r.dev != "cni0"
              and any(ipaddress.ip_network(r.dst).subnet_of(n) for n in nets  # type: ignore[arg-type]
                      if r.dst != "0.0.0.0/0")]
    if direct:
        evidence.append(f"{len(direct)} route(s) to other nodes' pod subnets via their node "
                        f"IPs (host-gw): " + ", ".join(f"{r.dst} via {r.gateway}"
                                                      for r in direct[:4]))
    if env.get("FLANNEL_NETWORK"):
        evidence.append(f"subnet.env FLANNEL_NETWORK={env['FLANNEL_NETWORK']} "
                        f"FLANNEL_SUBNET={env.get('FLANNEL_SUBNET')} "
                        f"FLANNEL_MTU={env.get('FLANNEL_MTU')}")
    if env.get("FLANNEL_SUBNET"):
        subnet = str(ipaddress.ip_interface(env["FLANNEL_SUBNET"]).network)
        pod_cidrs = [subnet] + [c for c in pod_cidrs if c != subnet]
    evidence += [f"CNI config {f} uses plugin type flannel" for f in flannel_conf]
    masq = env.get("FLANNEL_IPMASQ", "true").lower() == "true"
    profile = CniProfile(NAME, node, pod_cidrs=tuple(pod_cidrs), cluster_cidrs=tuple(cluster),
                         gateway_offsets=(1,), local_addresses=tuple(sorted(local.items())),
                         default_sources=("conntrack", "sockets", "packets"), masquerade=masq)
    return Detection(profile, tuple(evidence))
