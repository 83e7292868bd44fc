"""The lab's physical network: a fabric netns, node netns on the underlay, external hosts.

The fabric netns plays the top-of-rack switch and the router to the outside: an ``underlay``
bridge (gateway = last usable underlay address) that every node's eth0 plugs into, and one
bridge per external /24 with its own gateway address. It forwards and never NATs (and sends
no ICMP redirects). Nothing is created in the root netns: veth pairs are created in the
fabric netns with the peer moved straight into the node or external netns. What a CNI adds
on the nodes (tunnels, routes, BGP) is the datapath's (:mod:`podflow.lab.datapath`).

Example::

    build(Topology(fabric="pf-shop-fabric", underlay="172.18.0.0/24", nodes=[...],
                   externals=[...]))
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from podflow.lab.datapath import Datapath
from podflow.lab.netns import add_netns, ip_batch, sysctl
from podflow.lab.spec import LabSpec
from podflow.lab.state import LAB_PREFIX, ExternalState, LabState, NodeState

NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.netfilter.nf_conntrack_acct": "1",
    "net.netfilter.nf_conntrack_timestamp": "1",
    "net.netfilter.nf_conntrack_events": "1",
}
"""Set in every node netns: routing, br_netfilter on cni0, conntrack accounting and events."""


@dataclass(frozen=True)
class NodeLink:
    """A node to plug into the underlay."""

    index: int
    netns: str
    ip: str
    node_cidr: str


@dataclass(frozen=True)
class ExternalLink:
    """An external host to plug into its subnet's bridge."""

    index: int
    netns: str
    ip: str


@dataclass
class Topology:
    """What :func:`build` wires."""

    fabric: str
    underlay: str
    nodes: list[NodeLink] = field(default_factory=list)
    externals: list[ExternalLink] = field(default_factory=list)
    fabric_extra: list[str] = field(default_factory=list)
    """More ``ip -batch`` lines for the fabric (e.g. gateways in macvlan pod subnets)."""

    def gateway(self) -> str:
        """The fabric's underlay address (last usable)."""
        return str(ipaddress.IPv4Network(self.underlay).broadcast_address - 1)

    def external_subnets(self) -> dict[ipaddress.IPv4Network, str]:
        """Each external /24 and the fabric's gateway in it (.1, or the first free one)."""
        taken: dict[ipaddress.IPv4Network, set[str]] = {}
        for e in self.externals:
            net = ipaddress.IPv4Network((e.ip, 24), strict=False)
            taken.setdefault(net, set()).add(e.ip)
        return {net: next(str(h) for h in net.hosts() if str(h) not in used)
                for net, used in sorted(taken.items())}


def build(topo: Topology) -> None:
    """Create every namespace and link of ``topo``."""
    add_netns([topo.fabric] + [n.netns for n in topo.nodes] + [e.netns for e in topo.externals])
    _build_fabric(topo)
    gw = topo.gateway()
    plen = ipaddress.IPv4Network(topo.underlay).prefixlen
    for n in topo.nodes:
        ip_batch(n.netns, ["link set lo up", f"addr add {n.ip}/{plen} dev eth0",
                           "link set eth0 up", f"route add default via {gw} dev eth0"])
        sysctl(n.netns, NODE_SYSCTLS)
    subnets = topo.external_subnets()
    for e in topo.externals:
        net = ipaddress.IPv4Network((e.ip, 24), strict=False)
        ip_batch(e.netns, ["link set lo up", f"addr add {e.ip}/24 dev eth0", "link set eth0 up",
                           f"route add default via {subnets[net]} dev eth0"])


def _build_fabric(topo: Topology) -> None:
    cmds = ["link set lo up", "link add underlay type bridge", "link set underlay up",
            f"addr add {topo.gateway()}/{ipaddress.IPv4Network(topo.underlay).prefixlen} "
            "dev underlay"]
    bridges: dict[ipaddress.IPv4Network, str] = {}
    for i, (net, gw) in enumerate(topo.external_subnets().items()):
        bridges[net] = f"ext{i}"
        cmds += [f"link add ext{i} type bridge", f"link set ext{i} up",
                 f"addr add {gw}/24 dev ext{i}"]
    for n in topo.nodes:
        cmds += [f"link add n{n.index} type veth peer name eth0 netns {n.netns}",
                 f"link set n{n.index} master underlay", f"link set n{n.index} up"]
    for e in topo.externals:
        br = bridges[ipaddress.IPv4Network((e.ip, 24), strict=False)]
        cmds += [f"link add x{e.index} type veth peer name eth0 netns {e.netns}",
                 f"link set x{e.index} master {br}", f"link set x{e.index} up"]
    ip_batch(topo.fabric, cmds + topo.fabric_extra)
    sysctl(topo.fabric, {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.send_redirects": "0",
                         "net.ipv4.conf.default.send_redirects": "0",
                         "net.bridge.bridge-nf-call-iptables": "0"})


def build_network(state: LabState, spec: LabSpec, dp: Datapath) -> None:
    """Build the fabric, nodes and externals of ``spec`` and then ``dp``'s node datapath,
    recording them in ``state``; saved before anything is made so ``down`` finds it all."""
    prefix = f"{LAB_PREFIX}{spec.name}-"
    topo = Topology(fabric=f"{prefix}fabric", underlay=spec.underlay)
    for k in range(1, spec.nodes + 1):
        cidr = str(spec.node_cidr(k))
        vtep = None if dp.tunnel_offset is None else \
            str(spec.node_cidr(k).network_address + dp.tunnel_offset)
        node = NodeState(name=f"node{k}", index=k, netns=f"{prefix}node{k}",
                         ip=spec.node_ip(k), podCIDR=cidr, vtep_ip=vtep)
        state.nodes.append(node)
        topo.nodes.append(NodeLink(k, node.netns, node.ip, cidr))
    for i, e in enumerate(spec.externals):
        ext = ExternalState(name=e.name, ip=e.ip, netns=f"{prefix}ext-{e.name}",
                            ports=[str(p) for p in e.ports], dns_names=list(e.dns))
        state.externals.append(ext)
        topo.externals.append(ExternalLink(i, ext.netns, ext.ip))
    state.extra_netns = [topo.fabric]
    topo.fabric_extra = dp.fabric_commands(state)
    state.save()
    build(topo)
    for n in state.nodes:
        dp.write_node_files(state, n)
    dp.setup_nodes(state)
    state.save()
