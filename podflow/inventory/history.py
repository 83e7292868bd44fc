"""Time-indexed cluster inventory: which pod, node or service held an address, and when.

:class:`Inventory` is fed whole snapshots of the cluster state (:class:`ClusterObjects`) with
``apply(objects, at)`` and diffs each against the previous one:

- a new pod IP opens an interval at the pod's ``creationTimestamp``; without one it opens
  at ``at``, except on the very first snapshot, where it opens at -inf (the pod predates
  us and we do not know by how much);
- a vanished pod (or one that reached Succeeded/Failed, which releases its IP) closes its
  interval at ``at``, or at its ``deletionTimestamp`` if one was seen and is earlier;
- when an IP is re-used before the previous holder's end was seen (both changes in one
  snapshot), the intervals overlap and the latest-starting holder wins, so the old pod
  keeps the IP up to the new pod's creation and not a moment after;
- nodes, node pod CIDRs, service frontends and nodePorts are time-indexed the same way.

Retention: intervals that ended more than ``retention`` seconds (default 3600) before the
latest ``apply`` are dropped; flows older than that resolve as unknown/external.
Lookups are dict lookups plus a walk over the few intervals of one key.

Host-network pods are not indexed by IP: their address is the node's, and resolves to it.
They are indexed instead by the ports they declare (``spec.containers[].ports[]``), as
(node, port, protocol), with the same interval rules as pod IPs: asked with a port and
protocol (the *server* end of a connection, see :meth:`Inventory.identity`), a node address
whose port a host-network pod on that node declared resolves to that pod
(``host-network-pod``). A host-network pod that declares no port, or one reached at a port
it did not declare, stays its node.

Example::

    >>> from podflow.inventory.k8s import ClusterObjects, PodRecord
    >>> inv = Inventory()
    >>> _ = inv.apply(ClusterObjects(pods=(PodRecord("shop", "web-1", "u1", ("10.244.0.5",),
    ...                                               created=100.0),)), at=200.0)
    >>> inv.identity("10.244.0.5", 150.0).pod_name, inv.identity("10.244.0.5", 50.0).kind
    ('web-1', <EndpointKind.EXTERNAL: 'external'>)

A host-network pod serving TCP 7070 on ``node1``::

    >>> from podflow.inventory.k8s import ContainerPort, NodeRecord
    >>> agent = PodRecord("mon", "agent-1", "u2", ("172.18.0.2",), "node1", host_network=True,
    ...                   created=100.0, ports=(ContainerPort(7070, "TCP", 7070),))
    >>> _ = inv.apply(ClusterObjects(pods=(agent,), nodes=(NodeRecord("node1",
    ...     ("172.18.0.2",)),)), at=300.0)
    >>> inv.identity("172.18.0.2", 350.0, port=7070, proto="TCP").pod_name
    'agent-1'
    >>> inv.identity("172.18.0.2", 350.0, port=22, proto="TCP").kind
    <EndpointKind.NODE: 'node'>
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from podflow.inventory.k8s import (
    ClusterObjects,
    ControllerRecord,
    Labels,
    NodeRecord,
    ServicePort,
    ServiceRecord,
    top_owner,
)
from podflow.model.flow import EndpointKind, Workload

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
DEFAULT_RETENTION = 3600.0
"""Seconds a closed interval is kept after it ended."""


@dataclass(frozen=True, slots=True)
class Identity:
    """What an address stood for at one instant (the identity half of an Endpoint)."""

    kind: EndpointKind
    namespace: str | None = None
    pod_name: str | None = None
    workload: Workload | None = None
    labels: Labels = ()
    node_name: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceFrontend:
    """A service port reached through one frontend (ClusterIP, NodePort or LoadBalancer)."""

    service: ServiceRecord
    port: ServicePort
    type: str
    """``ClusterIP``, ``NodePort`` or ``LoadBalancer``: how the client reached it."""


class AddressRules(Protocol):
    """What a CNI profile adds to identity: gateway/tunnel addresses and cluster ranges."""

    def node_for_address(self, ip: str, inv: Inventory, at: float) -> str | None:
        """The node a gateway or tunnel address stands for, if ``ip`` is one."""
        ...

    @property
    def cluster_networks(self) -> tuple[IPNetwork, ...]:
        """Pod and service ranges of the cluster known to the profile."""
        ...


@dataclass(slots=True)
class _Interval(Generic[V]):
    start: float
    value: V
    end_hint: float | None
    end: float | None = None


def _start(iv: _Interval[Any]) -> float:
    return iv.start


class _Timeline(Generic[K, V]):
    """key -> intervals of values; each value has a holder id (pod uid, node name ...)."""

    def __init__(self) -> None:
        self._by_key: dict[K, list[_Interval[V]]] = {}
        self._live: dict[tuple[K, str], _Interval[V]] = {}

    def sync(self, current: dict[tuple[K, str], V], at: float, first: bool,
             hints: Mapping[tuple[K, str], tuple[float | None, float | None]] | None = None,
             ) -> bool:
        """Make the live set equal ``current`` ((key, holder) -> value); ``hints`` gives
        (start, end) timestamps per (key, holder) when known."""
        hints = hints or {}
        changed = False
        for lk in [lk for lk in self._live if lk not in current]:
            iv = self._live.pop(lk)
            end = iv.end_hint if iv.end_hint is not None and iv.end_hint < at else at
            iv.end = max(end, iv.start)
            changed = True
        for lk, value in current.items():
            start_hint, end_hint = hints.get(lk, (None, None))
            live = self._live.get(lk)
            if live is not None:
                changed |= live.value != value
                live.value, live.end_hint = value, end_hint
                continue
            start = start_hint if start_hint is not None else (float("-inf") if first else at)
            iv = self._live[lk] = _Interval(start, value, end_hint)
            # kept sorted by start, a new one after equal starts (as a stable sort would);
            # insort, not append + sort: many holders of one key must not cost O(n^2 log n)
            bisect.insort(self._by_key.setdefault(lk[0], []), iv, key=_start)
            changed = True
        return changed

    def lookup(self, key: K, at: float) -> V | None:
        """The value held for ``key`` at ``at``, the latest-starting interval winning."""
        for iv in reversed(self._by_key.get(key, ())):
            if iv.start <= at and (iv.end is None or at < iv.end):
                return iv.value
        return None

    def all_keys(self) -> list[K]:
        """Every key with an interval."""
        return list(self._by_key)

    def prune(self, before: float) -> None:
        """Drop intervals that ended before ``before``."""
        for key in list(self._by_key):
            kept = [iv for iv in self._by_key[key] if iv.end is None or iv.end >= before]
            if kept:
                self._by_key[key] = kept
            else:
                del self._by_key[key]


def _longest_match(ip: str, prefix_lens: Iterable[int], get: Callable[[IPNetwork], V | None],
                   ) -> tuple[V, IPNetwork] | None:
    """Longest-prefix match by masking ``ip`` to each length (longest first) and ``get``."""
    for plen in prefix_lens:
        try:
            net = ipaddress.ip_network(f"{ip}/{plen}", strict=False)
        except ValueError:
            continue
        value = get(net)
        if value is not None:
            return value, net
    return None


def _net(text: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


class Inventory:
    """The time-indexed cluster inventory (see the module docstring).

    Args:
        retention: seconds to keep intervals after they ended.
        cluster_cidrs: extra pod ranges (e.g. flannel's network) counted as in-cluster.
        service_cidrs: service ranges; a VIP inside one but unknown resolves as unknown.
    """

    def __init__(self, retention: float = DEFAULT_RETENTION, cluster_cidrs: Iterable[str] = (),
                 service_cidrs: Iterable[str] = ()) -> None:
        self.retention = retention
        self._configured = [n for n in map(_net, [*cluster_cidrs, *service_cidrs]) if n]
        self._pods: _Timeline[str, Identity] = _Timeline()
        self._host_ports: _Timeline[tuple[str, int, str], Identity] = _Timeline()
        self._node_ips: _Timeline[str, Identity] = _Timeline()
        self._pod_cidrs: _Timeline[IPNetwork, str] = _Timeline()
        self._vips: _Timeline[str, Identity] = _Timeline()
        self._frontends: _Timeline[tuple[str, int, str], ServiceFrontend] = _Timeline()
        self._nodeports: _Timeline[tuple[int, str], ServiceFrontend] = _Timeline()
        self._nodes: dict[str, NodeRecord] = {}
        self._ext_exact: dict[str, str] = {}
        self._ext_nets: dict[IPNetwork, str] = {}
        self._ext_lens: list[int] = []
        self._cidr_lens: list[int] = []
        self._networks: tuple[IPNetwork, ...] = tuple(self._configured)
        self._applied = 0
        self.last_apply: float | None = None

    def apply(self, objects: ClusterObjects, at: float) -> bool:
        """Diff a full snapshot of the cluster state taken at ``at``; True if anything changed."""
        first = self._applied == 0
        self._applied += 1
        self.last_apply = at
        ctl = {(c.kind, c.namespace, c.name): c for c in objects.controllers}
        pods, hints = self._pod_entries(objects, ctl)
        changed = self._pods.sync(pods, at, first, hints)
        ports, port_hints = self._host_port_entries(objects, ctl)
        changed |= self._host_ports.sync(ports, at, first, port_hints)
        nodes: dict[tuple[str, str], Identity] = {}
        cidrs: dict[tuple[IPNetwork, str], str] = {}
        for n in objects.nodes:
            ident = Identity(EndpointKind.NODE, labels=n.labels, node_name=n.name, name=n.name)
            nodes.update({(ip, n.name): ident for ip in n.internal_ips})
            cidrs.update({(net, n.name): n.name for net in map(_net, n.pod_cidrs) if net})
        changed |= self._node_ips.sync(nodes, at, first)
        changed |= self._pod_cidrs.sync(cidrs, at, first)
        self._nodes = {n.name: n for n in objects.nodes}
        self._cidr_lens = sorted({k.prefixlen for k in self._pod_cidrs.all_keys()}, reverse=True)
        changed |= self._sync_services(objects.services, at, first)
        changed |= self._set_external_names(objects.external_names)
        known = [*self._configured, *self._pod_cidrs.all_keys()]
        self._networks = tuple(ipaddress.collapse_addresses(n for n in known if n.version == 4)) \
            + tuple(ipaddress.collapse_addresses(n for n in known if n.version == 6))
        timelines: list[_Timeline[Any, Any]] = [self._pods, self._host_ports, self._node_ips,
                                                self._pod_cidrs, self._vips, self._frontends,
                                                self._nodeports]
        for tl in timelines:
            tl.prune(at - self.retention)
        return changed

    @staticmethod
    def _pod_entries(objects: ClusterObjects, ctl: dict[tuple[str, str, str], ControllerRecord],
                     ) -> tuple[dict[tuple[str, str], Identity],
                                dict[tuple[str, str], tuple[float | None, float | None]]]:
        out: dict[tuple[str, str], Identity] = {}
        hints: dict[tuple[str, str], tuple[float | None, float | None]] = {}
        for p in objects.pods:
            if p.host_network or p.phase in ("Succeeded", "Failed"):
                continue
            ident = Identity(EndpointKind.POD, p.namespace, p.name, top_owner(p, ctl),
                             p.labels, p.node_name)
            for ip in p.ips:
                out[(ip, p.uid)], hints[(ip, p.uid)] = ident, (p.created, p.deleted)
        return out, hints

    @staticmethod
    def _host_port_entries(objects: ClusterObjects,
                           ctl: dict[tuple[str, str, str], ControllerRecord],
                           ) -> tuple[dict[tuple[tuple[str, int, str], str], Identity],
                                      dict[tuple[tuple[str, int, str], str],
                                           tuple[float | None, float | None]]]:
        """((node, port, protocol), pod uid) -> the host-network pod serving there; a pod's
        ``containerPort`` is the port it binds in the node's namespace."""
        out: dict[tuple[tuple[str, int, str], str], Identity] = {}
        hints: dict[tuple[tuple[str, int, str], str], tuple[float | None, float | None]] = {}
        for p in objects.pods:
            if not p.host_network or not p.node_name or not p.ports \
                    or p.phase in ("Succeeded", "Failed"):
                continue
            ident = Identity(EndpointKind.HOST_NETWORK_POD, p.namespace, p.name,
                             top_owner(p, ctl), p.labels, p.node_name)
            for cp in p.ports:
                lk = ((p.node_name, cp.port, cp.protocol), p.uid)
                out[lk], hints[lk] = ident, (p.created, p.deleted)
        return out, hints

    def _sync_services(self, services: Iterable[ServiceRecord], at: float, first: bool) -> bool:
        vips: dict[tuple[str, str], Identity] = {}
        fronts: dict[tuple[tuple[str, int, str], str], ServiceFrontend] = {}
        nports: dict[tuple[tuple[int, str], str], ServiceFrontend] = {}
        for s in services:
            holder = f"{s.namespace}/{s.name}"
            ident = Identity(EndpointKind.SERVICE, s.namespace, name=s.name)
            typed = [(ip, "ClusterIP") for ip in s.cluster_ips]
            typed += [(ip, "LoadBalancer") for ip in s.external_ips]
            for ip, _ in typed:
                vips[(ip, holder)] = ident
            for sp in s.ports:
                for ip, kind in typed:
                    fronts[((ip, sp.port, sp.protocol), holder)] = ServiceFrontend(s, sp, kind)
                if sp.node_port:
                    nports[((sp.node_port, sp.protocol), holder)] = ServiceFrontend(
                        s, sp, "NodePort")
        changed = self._vips.sync(vips, at, first)
        changed |= self._frontends.sync(fronts, at, first)
        return self._nodeports.sync(nports, at, first) or changed

    def _set_external_names(self, pairs: Iterable[tuple[str, str]]) -> bool:
        exact: dict[str, str] = {}
        nets: dict[IPNetwork, str] = {}
        for name, net in ((n, _net(v)) for n, v in pairs):
            if net is not None and net.num_addresses == 1:
                exact[str(net.network_address)] = name
            elif net is not None:
                nets[net] = name
        changed = (exact, nets) != (self._ext_exact, self._ext_nets)
        self._ext_exact, self._ext_nets = exact, nets
        self._ext_lens = sorted({n.prefixlen for n in nets}, reverse=True)
        return changed

    # ---- lookups -------------------------------------------------------------------------

    def pod(self, ip: str, at: float) -> Identity | None:
        """The pod that held ``ip`` at ``at``."""
        return self._pods.lookup(ip, at)

    def host_network_pod(self, node: str, port: int | None, proto: str,
                         at: float) -> Identity | None:
        """The host-network pod on ``node`` that declared ``port/proto`` at ``at``."""
        return None if port is None else self._host_ports.lookup((node, port, proto.upper()), at)

    def node_by_ip(self, ip: str, at: float) -> str | None:
        """Name of the node whose InternalIP/ExternalIP was ``ip`` at ``at``."""
        ident = self._node_ips.lookup(ip, at)
        return ident.node_name if ident is not None else None

    def nodes(self) -> list[NodeRecord]:
        """The nodes of the latest snapshot."""
        return list(self._nodes.values())

    def node(self, name: str) -> NodeRecord | None:
        """The latest record of node ``name``."""
        return self._nodes.get(name)

    def node_for_pod_cidr(self, ip: str, at: float) -> tuple[str, IPNetwork] | None:
        """(node, podCIDR) whose pod CIDR contained ``ip`` at ``at``."""
        return _longest_match(ip, self._cidr_lens, lambda net: self._pod_cidrs.lookup(net, at))

    def service_by_frontend(self, ip: str, port: int | None, proto: str,
                            at: float) -> ServiceFrontend | None:
        """The service port behind ClusterIP/LoadBalancer ``ip:port/proto`` at ``at``."""
        return None if port is None else self._frontends.lookup((ip, port, proto.upper()), at)

    def service_by_nodeport(self, port: int | None, proto: str,
                            at: float) -> ServiceFrontend | None:
        """The service port behind nodePort ``port/proto`` at ``at``."""
        return None if port is None else self._nodeports.lookup((port, proto.upper()), at)

    def _served(self, node: str | None, port: int | None, proto: str | None,
                at: float) -> Identity | None:
        if node is None or port is None or proto is None:
            return None
        return self.host_network_pod(node, port, proto, at)

    def external_name(self, ip: str) -> str | None:
        """Display name of ``ip`` from the external-names ConfigMap (exact, then longest CIDR)."""
        if ip in self._ext_exact:
            return self._ext_exact[ip]
        hit = _longest_match(ip, self._ext_lens, self._ext_nets.get)
        return hit[0] if hit else None

    def in_cluster(self, ip: str, extra: Iterable[IPNetwork] = ()) -> bool:
        """Whether ``ip`` is inside a pod/service range or a node address."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in n for n in (*self._networks, *extra)) or \
            self._node_ips.lookup(ip, float("inf")) is not None

    def identity(self, ip: str, at: float, rules: AddressRules | None = None, *,
                 port: int | None = None, proto: str | None = None) -> Identity:
        """What ``ip`` stood for at ``at``: pod, node, gateway (via ``rules``), service, named
        external, else external (outside the cluster's ranges) or unknown (inside them).

        With ``port`` and ``proto`` (``TCP``/``UDP``/``SCTP``), an address that stands for a
        node (an InternalIP, or a gateway/tunnel address by ``rules``) resolves to the
        host-network pod of that node that declared ``port/proto`` at ``at``, if one did.
        Give them for the *server* end of a connection only: a client's ephemeral port may
        equal a port some host-network pod declared.
        """
        found = self._pods.lookup(ip, at)
        if found is not None:
            return found
        found = self._node_ips.lookup(ip, at)
        if found is not None:
            return self._served(found.node_name, port, proto, at) or found
        node = rules.node_for_address(ip, self, at) if rules is not None else None
        if node is not None:
            served = self._served(node, port, proto, at)
            if served is not None:
                return served
            rec = self._nodes.get(node)
            return Identity(EndpointKind.NODE, labels=rec.labels if rec else (),
                            node_name=node, name=node)
        found = self._vips.lookup(ip, at)
        if found is not None:
            return found
        name = self.external_name(ip)
        if name is not None:
            return Identity(EndpointKind.EXTERNAL, name=name)
        extra = rules.cluster_networks if rules is not None else ()
        kind = EndpointKind.UNKNOWN if self.in_cluster(ip, extra) else EndpointKind.EXTERNAL
        return Identity(kind)
