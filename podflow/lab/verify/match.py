"""``lab verify`` matching: which stored flow is which ground-truth connection, strictly.

:class:`Matcher` indexes the truth, the lab state and the flows once and answers the
per-record questions of :func:`~podflow.lab.verify.score.evaluate`: the flow of a truth
``connect`` record (client identity at the time, service, backend selected by the service,
NAT tuples, and the server's own ``accept`` record), the categories and workload edge of a
record or a flow, and why an unmatched one did not match.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from podflow.lab.datapath import datapath_for
from podflow.lab.state import LabState
from podflow.lab.traffic import nodeport_service, parse_target
from podflow.lab.truth import AcceptRecord, ConnectRecord, Truth
from podflow.model.flow import Address, Endpoint, EndpointKind, Flow, FlowState

TOLERANCE = 5.0
"""Seconds a flow's start (or an accept) may differ from the truth record's time."""
_NODEISH = (EndpointKind.NODE, EndpointKind.UNKNOWN, EndpointKind.HOST_NETWORK_POD)
_SERVICE_TYPES = {"nodeport": "NodePort", "loadbalancer": "LoadBalancer"}
"""Connection category -> the Service type a flow of it names (else ClusterIP)."""
Edge = tuple[str, str, str]
"""(client ``NS/WORKLOAD`` or ``external/NAME``, target, category)."""


@dataclass(frozen=True, slots=True)
class PodInfo:
    """A pod that existed at some point (from ``start`` truth records or the state)."""

    key: str
    """``NS/POD``."""
    workload: str
    """``NS/WORKLOAD``."""
    node: str | None
    """Node it ran on."""
    ip: str
    """Its IP."""
    labels: tuple[tuple[str, str], ...]
    """Its labels."""


class Matcher:
    """Indexes truth, state and flows once; answers the per-record questions of evaluate."""

    def __init__(self, truth: Truth, state: LabState, flows: Sequence[Flow]) -> None:
        self.state, self.flows = state, flows
        self.pods: dict[str, PodInfo] = {}
        for st in truth.starts:
            if not st.who.startswith("external/") and st.workload:
                self.pods[st.who] = PodInfo(st.who, st.workload, st.node, st.ip,
                                            tuple(sorted(st.labels.items())))
        for p in state.pods:
            key = f"{p.namespace}/{p.name}"
            self.pods[key] = PodInfo(key, f"{p.namespace}/{p.workload}", p.node, p.ip,
                                     tuple(sorted(p.labels.items())))
        self.current = {f"{p.namespace}/{p.name}" for p in state.pods}
        self.ext_by_ip = {e.ip: e.name for e in state.externals}
        self.node_ips = {n.name: n.ip for n in state.nodes}
        self.node_by_ip = {n.ip: n.name for n in state.nodes}
        self.lb_holder = {s.loadBalancerIP: s.lb_holder for s in state.services
                          if s.loadBalancerIP and s.lb_holder}
        self.infra_ips = set(self.node_by_ip)
        for n in state.nodes:
            self.infra_ips |= {n.vtep_ip or "", str(ipaddress.ip_network(n.podCIDR)[1])}
        self.accepts: dict[str, list[AcceptRecord]] = {}
        for a in truth.accepts:
            self.accepts.setdefault(a.server, []).append(a)
        self.truth_by_key: dict[tuple[str, str, int | None], list[ConnectRecord]] = {}
        for r in truth.connects:
            # the socket's own address (a host-network client's route may pick cni0's)
            self.truth_by_key.setdefault((r.proto.upper(), r.local_ip or r.client_ip,
                                          r.local_port),
                                         []).append(r)
        self.by_key: dict[tuple[str, str, int | None], list[int]] = {}
        for i, f in enumerate(flows):
            self.by_key.setdefault((str(f.protocol), f.source.ip, f.source.port), []).append(i)

    # -- truth side ----------------------------------------------------------------------
    def _candidates(self, r: ConnectRecord) -> list[int]:
        idx = self.by_key.get((r.proto.upper(), r.local_ip or r.client_ip, r.local_port), [])
        # a UDP exchange may belong to a flow that began with an earlier exchange on its
        # 5-tuple (see same_udp_flow): those are candidates too, nearest first
        back = UDP_CHAIN if r.proto == "udp" else TOLERANCE
        near = [i for i in idx if -back < self.flows[i].time - r.time < TOLERANCE]
        return sorted(near, key=lambda i: abs(self.flows[i].time - r.time))

    def _selected(self, r: ConnectRecord) -> tuple[list[PodInfo], str | None, int]:
        """Eligible backends, the service ``NS/NAME`` (if any) and the backend port."""
        t = parse_target(r.target)
        if t.kind == "pod":
            wl = f"{t.namespace}/{t.name}"
            return [p for p in self.pods.values() if p.workload == wl], None, t.port
        if t.kind in ("service", "loadbalancer"):
            svc = self.state.service(t.namespace or "", t.name or "")
            sp = next(p for p in svc.ports if p.port == t.port)
        else:
            svc, sp = nodeport_service(self.state, t.port)
        pods = [p for p in self.pods.values() if p.key.split("/")[0] == svc.namespace
                and svc.selector and all(dict(p.labels).get(k) == v
                                         for k, v in svc.selector.items())]
        return pods, f"{svc.namespace}/{svc.name}", sp.targetPort

    def check(self, r: ConnectRecord, f: Flow, need_accept: bool = True
              ) -> tuple[str | None, str | None]:
        """(why ``f`` is not ``r``'s flow or None, the server ``NS/POD``/``external/NAME``).

        ``need_accept`` also requires the server's accept record (when it wrote any).
        """
        src = f.source
        if r.client.startswith("external/"):
            if src.kind is not EndpointKind.EXTERNAL or src.ip != r.client_ip:
                return f"source is {src.kind}:{src.display()}, want {r.client}", None
        elif (host := self.host_network_node(r.client)) is not None:
            # a host-network pod has its node's address: the flow can only name the node
            if not ((src.kind is EndpointKind.NODE and (src.name or src.node_name) == host)
                    or (src.kind is EndpointKind.HOST_NETWORK_POD
                        and f"{src.namespace}/{src.pod_name}" == r.client)):
                return (f"source identity is {src.kind}:{src.display()}, want node {host} "
                        f"(host-network pod {r.client})"), None
        elif src.kind is not EndpointKind.POD or f"{src.namespace}/{src.pod_name}" != r.client:
            return f"source identity is {src.kind}:{src.display()}, want pod {r.client}", None
        dst, svc = f.destination, f.destination_service
        if r.category == "egress":
            ext = self.state.external(parse_target(r.target).name or "")
            if (dst.ip, dst.port) != (ext.ip, r.remote_port) or svc is not None:
                return f"destination {Address(dst.ip, dst.port)} is not {r.target}", None
            ts = f.nat.translated_source
            if not datapath_for(self.state.cni).masquerade:
                if ts is not None:  # pods reach the outside directly: nothing to undo
                    return f"masquerade source is {ts}, want none on {self.state.cni}", None
            elif self.host_network_node(r.client) is None:
                want = self.node_ips.get(r.node or self.pods.get(r.client, _NOPOD).node or "")
                if ts is None or ts.ip != want:
                    return f"masquerade source is {ts}, want node IP {want}", None
            server = f"external/{ext.name}"
        else:
            pods, service, port = self._selected(r)
            got = f"{svc.namespace}/{svc.name} ({svc.type})" if svc else None
            want_type = _SERVICE_TYPES.get(r.category, "ClusterIP")
            if got != (f"{service} ({want_type})" if service else None):
                return f"service is {got}, want {service} ({want_type})", None
            info = self.pods.get(f"{dst.namespace}/{dst.pod_name}")
            kind = EndpointKind.POD if info is None or self.host_network_node(info.key) is None \
                else EndpointKind.HOST_NETWORK_POD   # named by the port it declares
            if dst.kind is not kind or info not in pods or info is None:
                return f"backend {dst.kind}:{dst.display()} is not one of {r.target}", None
            if dst.ip != info.ip or dst.port != port:
                return f"backend address {Address(dst.ip, dst.port)}, want {info.ip}:{port}", None
            if r.category == "podip" and dst.ip != r.remote_ip:
                return f"backend {dst.ip} is not the pod IP targeted ({r.remote_ip})", None
            od = f.nat.original_destination
            if r.category in ("nodeport", "loadbalancer") and \
                    od != Address(r.remote_ip, r.remote_port):
                return f"original destination {od}, want {r.remote_ip}:{r.remote_port}", None
            server = info.key
        accepts = self.accepts.get(server) if need_accept else None
        if accepts:
            seen = f.nat.translated_source or Address(src.ip, src.port)
            if not any(a.proto == r.proto and a.local_port == dst.port
                       and Address(a.peer_ip, a.peer_port) == seen
                       and abs(a.time - r.time) < TOLERANCE for a in accepts):
                return f"{server} accepted nothing from {seen} (wrong backend or NAT)", None
        return None, server

    def _guess_server(self, r: ConnectRecord) -> str | None:
        """Which server accepted ``r`` according to the accept records (for unmatched ones)."""
        if r.category == "egress":
            return None
        best: tuple[float, float, str] | None = None
        for p in self._selected(r)[0]:
            for a in self.accepts.get(p.key, []):
                dt = abs(a.time - r.time)
                if a.proto != r.proto or dt >= TOLERANCE:
                    continue
                if a.peer_ip == (r.local_ip or r.client_ip) and a.peer_port == r.local_port:
                    rank = 0.0  # no SNAT: the peer is the client itself
                elif a.peer_ip in self.infra_ips and dt < 1.0:
                    rank = 1.0 if a.peer_port == r.local_port else 2.0  # SNAT, maybe new port
                else:
                    continue
                if best is None or (rank, dt) < best[:2]:
                    best = (rank, dt, p.key)
        return best[2] if best else None

    def _tags(self, client_pod: str | None, client_node: str | None, server: str | None,
              category: str) -> set[str]:
        tags = {category, "overall"}
        info = self.pods.get(server or "")
        if info is not None and client_node is not None and info.node is not None:
            tags.add("same-node" if client_node == info.node else "cross-node")
        if (client_pod and client_pod not in self.current) or (
                info is not None and info.key not in self.current):
            tags.add("restarted-pods")
        if (client_pod and self.host_network_node(client_pod)) or (
                info is not None and self.host_network_node(info.key)):
            tags.add("host-network")   # a host-network pod at either end
        return tags

    def record_tags(self, r: ConnectRecord, server: str | None = None) -> set[str]:
        """Categories of a truth record (``server`` if known, else guessed from accepts)."""
        ext = r.client.startswith("external/")
        client_node = self.ingress_node(r.remote_ip) if ext else (
            r.node or self.pods.get(r.client, _NOPOD).node)
        return self._tags(None if ext else r.client, client_node,
                          server or self._guess_server(r), r.category)

    def match(self, r: ConnectRecord, used: dict[int, ConnectRecord]
              ) -> tuple[int | None, str, set[str]]:
        """Pick ``r``'s flow (its index) among unused ones, record it in ``used``.

        Returns (index or None, why not, the record's categories).
        """
        reason = "no flow from this client address and port"
        for i in self._candidates(r):
            why, server = self.check(r, self.flows[i])
            fresh = i not in used and abs(self.flows[i].time - r.time) < TOLERANCE
            if why is None and (fresh or (i in used and same_udp_flow(used[i], r))):
                used[i] = r   # the next exchange on this 5-tuple chains from this one
                return i, "", self.record_tags(r, server)
            if why is None:
                why = "its flow was already matched to another truth record"
            reason = reason if reason != "no flow from this client address and port" else why
        return None, reason, self.record_tags(r)

    def nearest_flow(self, r: ConnectRecord) -> Flow | None:
        """The flow from the same client address and port closest in time, if any."""
        idx = self.by_key.get((r.proto.upper(), r.local_ip or r.client_ip, r.local_port), [])
        return min((self.flows[i] for i in idx), key=lambda f: abs(f.time - r.time),
                   default=None)

    def record_edge(self, r: ConnectRecord) -> Edge:
        """The truth edge of a record."""
        t = parse_target(r.target)
        if t.kind == "nodeport":
            svc = nodeport_service(self.state, t.port)[0]
            target = f"service/{svc.namespace}/{svc.name}"
        elif t.kind == "loadbalancer":
            target = f"service/{t.namespace}/{t.name}"
        elif t.kind == "external":
            target = f"external/{t.name}"
        else:
            target = f"{t.kind}/{t.namespace}/{t.name}"
        host = self.host_network_node(r.client)
        client = f"node/{host}" if host is not None else (
            r.workload or self.pods.get(r.client, _NOPOD).workload or r.client)
        return client, target, r.category

    def ingress_node(self, ip: str) -> str | None:
        """The node a client reached at ``ip``: a node's own, or the holder of an LB VIP."""
        return self.node_by_ip.get(ip) or self.lb_holder.get(ip)

    def host_network_node(self, client: str) -> str | None:
        """The node of a host-network client pod (its IP is the node's), else None."""
        info = self.pods.get(client)
        if info is None or info.node is None or self.node_ips.get(info.node) != info.ip:
            return None
        return info.node

    # -- flow side -----------------------------------------------------------------------
    def is_infrastructure(self, f: Flow) -> bool:
        """Both ends are nodes or unknown addresses (node-to-node, VXLAN ...): not judged."""
        return f.source.kind in _NODEISH and f.destination.kind in _NODEISH and \
            f.destination.kind is not EndpointKind.HOST_NETWORK_POD

    def _end_name(self, e: Endpoint, pod_prefix: str) -> str:
        if e.kind in (EndpointKind.POD, EndpointKind.HOST_NETWORK_POD) and e.pod_name:
            info = self.pods.get(f"{e.namespace}/{e.pod_name}")
            wl = e.workload.name if e.workload else (info.workload.split("/")[1] if info
                                                     else e.pod_name)
            return f"{pod_prefix}{e.namespace}/{wl}"
        if e.ip in self.ext_by_ip and e.kind is EndpointKind.EXTERNAL:
            return f"external/{self.ext_by_ip[e.ip]}"
        if e.kind is EndpointKind.NODE and (e.name or e.node_name):
            return f"node/{e.name or e.node_name}"
        return f"{e.kind}/{e.ip}"

    def flow_category(self, f: Flow) -> str:
        """The category a flow claims: its service type, egress, pod IP or unknown."""
        if f.destination_service is not None:
            return {v: k for k, v in _SERVICE_TYPES.items()}.get(f.destination_service.type,
                                                                 "clusterip")
        if f.destination.kind is EndpointKind.EXTERNAL:
            return "egress"
        return "podip" if f.destination.kind in (EndpointKind.POD, EndpointKind.HOST_NETWORK_POD) \
            else "unknown"

    def flow_edge(self, f: Flow) -> Edge:
        """The edge a flow claims."""
        svc = f.destination_service
        target = f"service/{svc.namespace}/{svc.name}" if svc else self._end_name(
            f.destination, "pod/")
        return self._end_name(f.source, ""), target, self.flow_category(f)

    def flow_tags(self, f: Flow) -> set[str]:
        """Categories of an unmatched flow, from what it claims."""
        s, d, od = f.source, f.destination, f.nat.original_destination
        client_pod = f"{s.namespace}/{s.pod_name}" if s.kind is EndpointKind.POD else None
        client_node = s.node_name if client_pod else (
            self.ingress_node(od.ip) if od is not None else None)
        server = f"{d.namespace}/{d.pod_name}" if d.kind is EndpointKind.POD else None
        tags = self._tags(client_pod, client_node, server, self.flow_category(f))
        return tags - {"unknown"}

    def _truth_near(self, f: Flow) -> list[ConnectRecord]:
        recs = self.truth_by_key.get((str(f.protocol), f.source.ip, f.source.port), [])
        return sorted((r for r in recs if abs(f.time - r.time) < TOLERANCE),
                      key=lambda r: abs(r.time - f.time))

    def in_flight(self, f: Flow) -> bool:
        """A connection still open (ACTIVE) with no truth record yet: clients write their
        record when the attempt ends, so nothing can judge it before (a long-lived one)."""
        return f.state is FlowState.ACTIVE and not self._truth_near(f)

    def excused(self, f: Flow, judged: Callable[[ConnectRecord], bool]) -> bool:
        """True if ``f`` is the flow of an attempt that is not judged (failed, too recent).

        A failed attempt (refused, timed out) may never have reached a backend, so any flow
        from its client socket is its flow; a too-recent successful one must match fully; an
        attempt in flight (:meth:`in_flight`) is not judged yet.
        """
        if self.in_flight(f):
            return True
        return any(not judged(r) and (r.outcome != "ok" or
                                      self.check(r, f, need_accept=True)[0] is None)
                   for r in self._truth_near(f))

    def explain_flow(self, f: Flow) -> tuple[ConnectRecord | None, str]:
        """The nearest truth record of an unmatched flow and why it is not that one's."""
        recs = self._truth_near(f)
        if not recs:
            return None, "no truth record from this source address and port within 5s"
        why = self.check(recs[0], f)[0] or "duplicate: another flow already matched this record"
        return recs[0], why


_NOPOD = PodInfo("", "", None, "", ())

UDP_IDLE = 30.0
"""Seconds a UDP conntrack entry lives after its last packet (``nf_conntrack_udp_timeout``)."""
UDP_CHAIN = 600.0
"""How far back a UDP exchange looks for the flow its 5-tuple began (exchanges chain, each
within :data:`UDP_IDLE` of the one before)."""


def same_udp_flow(a: ConnectRecord, b: ConnectRecord) -> bool:
    """Two UDP exchanges on one 5-tuple while its conntrack entry lived: one flow.

    UDP has no connection; a client that gets the same ephemeral port again within
    :data:`UDP_IDLE` seconds sends through the same conntrack entry (same id), and every
    vantage point that keys on the 5-tuple sees one flow, as conntrack itself does.
    """
    return (a.proto == b.proto == "udp" and a.remote_ip == b.remote_ip
            and a.remote_port == b.remote_port and a.local_port == b.local_port
            and (a.local_ip or a.client_ip) == (b.local_ip or b.client_ip)
            and abs(a.time - b.time) <= UDP_IDLE)
