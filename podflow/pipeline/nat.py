"""NAT resolution: undo service DNAT and SNAT/masquerade from one conntrack entry (pure).

A conntrack entry holds both tuples: ``orig`` as the client sent it, ``reply`` as the server
answers (the server's view, reversed). So, whatever the NAT:

- the client is ``orig.src:orig.sport`` (before any SNAT);
- the server is ``reply.src:reply.sport`` (after any DNAT: the backend);
- if ``orig.dst:dport`` differs from the server, DNAT happened: ``original_destination`` is
  ``orig.dst:dport``, and the service is found by frontend (ClusterIP/LoadBalancer VIP and
  port) or, when the destination is a node address, by nodePort;
- without DNAT, a destination that is a service frontend (the view was taken before the
  translation, e.g. the client's node masquerading a pod that dials another node's
  NodePort) still names the Service (:func:`addressed_service`), with the NAT left empty;
- if ``reply.dst:dport`` differs from the client, SNAT happened (masquerade to the node IP,
  the NodePort SNAT to the ingress node's VTEP/gateway/IP, hairpin masquerade to the cni0
  gateway): ``translated_source`` is ``reply.dst:dport``.

This covers ClusterIP DNAT (``clusterip``), NodePort with externalTrafficPolicy Cluster
(DNAT+SNAT) and Local (DNAT only) (``nodeport``), pod egress masquerade (``masquerade``),
hairpin (``hairpin``: the backend is the client itself), a second node's un-NATed view of
any of these and plain traffic (``none``). Infrastructure entries (the tunnel underlay,
loopback) are flagged, not resolved.

Example::

    >>> from podflow.cni.profile import CniProfile
    >>> from podflow.inventory.history import Inventory
    >>> from podflow.model.conntrack import CtEntry, CtEventType, CtTuple
    >>> e = CtEntry(CtEventType.DESTROY, CtTuple("10.244.0.5", "10.96.0.10", 6, 41000, 9000),
    ...             CtTuple("10.244.1.7", "10.244.0.5", 6, 9000, 41000))
    >>> r = resolve(e, Inventory(), CniProfile("generic", "n1"), 0.0)
    >>> str(r.client), str(r.server), str(r.nat.original_destination), r.case
    ('10.244.0.5:41000', '10.244.1.7:9000', '10.96.0.10:9000', 'dnat')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from podflow.cni.profile import CniProfile
from podflow.inventory.history import Inventory, ServiceFrontend
from podflow.model.conntrack import CtEntry
from podflow.model.flow import Address, EndpointKind, Nat, Service

L4_NAMES = {6: "TCP", 17: "UDP", 132: "SCTP"}
"""Protocols Kubernetes services carry, by IP protocol number."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """A conntrack entry with NAT undone."""

    client: Address
    """The real client (``orig.src``), before any SNAT."""
    server: Address
    """The real server (``reply.src``), after any DNAT: the backend."""
    service: Service | None = None
    """The Service the connection was load-balanced by, when one was found."""
    nat: Nat = field(default_factory=Nat)
    """What was undone: original destination (DNAT) and translated source (SNAT)."""
    is_infrastructure: bool = False
    """The entry is datapath plumbing (tunnel underlay, loopback): report no flow."""
    case: str = "none"
    """Which case applied: clusterip, loadbalancer, nodeport, dnat (no service known),
    hairpin, masquerade (SNAT only), none, infrastructure."""


def _is_node_address(ip: str, inv: Inventory, profile: CniProfile, at: float) -> bool:
    return inv.node_by_ip(ip, at) is not None or profile.node_for_address(ip, inv, at) is not None


def _service(fe: ServiceFrontend, dst: Address) -> Service:
    return Service(namespace=fe.service.namespace, name=fe.service.name, port_name=fe.port.name,
                   type=fe.type, frontend_ip=dst.ip, frontend_port=dst.port)


def find_service(dst: Address, proto: str, inv: Inventory, profile: CniProfile,
                 at: float) -> ServiceFrontend | None:
    """The service frontend a client reached at ``dst``: by VIP, else by nodePort.

    A nodePort matches when ``dst`` is a node address (InternalIP, VTEP, gateway, or an
    address on this node's devices). Only when the inventory lists no nodes at all is any
    address that is neither a pod address nor a service VIP accepted (kube-proxy answers
    nodePorts on every local address).
    """
    fe = inv.service_by_frontend(dst.ip, dst.port, proto, at)
    if fe is not None:
        return fe
    np = inv.service_by_nodeport(dst.port, proto, at)
    if np is None:
        return None
    if _is_node_address(dst.ip, inv, profile, at):
        return np
    unknown = not inv.nodes() and not profile.is_pod_address(dst.ip, inv, at) and \
        inv.identity(dst.ip, at).kind is not EndpointKind.SERVICE
    return np if unknown else None


def addressed_service(dst: Address, proto: int, inv: Inventory, profile: CniProfile,
                      at: float) -> Service | None:
    """The Service a client addressed at ``dst`` when no DNAT was seen: a view taken before
    the translation (a client's socket or packets toward a VIP, the client node's conntrack
    of a pod dialling another node's NodePort, an attempt kube-proxy dropped) still names
    the Service it went to, so it is never drawn as a connection to a VIP or to a node.

    >>> from podflow.inventory.history import Inventory
    >>> addressed_service(Address("10.96.0.10", 53), 17, Inventory(),
    ...                   CniProfile("generic", "n1"), 0.0) is None
    True
    """
    name = L4_NAMES.get(proto)
    if name is None:
        return None
    fe = inv.service_by_frontend(dst.ip, dst.port, name, at)
    if fe is None and _is_node_address(dst.ip, inv, profile, at):
        fe = inv.service_by_nodeport(dst.port, name, at)   # a node's own address: no guess
    return _service(fe, dst) if fe is not None else None


def resolve(entry: CtEntry, inv: Inventory, profile: CniProfile, at: float) -> Resolved:
    """Undo the NAT of ``entry`` as of time ``at`` (see the module docstring for the cases)."""
    o, r = entry.orig, entry.reply
    if profile.is_infrastructure(entry, inv, at):
        return Resolved(Address(o.src, o.sport), Address(o.dst, o.dport),
                        is_infrastructure=True, case="infrastructure")
    client, server = Address(o.src, o.sport), Address(r.src, r.sport)
    dnat = (o.dst, o.dport) != (r.src, r.sport)
    snat = (o.src, o.sport) != (r.dst, r.dport)
    original = Address(o.dst, o.dport) if dnat else None
    translated = Address(r.dst, r.dport) if snat else None
    service = None
    case = "masquerade" if snat else "none"
    if dnat:
        proto = L4_NAMES.get(o.proto)
        fe = find_service(original, proto, inv, profile, at) if proto and original else None
        if fe is not None and original is not None:
            service = _service(fe, original)
            case = fe.type.lower()
        else:
            case = "dnat"
        if client.ip == server.ip:
            case = "hairpin"
    else:
        service = addressed_service(server, o.proto, inv, profile, at)
    return Resolved(client, server, service, Nat(original, translated), case=case)
