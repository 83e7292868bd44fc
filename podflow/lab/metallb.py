"""MetalLB's layer-2 mode in the lab: which node makes a LoadBalancer VIP reachable, and how.

MetalLB's controller gives each LoadBalancer Service a VIP from an address pool (the lab does
it when it parses the spec, :mod:`podflow.lab.spec`); then, per VIP, every speaker runs the
same stateless election and exactly one node announces it (``speaker/layer2_controller.go``,
``ShouldAnnounce``): nobody if the Service has no ready endpoint; otherwise the candidates are
all nodes (externalTrafficPolicy Cluster) or the nodes with a ready endpoint of the Service
(Local, so that traffic arriving there has a local backend), sorted by
``sha256(node name + "#" + VIP)``, and the first one wins. :func:`elect` is that rule.

The winner makes the VIP reachable by answering ARP for it on the nodes' L2 segment. MetalLB's
speaker does that from user space (a raw socket answering who-has for an address no interface
carries, plus a gratuitous ARP on takeover). The lab lets the holder's kernel do it instead:
the VIP is added as a /32 to the holder's ``lo`` (:func:`announce_commands`), and with
``arp_ignore`` 0 (:data:`ANNOUNCE_SYSCTLS`) Linux answers ARP on eth0 for any local address,
as kube-proxy's IPVS mode does with the VIPs on its ``kube-ipvs0`` dummy device (these
machines have no ``dummy`` links, and ``lo`` is the one device every netns has that carries
no traffic of its own). On the wire it is the same: the fabric asks who has the VIP, the
holder's MAC answers, the packet reaches the holder, and kube-proxy's "loadbalancer IP" rule
in PREROUTING DNATs it. What differs: on the holder the VIP is a local address, so
``--dst-type LOCAL`` matches it and a port nobody serves is answered by the holder itself
(IPVS mode has the same property; kube-proxy's VIP rule comes before KUBE-NODEPORTS, so
services are unaffected). When the holder changes (:func:`announce`), the VIP moves and the
fabric's neighbour entry for it is dropped, standing in for the gratuitous ARP.

The address lives in the node namespace, so ``lab down`` (which deletes the namespaces)
removes it with nothing else to clean up.

Example::

    elect(state, state.service("shop", "frontend-lb"))   # 'node2'
    announce(state)   # (re)place every VIP on its holder's lo; records ServiceState.lb_holder
"""

from __future__ import annotations

import contextlib
import hashlib

from podflow.lab.netns import LabError, ip_batch, sysctl
from podflow.lab.state import LAB_PREFIX, LabState, ServiceState

ANNOUNCE_SYSCTLS = {"net.ipv4.conf.all.arp_ignore": "0", "net.ipv4.conf.eth0.arp_ignore": "0"}
"""Set on a holder node: answer ARP on eth0 for the VIP held on ``lo`` (the kernel default; a
new netns inherits the host's value, so it is set rather than assumed)."""


def endpoint_nodes(state: LabState, svc: ServiceState) -> set[str]:
    """Nodes running a ready endpoint of ``svc`` (a pod of its namespace with an IP that
    matches its selector)."""
    sel = svc.selector.items()
    return {p.node for p in state.pods
            if p.namespace == svc.namespace and p.ip and sel and sel <= p.labels.items()}


def candidates(state: LabState, svc: ServiceState) -> list[str]:
    """The nodes that may announce ``svc``'s VIP, in MetalLB's election order (first wins)."""
    if svc.type != "LoadBalancer" or not svc.loadBalancerIP:
        return []
    ready = endpoint_nodes(state, svc)
    if not ready:
        return []
    names = [n.name for n in state.nodes]
    if svc.externalTrafficPolicy == "Local":
        names = [n for n in names if n in ready]
    vip = svc.loadBalancerIP
    return sorted(names, key=lambda n: hashlib.sha256(f"{n}#{vip}".encode()).digest())


def elect(state: LabState, svc: ServiceState) -> str | None:
    """The node that announces ``svc``'s VIP, or None (not a LoadBalancer, no VIP, no ready
    endpoint, or with externalTrafficPolicy Local none on any node)."""
    order = candidates(state, svc)
    return order[0] if order else None


def announce_commands(vip: str) -> list[str]:
    """``ip -batch`` lines that make a node hold ``vip`` (idempotent)."""
    return [f"addr replace {vip}/32 dev lo"]


def withdraw_commands(vip: str) -> list[str]:
    """``ip -batch`` lines that make a node stop holding ``vip``."""
    return [f"addr del {vip}/32 dev lo"]


def announce(state: LabState) -> list[ServiceState]:
    """Place every LoadBalancer VIP on its elected holder (root; changes the kernel).

    A VIP whose holder changed is withdrawn from the old one first (which may be gone) and the
    fabric forgets its neighbour entry. Updates ``lb_holder``; returns the services it moved.
    """
    fabric = f"{LAB_PREFIX}{state.name}-fabric"
    moved = []
    for svc in state.services:
        vip = svc.loadBalancerIP
        if svc.type != "LoadBalancer" or not vip:
            continue
        new = elect(state, svc)
        if new == svc.lb_holder:
            continue
        if svc.lb_holder is not None:
            with contextlib.suppress(LabError, KeyError):
                ip_batch(state.node(svc.lb_holder).netns, withdraw_commands(vip))
            with contextlib.suppress(LabError):
                ip_batch(fabric, [f"neigh flush to {vip}"])
        if new is not None:
            node = state.node(new)
            sysctl(node.netns, ANNOUNCE_SYSCTLS)
            ip_batch(node.netns, announce_commands(vip))
        svc.lb_holder = new
        moved.append(svc)
    return moved
