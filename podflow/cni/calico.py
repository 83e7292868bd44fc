"""Calico (BGP and VXLAN backends): detectors and profiles.

What a Calico node looks like: one veth per pod whose host side is ``cali`` + 11 hex digits
(no address, proxy ARP; pods use 169.254.1.1 as their gateway, which is no host at all), a
``/32`` route per local pod, a blackhole route for each IPAM block the node owns, and
``/etc/cni/net.d/10-calico.conflist`` with ``"type": "calico"`` and ``calico-ipam``.

- ``calico-bgp``: other nodes' blocks are routes ``proto bird`` via their node IPs, learned
  over BGP (TCP 179 between node IPs: control traffic, dropped as infrastructure). No tunnel
  (``tunl0``/IPIP would add one; not on this kernel).
- ``calico-vxlan``: a ``vxlan.calico`` device (VNI 4096, UDP 4789) holding the node's tunnel
  address; other blocks are ``onlink`` routes via the remote tunnel addresses. The underlay
  UDP 4789 between node IPs is infrastructure; tunnel addresses stand for their node (traffic
  from a node to remote pods leaves with it).

Example::

    >>> from podflow.cni.snapshot import LinkInfo, NodeSnapshot
    >>> snap = NodeSnapshot(links=(LinkInfo("cali1234567890a", "veth"),))
    >>> detect_bgp(snap, "node1").profile.control_ports
    ((6, 179),)
"""

from __future__ import annotations

import ipaddress

from podflow.cni.profile import CniProfile, Detection, Tunnel, inventory_cluster_cidrs
from podflow.cni.snapshot import RTN_BLACKHOLE, RTPROT_BIRD, LinkInfo, NodeSnapshot
from podflow.inventory.history import Inventory

BGP, VXLAN = "calico-bgp", "calico-vxlan"
HELP_BGP = ("Calico, BGP (BIRD) without encapsulation: cali* veths, /32 pod routes, proxy-ARP "
            "gateway 169.254.1.1, blocks routed via node IPs (proto bird), BGP tcp/179 dropped.")
HELP_VXLAN = ("Calico, VXLAN backend: cali* veths, vxlan.calico (VNI 4096, UDP 4789) whose "
              "tunnel address stands for its node, onlink routes to other nodes' blocks.")
POD_GATEWAY = "169.254.1.1"
"""Calico's pod-side default gateway (proxy ARP): never an endpoint."""
VXLAN_DEV, VXLAN_PORT = "vxlan.calico", 4789
"""Calico's VXLAN device and its default UDP port."""


def _common(snapshot: NodeSnapshot, inventory: Inventory | None
            ) -> tuple[list[str], list[str], list[str]] | None:
    """(evidence, this node's blocks, cluster ranges), or None when nothing says Calico."""
    cali = [x for x in snapshot.links if x.name.startswith("cali") and x.kind == "veth"]
    conf = [(f, p) for f, p in snapshot.conf_plugins() if p.get("type") == "calico"]
    if not cali and not conf:
        return None
    evidence: list[str] = []
    if cali:
        evidence.append(f"{len(cali)} cali* pod veth(s), e.g. {cali[0].name} "
                        f"(MAC {cali[0].mac}): routed pods, gateway {POD_GATEWAY} by proxy ARP")
    pod_routes = [r for r in snapshot.routes if r.dev and r.dev.startswith("cali")
                  and r.dst.endswith("/32")]
    if pod_routes:
        evidence.append(f"{len(pod_routes)} /32 host route(s) to local pods")
    for f, p in conf:
        ipam = p.get("ipam", {}).get("type") if isinstance(p.get("ipam"), dict) else None
        evidence.append(f"CNI config {f} uses plugin type calico (ipam {ipam})")
    blocks = [r.dst for r in snapshot.routes if r.type == RTN_BLACKHOLE]
    if blocks:
        evidence.append(f"blackhole route(s) for this node's IPAM block(s): {', '.join(blocks)}")
    cluster = list(inventory_cluster_cidrs(inventory))
    if not cluster:
        nets = [ipaddress.IPv4Network(r.dst) for r in snapshot.routes
                if r.dst in blocks or r.protocol == RTPROT_BIRD
                or (r.dev == VXLAN_DEV and r.onlink)]
        cluster = [str(n) for n in ipaddress.collapse_addresses(nets)]
    return evidence, blocks, cluster


def _node(snapshot: NodeSnapshot, node_name: str | None, inventory: Inventory | None) -> str:
    underlay = snapshot.underlay_address()
    inferred = inventory.node_by_ip(underlay, float("inf")) \
        if inventory is not None and underlay else None
    return node_name or inferred or "unknown"


def detect_bgp(snapshot: NodeSnapshot, node_name: str | None = None,
               inventory: Inventory | None = None) -> Detection | None:
    """A calico-bgp :class:`Detection`, or None (not Calico, or Calico with vxlan.calico)."""
    if snapshot.link(VXLAN_DEV) is not None:
        return None
    node = _node(snapshot, node_name, inventory)
    found = _common(snapshot, inventory)
    if found is None:
        return None
    evidence, blocks, cluster = found
    bird = [r for r in snapshot.routes if r.protocol == RTPROT_BIRD and r.type != RTN_BLACKHOLE]
    if bird:
        evidence.append(f"{len(bird)} route(s) learned over BGP (proto bird): "
                        + ", ".join(f"{r.dst} via {r.gateway}" for r in bird[:4]))
    evidence.append("no vxlan.calico/tunl0 device: unencapsulated, BGP tcp/179 between nodes "
                    "is infrastructure")
    underlay = snapshot.underlay_address()
    local = {underlay: node} if underlay else {}
    profile = CniProfile(BGP, node, pod_cidrs=tuple(blocks), cluster_cidrs=tuple(cluster),
                         local_addresses=tuple(local.items()), control_ports=((6, 179),),
                         default_sources=("conntrack", "sockets", "packets"), masquerade=True,
                         pod_gateway=POD_GATEWAY)
    return Detection(profile, tuple(evidence))


def _offsets(vx: LinkInfo, snapshot: NodeSnapshot, blocks: list[str]) -> tuple[int, ...]:
    """Offsets of tunnel addresses into their blocks: the local one and the route gateways."""
    pairs = [(r.gateway, r.dst) for r in snapshot.routes
             if r.dev == VXLAN_DEV and r.onlink and r.gateway]
    pairs += [(a.split("/")[0], b) for a in vx.addresses for b in blocks]
    out = set()
    for ip, net in pairs:
        n, a = ipaddress.ip_network(net), ipaddress.ip_address(ip)
        if a in n:
            out.add(int(a) - int(n.network_address))
    return tuple(sorted(out))


def detect_vxlan(snapshot: NodeSnapshot, node_name: str | None = None,
                 inventory: Inventory | None = None) -> Detection | None:
    """A calico-vxlan :class:`Detection` if ``snapshot`` has a ``vxlan.calico`` link."""
    vx = snapshot.link(VXLAN_DEV)
    if vx is None or vx.kind != "vxlan":
        return None
    node = _node(snapshot, node_name, inventory)
    evidence, blocks, cluster = _common(snapshot, inventory) or ([], [], [])
    port = vx.vxlan_port or VXLAN_PORT
    evidence.insert(0, f"vxlan link {VXLAN_DEV} (VNI {vx.vxlan_id}, UDP port {port}, local "
                       f"{vx.vxlan_local}) with tunnel address {', '.join(vx.addresses)}")
    onlink = [r for r in snapshot.routes if r.dev == VXLAN_DEV and r.onlink and r.gateway]
    if onlink:
        evidence.append(f"{len(onlink)} onlink route(s) via {VXLAN_DEV} to other nodes' "
                        "tunnel addresses: " + ", ".join(f"{r.dst} via {r.gateway}"
                                                         for r in onlink[:4]))
    local = {a.split("/")[0]: node for a in vx.addresses}
    if vx.vxlan_local:
        local[vx.vxlan_local] = node
    if inventory is not None:   # remote tunnel addresses whose block a known node owns
        for r in onlink:
            hit = inventory.node_for_pod_cidr(str(r.gateway), float("inf"))
            if hit is not None:
                local[str(r.gateway)] = hit[0]
    profile = CniProfile(VXLAN, node, pod_cidrs=tuple(blocks), cluster_cidrs=tuple(cluster),
                         gateway_offsets=_offsets(vx, snapshot, blocks),
                         local_addresses=tuple(sorted(local.items())),
                         tunnels=(Tunnel(17, port, VXLAN_DEV),),
                         default_sources=("conntrack", "sockets", "packets"), masquerade=True,
                         pod_gateway=POD_GATEWAY)
    return Detection(profile, tuple(evidence))
