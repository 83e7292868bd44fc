"""What flanneld (vxlan backend) programs on a node: flannel.1, peers, masquerade rules.

For every other node M flanneld writes exactly three kernel objects on flannel.1:
a permanent ARP entry VTEP_IP(M) -> VTEP_MAC(M), an FDB entry VTEP_MAC(M) -> NODE_IP(M),
and a route to M's pod subnet via VTEP_IP(M) ``onlink``. Its masquerade rules live in the
nat table chain FLANNEL-POSTRTG.

:class:`FlannelVxlan` is the lab datapath ``cni: flannel-vxlan``: those objects on every
node, pods on ``cni0`` through the real ``bridge`` plugin (:mod:`podflow.lab.cniplugin`).

Example::

    ip_batch(ns, vxlan_commands("172.18.0.1", "10.244.0.0"))
    ip_batch(ns, peer_ip_commands(peers)); bridge_batch(ns, peer_fdb_commands(peers))
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from podflow.lab import cniplugin
from podflow.lab.datapath import Datapath, node_dir
from podflow.lab.netns import bridge_batch, ip_batch, ip_json
from podflow.lab.state import LabState, NodeState, PodState

VXLAN_DEV = "flannel.1"
"""Flannel's VXLAN device (``flannel.<VNI>``)."""
VNI = 1
"""VXLAN network identifier."""
VXLAN_PORT = 8472
"""Flannel's (Linux's legacy) VXLAN UDP port."""
MTU = 1450
"""flannel.1 MTU on a 1500-byte underlay."""
MASQ_COMMENT = "flanneld masq"
"""Comment on every masquerade rule, as flanneld writes it."""


@dataclass(frozen=True)
class Peer:
    """Another node as flanneld learns it from the node's lease annotations."""

    node_ip: str
    """Public (underlay) IP: ``flannel.alpha.coreos.com/public-ip``."""
    vtep_ip: str
    """The .0 of its pod subnet."""
    vtep_mac: str
    """Its flannel.1 MAC: ``flannel.alpha.coreos.com/backend-data``."""
    subnet: str
    """Its pod subnet (lease)."""


def vtep_ip(node_cidr: str) -> str:
    """flannel.1 address of a node: the network address of its pod subnet."""
    return str(ipaddress.IPv4Network(node_cidr).network_address)


def vxlan_commands(node_ip: str, vtep: str) -> list[str]:
    """``ip -batch`` lines creating flannel.1 on a node (underlay device eth0)."""
    return [
        f"link add {VXLAN_DEV} type vxlan id {VNI} local {node_ip} dev eth0 "
        f"dstport {VXLAN_PORT} nolearning",
        f"link set {VXLAN_DEV} mtu {MTU}",
        f"addr add {vtep}/32 dev {VXLAN_DEV}",
        f"link set {VXLAN_DEV} up",
    ]


def peer_ip_commands(peers: list[Peer]) -> list[str]:
    """``ip -batch`` lines for the neighbour and route of every peer."""
    out: list[str] = []
    for p in peers:
        out.append(f"neigh replace {p.vtep_ip} lladdr {p.vtep_mac} dev {VXLAN_DEV} "
                   "nud permanent")
        out.append(f"route replace {p.subnet} via {p.vtep_ip} dev {VXLAN_DEV} onlink")
    return out


def peer_fdb_commands(peers: list[Peer]) -> list[str]:
    """``bridge -batch`` lines: forward each peer VTEP MAC to its node IP."""
    return [f"fdb replace {p.vtep_mac} dev {VXLAN_DEV} dst {p.node_ip} self permanent"
            for p in peers]


def masq_rules(network: str, node_cidr: str) -> list[str]:
    """iptables-restore lines (nat table) for flanneld's masquerade of one node.

    Order as flanneld writes it: leave kube-proxy-marked packets to kube-proxy, pod to pod
    stays unNATed, non-pod sources to local pods are untouched, pods leaving the cluster are
    masqueraded to the node (not for multicast), and the node itself talking to remote pods
    is masqueraded (to the flannel.1 address when it leaves there).
    """
    c = f'-m comment --comment "{MASQ_COMMENT}"'
    chain = "FLANNEL-POSTRTG"
    return [
        f":{chain} - [0:0]",
        f"-A POSTROUTING {c} -j {chain}",
        f"-A {chain} -m mark --mark 0x4000/0x4000 {c} -j RETURN",
        f"-A {chain} -s {node_cidr} -d {network} {c} -j RETURN",
        f"-A {chain} -s {network} -d {node_cidr} {c} -j RETURN",
        f"-A {chain} ! -s {network} -d {node_cidr} {c} -j RETURN",
        f"-A {chain} -s {network} ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully",
        f"-A {chain} ! -s {network} -d {network} {c} -j MASQUERADE --random-fully",
    ]


def link_mac(netns: str, dev: str) -> str:
    """The MAC the kernel gave ``dev`` in ``netns``."""
    return str(ip_json(netns, "link", "show", "dev", dev)[0]["address"])


class FlannelVxlan(Datapath):
    """``cni: flannel-vxlan``: cni0 bridge + flannel.1 with flanneld's per-peer entries."""

    name = "flannel-vxlan"
    tunnel_offset: int | None = 0
    backend = "vxlan"
    """kube-flannel's ``Backend.Type``."""

    def write_node_files(self, state: LabState, node: NodeState) -> None:
        """10-flannel.conflist, net-conf.json and subnet.env of the node's lease."""
        cniplugin.write_node_files(node_dir(state, node), state.podCIDR, node.podCIDR,
                                   self.backend)

    def setup_nodes(self, state: LabState) -> None:
        """flannel.1 on every node, then every peer's neighbour, FDB and route entries."""
        for n in state.nodes:
            ip_batch(n.netns, vxlan_commands(n.ip, vtep_ip(n.podCIDR)))
            n.vtep_mac = link_mac(n.netns, VXLAN_DEV)
        state.save()
        for n in state.nodes:
            peers = [Peer(m.ip, vtep_ip(m.podCIDR), str(m.vtep_mac), m.podCIDR)
                     for m in state.nodes if m is not n]
            ip_batch(n.netns, peer_ip_commands(peers))
            bridge_batch(n.netns, peer_fdb_commands(peers))

    def add_pod(self, state: LabState, node: NodeState, pod: PodState) -> str:
        """The bridge plugin with flannel's delegate config."""
        return cniplugin.cni_add(node_dir(state, node), node.netns,
                                 cniplugin.container_id(pod.uid), pod.netns)

    def del_pod(self, state: LabState, node: NodeState, pod: PodState) -> None:
        """Replay the saved delegate config with DEL."""
        cniplugin.cni_del(node_dir(state, node), node.netns, cniplugin.container_id(pod.uid),
                          pod.netns)

    def nat_rules(self, state: LabState, node: NodeState) -> list[str]:
        """flanneld's FLANNEL-POSTRTG masquerade chain."""
        return masq_rules(state.podCIDR, node.podCIDR)

    def node_annotations(self, state: LabState, node: NodeState) -> dict[str, str]:
        """flanneld's (kube subnet manager): public IP, backend type and, for the VXLAN
        backend once the node has its VTEP, the backend data (VNI, VTEP MAC)."""
        del state
        ann = {"flannel.alpha.coreos.com/public-ip": node.ip,
               "flannel.alpha.coreos.com/backend-type": self.backend,
               "flannel.alpha.coreos.com/kube-subnet-manager": "true"}
        if node.vtep_mac and self.backend == "vxlan":
            ann["flannel.alpha.coreos.com/backend-data"] = json.dumps(
                {"VNI": VNI, "VtepMAC": node.vtep_mac}, separators=(",", ":"))
        return ann
