"""The Flow record and its value objects.

One connection is one :class:`Flow`, oriented from the client (``source``) to the server
(``destination``) after every NAT on the way has been undone. Field names follow Cilium
Hubble's ``flow.proto`` where the concept is the same (``source``, ``destination``,
``destination_service``, ``verdict``, ``drop_reason_desc``, ``is_reply``, ``node_name``,
``pod_name``, ``workloads``), so that Hubble users recognise them and export to Hubble JSON
is a mapping, not a translation.

Example::

    >>> src = Endpoint(ip="10.244.0.5", port=41000, kind=EndpointKind.POD,
    ...                namespace="shop", pod_name="frontend-abcde")
    >>> dst = Endpoint(ip="10.244.1.7", port=9000, kind=EndpointKind.POD,
    ...                namespace="shop", pod_name="backend-fghij")
    >>> f = Flow(time=1.0, source=src, destination=dst, protocol=Protocol.TCP)
    >>> f.verdict
    <Verdict.FORWARDED: 'FORWARDED'>
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class EndpointKind(StrEnum):
    """What an address stood for at the time of the flow."""

    POD = "pod"
    SERVICE = "service"
    NODE = "node"
    HOST_NETWORK_POD = "host-network-pod"
    EXTERNAL = "external"
    UNKNOWN = "unknown"


class Protocol(StrEnum):
    """Layer-4 protocol, named as Hubble's ``l4`` oneof names it."""

    TCP = "TCP"
    UDP = "UDP"
    ICMP = "ICMP"
    ICMPV6 = "ICMPv6"
    SCTP = "SCTP"
    OTHER = "OTHER"


class Verdict(StrEnum):
    """What happened to the connection (Hubble's ``Verdict`` names)."""

    FORWARDED = "FORWARDED"
    DROPPED = "DROPPED"
    ERROR = "ERROR"
    UNKNOWN = "UNKNOWN"


class FlowState(StrEnum):
    """Whether the connection had ended when this record was made."""

    ACTIVE = "active"
    """Still open: a later record for the same ``flow_id`` supersedes this one."""
    ENDED = "ended"
    """Closed (TCP FIN/RST seen, or the tracker expired it): the record is final."""


@dataclass(frozen=True, slots=True)
class Workload:
    """The top owner of a pod (a Deployment, StatefulSet, DaemonSet, Job ...)."""

    kind: str
    """Kubernetes kind of the owner, e.g. ``Deployment``."""
    name: str
    """Name of the owner, e.g. ``frontend``."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a flow: an address and what held it at the time."""

    ip: str
    """IP address of this end after NAT was undone (the pod's own IP for pods)."""
    port: int | None = None
    """L4 port (None for ICMP and portless protocols)."""
    kind: EndpointKind = EndpointKind.UNKNOWN
    """What the address stood for at the flow's time."""
    namespace: str | None = None
    """Kubernetes namespace of the pod or service."""
    pod_name: str | None = None
    """Pod name (Hubble's ``pod_name``) when ``kind`` is pod or host-network pod."""
    workload: Workload | None = None
    """Top owner of the pod (Hubble's ``workloads[0]``)."""
    labels: tuple[tuple[str, str], ...] = ()
    """Pod or node labels as sorted (key, value) pairs (frozen, hashable)."""
    node_name: str | None = None
    """Node the pod ran on, or the node this address belongs to for kind node."""
    name: str | None = None
    """Display name for non-pod ends: the node name, an external host's name, a DNS name."""

    def label_dict(self) -> dict[str, str]:
        """Labels as a plain dict."""
        return dict(self.labels)

    def display(self) -> str:
        """Short human name: ``ns/pod``, ``node:NAME``, the external name, or the IP."""
        if self.kind in (EndpointKind.POD, EndpointKind.HOST_NETWORK_POD) and self.pod_name:
            return f"{self.namespace}/{self.pod_name}"
        if self.kind is EndpointKind.NODE and (self.name or self.node_name):
            return f"node:{self.name or self.node_name}"
        if self.name:
            return self.name
        return self.ip


@dataclass(frozen=True, slots=True)
class Service:
    """The Kubernetes Service a flow went through (Hubble's ``destination_service``)."""

    namespace: str
    """Namespace of the Service."""
    name: str
    """Name of the Service."""
    port_name: str | None = None
    """Name of the service port used, e.g. ``http``."""
    type: str = "ClusterIP"
    """Which frontend was used: ``ClusterIP``, ``NodePort`` or ``LoadBalancer``."""
    frontend_ip: str | None = None
    """The address the client connected to (the ClusterIP, or the node IP for a NodePort)."""
    frontend_port: int | None = None
    """The port the client connected to (the service port, or the nodePort)."""


@dataclass(frozen=True, slots=True)
class Address:
    """An (ip, port) pair as it appeared on the wire somewhere."""

    ip: str
    """IP address."""
    port: int | None = None
    """L4 port, if any."""

    def __str__(self) -> str:
        if self.port is None:
            return self.ip
        if ":" in self.ip:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class Nat:
    """The address translation that was undone to produce ``source``/``destination``."""

    original_destination: Address | None = None
    """Where the client sent its packets (service VIP or node IP:nodePort) when DNAT happened."""
    translated_source: Address | None = None
    """What the client's address was rewritten to (masquerade / SNAT), if anything."""

    @property
    def is_empty(self) -> bool:
        """True when no translation happened."""
        return self.original_destination is None and self.translated_source is None


@dataclass(frozen=True, slots=True)
class Counters:
    """Packets and bytes in one direction."""

    packets: int = 0
    """Packets counted."""
    bytes: int = 0
    """Bytes counted (L3, as conntrack accounts them)."""


@dataclass(frozen=True, slots=True)
class Traffic:
    """Counters both ways, client-to-server and server-to-client."""

    to_destination: Counters = field(default_factory=Counters)
    """Client to server (conntrack's original direction)."""
    to_source: Counters = field(default_factory=Counters)
    """Server to client (conntrack's reply direction)."""

    @property
    def bytes(self) -> int:
        """Total bytes both ways."""
        return self.to_destination.bytes + self.to_source.bytes

    @property
    def packets(self) -> int:
        """Total packets both ways."""
        return self.to_destination.packets + self.to_source.packets


@dataclass(frozen=True, slots=True)
class ObservationPoint:
    """Who saw the connection: which node, which source, with what it saw raw."""

    node_name: str
    """The node whose agent recorded the observation (Hubble's ``node_name``)."""
    source: str
    """The source plugin: ``conntrack``, ``sockets``, ``packets``, ``ipfix``, ``hubble``."""
    original: str | None = None
    """The tuple as the source saw it first, ``proto src:sport -> dst:dport``, for audit."""
    reply: str | None = None
    """The reply tuple as the source saw it (conntrack), for audit."""
    instance: str = ""
    """Which kernel object this source tracked the connection as, when it knows: the
    conntrack entry (``zone/id``), the socket (its cookie), the packet tracker's entry (its
    first packet's time). Two records of one node and source with the same keys but different
    instances are two connections (a reused port), never one; empty: unknown."""


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """TCP state and flags, when the protocol is TCP."""

    state: str | None = None
    """Last known TCP state as the tracker named it, e.g. ``ESTABLISHED``, ``TIME_WAIT``."""
    flags: tuple[str, ...] = ()
    """TCP flags seen (``SYN``, ``FIN``, ``RST`` ...), when a source reports them;
    ``SYN-ACK`` when a packet carried both (the server's answer, as Hubble names it)."""


@dataclass(frozen=True, slots=True)
class DnsInfo:
    """A DNS exchange (Hubble's ``l7.dns``)."""

    query: str
    """The name asked for, without the trailing dot, e.g. ``backend.shop.svc.cluster.local``."""
    qtypes: tuple[str, ...] = ()
    """Query types asked, e.g. ``("A",)``."""
    rcode: int | None = None
    """Response code (0 NOERROR, 3 NXDOMAIN ...); None while no response was seen."""
    ips: tuple[str, ...] = ()
    """Addresses in the answer section."""
    ttl: int | None = None
    """Smallest TTL of the answers."""
    cnames: tuple[str, ...] = ()
    """CNAMEs in the answer section."""
    queries: int = 0
    """Query messages of the exchange (a stub resolver walking its search list asks several
    names on one socket); 0: not known (a record of an older podflow: one)."""
    rcodes: tuple[int, ...] = ()
    """The response code of each response, in order (``NXDOMAIN`` for each search domain,
    then ``NOERROR``); empty: not known (an older record: ``rcode``, if any, once)."""


@dataclass(frozen=True, slots=True)
class HttpInfo:
    """The first HTTP/1.x request and response of a connection (Hubble's ``l7.http``)."""

    method: str | None = None
    """Request method, e.g. ``GET``."""
    url: str | None = None
    """Request target (the path and query), e.g. ``/api/items?id=3``."""
    host: str | None = None
    """The Host header."""
    code: int | None = None
    """Response status code; None while no response was seen."""
    protocol: str = "HTTP/1.1"
    """Protocol version as on the request line."""


@dataclass(frozen=True, slots=True)
class L7:
    """Application-layer record of a flow (DNS or HTTP), when a packet source saw it."""

    dns: DnsInfo | None = None
    """The DNS exchange, for DNS flows."""
    http: HttpInfo | None = None
    """The first HTTP exchange, for HTTP flows."""
    latency_ns: int | None = None
    """Request to first response byte, nanoseconds (Hubble's ``l7.latency_ns``)."""


@dataclass(frozen=True, slots=True)
class Flow:
    """One connection between two endpoints, NAT undone, identities at the time.

    ``flow_id`` is the same for every observation of one connection (at every vantage point
    and node), so that a store can merge them: it is derived from the connection as the
    server saw it (the conntrack reply tuple: protocol, server and client-as-seen-by-server
    addresses). Ports get reused, so a store merges equal ids only when their start times
    are close (see ``podflow.store.correlate``).
    """

    time: float
    """Start of the connection, Unix seconds (conntrack's start timestamp when present)."""
    source: Endpoint
    """The client end, NAT undone (the real pod or external host, not a node's SNAT address)."""
    destination: Endpoint
    """The server end, NAT undone (the backend pod, not the service VIP)."""
    protocol: Protocol
    """L4 protocol."""
    end_time: float | None = None
    """When the connection ended (or was last seen, while active)."""
    state: FlowState = FlowState.ENDED
    """Whether this record is final."""
    destination_service: Service | None = None
    """The Service the connection went through, if it was load-balanced by one."""
    nat: Nat = field(default_factory=Nat)
    """What translation was undone."""
    traffic: Traffic = field(default_factory=Traffic)
    """Counters both ways."""
    tcp: TcpInfo | None = None
    """TCP state and flags."""
    rtt_us: float | None = None
    """Smoothed round-trip time in microseconds, when a source measures it."""
    verdict: Verdict = Verdict.FORWARDED
    """What happened to the connection."""
    drop_reason_desc: str | None = None
    """Why it was dropped or failed, when it was."""
    is_reply: bool = False
    """Always False for connection records: they are oriented client to server."""
    observations: tuple[ObservationPoint, ...] = ()
    """Every vantage point that saw this connection."""
    cni_profile: str | None = None
    """The CNI profile of the observing node, e.g. ``flannel-vxlan``."""
    flow_id: str = ""
    """Stable id of the connection across vantage points (see class docstring)."""
    client_key: str = ""
    """Id of the connection as the client sent it (before any NAT): lets a client-side view
    (the client's socket, which sees the service VIP) join the node's and the server's views.
    Equal to ``flow_id`` when no NAT happened. Empty when the source cannot tell."""
    l7: L7 | None = None
    """DNS or HTTP record, when a packet source saw the exchange."""

    @property
    def node_name(self) -> str | None:
        """The first observing node (Hubble's ``node_name``)."""
        return self.observations[0].node_name if self.observations else None
