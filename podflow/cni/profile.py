"""CNI profiles: what a node's datapath means for flows.

A :class:`CniProfile` says which addresses of the datapath stand for a node (a VTEP, a bridge
gateway, a tunnel device), which conntrack entries are the datapath's own plumbing
(infrastructure: the VXLAN underlay, loopback) and must be dropped, the cluster's pod ranges,
and which sources to run by default. Profiles are plain values built by the detectors of
:mod:`podflow.cni.detect`; everything here is pure.

Gateway rule: with ``gateway_offsets=(0, 1)`` (flannel), the address ``podCIDR + 0`` (the
flannel.1 VTEP, ``10.244.N.0``) and ``podCIDR + 1`` (the cni0 gateway, ``10.244.N.1``) of
*every* node's podCIDR, as the inventory knows them at the flow's time, stand for that node.
``local_addresses`` adds the addresses seen on this node's own devices, so the local node
resolves even before the inventory lists it.

Example::

    >>> p = CniProfile("flannel-vxlan", "node1", pod_cidrs=("10.244.0.0/24",),
    ...                cluster_cidrs=("10.244.0.0/16",), gateway_offsets=(0, 1))
    >>> from podflow.inventory.history import Inventory
    >>> p.node_for_address("10.244.0.1", Inventory(), 0.0)
    'node1'
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from podflow.inventory.history import Inventory, IPNetwork
from podflow.model.conntrack import CtEntry


@dataclass(frozen=True, slots=True)
class Tunnel:
    """An encapsulation whose underlay packets conntrack also tracks."""

    proto: int
    """IP protocol of the outer packets (17 for VXLAN)."""
    port: int
    """Destination port of the outer packets (8472 for flannel's VXLAN)."""
    device: str | None = None
    """The tunnel device, e.g. ``flannel.1``."""


def _nets(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


@dataclass(frozen=True, slots=True)
class CniProfile:
    """The interpretation of one node's datapath (see the module docstring)."""

    name: str
    """Profile name, e.g. ``flannel-vxlan`` (recorded in every Flow's ``cni_profile``)."""
    node_name: str
    """The node this profile was detected on."""
    pod_cidrs: tuple[str, ...] = ()
    """This node's pod range(s)."""
    cluster_cidrs: tuple[str, ...] = ()
    """The cluster's whole pod range(s), e.g. flannel's ``FLANNEL_NETWORK``."""
    service_cidrs: tuple[str, ...] = ()
    """Service ranges, when known."""
    gateway_offsets: tuple[int, ...] = ()
    """Offsets into each node's podCIDR whose address stands for that node."""
    local_addresses: tuple[tuple[str, str], ...] = ()
    """(address, node) pairs seen on this node's devices: VTEP, bridge gateway, underlay IP."""
    tunnels: tuple[Tunnel, ...] = ()
    """Encapsulations whose underlay conntrack entries are infrastructure."""
    default_sources: tuple[str, ...] = ("conntrack",)
    """Sources to run on this datapath unless the user says otherwise."""
    source_options: tuple[tuple[str, object], ...] = ()
    """Default source options on this datapath (the user's ``--source-option`` wins), e.g.
    ``(("sidecar", True),)`` where only capture inside the pods can see traffic."""
    masquerade: bool = False
    """Pod egress to outside the cluster range is masqueraded to the node IP."""
    control_ports: tuple[tuple[int, int], ...] = ()
    """(IP protocol, port) of the datapath's control sessions between nodes, e.g. BGP
    ``(6, 179)``: infrastructure, like a tunnel's underlay."""
    pod_gateway: str | None = None
    """The address pods use as their default gateway when it is no host at all (Calico's
    169.254.1.1, answered by proxy ARP): never an endpoint, never a node."""
    _pod_nets: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _all_nets: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _local: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pod = _nets(self.pod_cidrs + self.cluster_cidrs)
        object.__setattr__(self, "_pod_nets", pod)
        object.__setattr__(self, "_all_nets", pod + _nets(self.service_cidrs))
        object.__setattr__(self, "_local", dict(self.local_addresses))

    @property
    def cluster_networks(self) -> tuple[IPNetwork, ...]:
        """Pod and service ranges known to the profile."""
        return self._all_nets

    def node_for_address(self, ip: str, inv: Inventory, at: float) -> str | None:
        """The node a gateway/tunnel address stands for at ``at``, or None.

        Example::

            >>> CniProfile("x", "n1", gateway_offsets=(0,)).node_for_address(
            ...     "10.244.3.0", Inventory(), 0.0) is None   # no node has that podCIDR
            True
        """
        if ip == self.pod_gateway:
            return None
        local = self._local.get(ip)
        if local is not None:
            return local
        if not self.gateway_offsets:
            return None
        hit = inv.node_for_pod_cidr(ip, at)
        if hit is not None:
            node, net = hit
        else:
            own = next((n for n in _nets(self.pod_cidrs) if _contains(n, ip)), None)
            if own is None:
                return None
            node, net = self.node_name, own
        offset = int(ipaddress.ip_address(ip)) - int(net.network_address)
        return node if offset in self.gateway_offsets else None

    def is_pod_address(self, ip: str, inv: Inventory, at: float) -> bool:
        """Whether ``ip`` lies in a pod range (this profile's or any node's podCIDR)."""
        return any(_contains(n, ip) for n in self._pod_nets) or \
            inv.node_for_pod_cidr(ip, at) is not None

    def is_infrastructure(self, entry: CtEntry, inv: Inventory, at: float) -> bool:
        """Whether a conntrack entry is the datapath's own plumbing, not a flow to report.

        True for entries entirely on loopback, to multicast or broadcast, for the tunnel
        underlay (a tunnel's protocol and destination port) and for control sessions
        (``control_ports``, e.g. BGP), both between two addresses that are not pod addresses
        (node underlay IPs).
        """
        o, r = entry.orig, entry.reply
        if all(_is_loopback(a) for a in (o.src, o.dst, r.src, r.dst)):
            return True
        if _is_multicast(o.dst):  # IGMP/MLD membership reports, mDNS, SSDP: no connection
            return True
        for t in self.tunnels:
            if o.proto == t.proto and t.port in (o.dport, r.sport) and not (
                    self.is_pod_address(o.src, inv, at) or self.is_pod_address(o.dst, inv, at)):
                return True
        for proto, port in self.control_ports:
            if o.proto == proto and port in (o.dport, o.sport) and not (
                    self.is_pod_address(o.src, inv, at) or self.is_pod_address(o.dst, inv, at)):
                return True
        return False


def _contains(net: IPNetwork, ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in net
    except ValueError:
        return False


def _is_multicast(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return addr.is_multicast or (addr.version == 4 and str(addr) == "255.255.255.255")


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Detection:
    """The outcome of CNI detection: the profile and why it was chosen."""

    profile: CniProfile
    """The detected (or generic fallback) profile."""
    evidence: tuple[str, ...] = ()
    """Human-readable lines: what was seen on the node that supports the profile."""


def generic_profile(node_name: str) -> CniProfile:
    """The fallback for an unrecognised datapath: no gateway rules, loopback dropped only.

    Example::

        >>> generic_profile("n1").name
        'generic'
    """
    return CniProfile("generic", node_name)


def inventory_cluster_cidrs(inventory: Inventory | None) -> tuple[str, ...]:
    """The cluster's pod range as the union of every node's podCIDR in ``inventory``.

    Example::

        >>> inventory_cluster_cidrs(None)
        ()
    """
    if inventory is None:
        return ()
    nets = [ipaddress.IPv4Network(c, strict=False) for r in inventory.nodes()
            for c in r.pod_cidrs if ":" not in c]
    return tuple(str(n) for n in ipaddress.collapse_addresses(nets))
