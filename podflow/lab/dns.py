"""The lab's cluster DNS server: answers queries on UDP and TCP port 53 from a :class:`Zone`.

The workload process of a pod labelled ``k8s-app: kube-dns`` runs it (see
:mod:`podflow.lab.workload`), with the zone read from the lab's cluster-state directory and
re-read when it changes (:class:`~podflow.lab.dnszone.ZoneCache`). Messages are parsed and
packed with ``dpkt.dns``. :func:`handle` is pure: one query in, one response out, plus a
:class:`QueryLog` describing the exchange (the workload writes it to the ground truth as a
``dns`` record). The server never recurses (RA is 0); UDP responses longer than 512 bytes
are sent truncated (TC set, no answers), so a client retries over TCP. The module also says
where the built-in cluster DNS lives (:data:`DNS_NAMESPACE`, :data:`DNS_WORKLOAD`,
:data:`DNS_SERVICE`, :data:`DNS_LABELS`): the spec adds it there and the datapath points pods
at it.

Example::

    >>> import dpkt, socket
    >>> from podflow.lab.dnszone import Zone
    >>> q = dpkt.dns.DNS(id=7, qd=[dpkt.dns.DNS.Q(name="x.ns.svc.cluster.local")])
    >>> wire, info = handle(bytes(q), Zone({"x.ns.svc.cluster.local": "10.96.0.9"}, {}))
    >>> info.rcode, info.ips, socket.inet_ntoa(dpkt.dns.DNS(wire).an[0].rdata)
    (0, ('10.96.0.9',), '10.96.0.9')
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import dpkt

from podflow.lab.dnszone import Zone

log = logging.getLogger(__name__)

DNS_NAMESPACE, DNS_WORKLOAD, DNS_SERVICE = "kube-system", "coredns", "kube-dns"
"""Where the built-in cluster DNS lives: its namespace, workload and Service."""
DNS_LABELS = {"k8s-app": "kube-dns"}
"""Labels of the cluster DNS pods (the workload launcher starts this server for them)."""

DNS_PORT = 53
"""Where the server listens (UDP and TCP)."""
UDP_MAX = 512
"""Largest UDP response sent untruncated (no EDNS)."""
TCP_IDLE = 5.0
"""Seconds a TCP connection may stay idle between queries."""
FORMERR, NOTIMP = 1, 4
QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
          33: "SRV", 255: "ANY"}
"""Query type numbers -> names (others print as ``TYPE<n>``)."""
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
"""Response codes -> names."""


def qtype_name(n: int) -> str:
    """``1`` -> ``"A"``, ``28`` -> ``"AAAA"``, unknown -> ``"TYPE<n>"``."""
    return QTYPES.get(n, f"TYPE{n}")


@dataclass(frozen=True, slots=True)
class QueryLog:
    """One answered query."""

    id: int
    """The message id."""
    query: str
    """The name asked, as asked (no trailing dot)."""
    qtype: str
    """Its type name, e.g. ``A``."""
    rcode: int
    """The response code sent."""
    ips: tuple[str, ...] = ()
    """Addresses in the answer."""
    ttl: int | None = None
    """TTL of the answers (None without answers)."""
    truncated: bool = False
    """True when the UDP response had to be truncated."""


def _error(msg: dpkt.dns.DNS, rcode: int) -> bytes:
    msg.qr, msg.rcode, msg.ra, msg.aa = 1, rcode, 0, 0
    msg.an, msg.ns, msg.ar = [], [], []
    return bytes(msg)


def handle(data: bytes, zone: Zone, max_size: int | None = UDP_MAX
           ) -> tuple[bytes | None, QueryLog | None]:
    """Answer one DNS message (``max_size`` None: no truncation, as for TCP).

    Returns (response or None when nothing should be sent, the log of a well-formed query).
    """
    try:
        msg = dpkt.dns.DNS(data)
    except Exception:  # dpkt raises many types on malformed input
        if len(data) < 12:
            return None, None
        msg_id, flags = struct.unpack("!HH", data[:4])
        bad = dpkt.dns.DNS(id=msg_id, op=flags & 0x7900, qd=[])
        return _error(bad, FORMERR), None
    if msg.qr:
        return None, None   # a response: never answer those
    if msg.opcode != 0 or len(msg.qd) != 1:
        return _error(msg, NOTIMP if msg.opcode != 0 else FORMERR), None
    q = msg.qd[0]
    qtype = qtype_name(q.type)
    ans = zone.lookup(q.name, qtype)
    msg.qr, msg.aa, msg.ra, msg.rcode = 1, int(ans.authoritative), 0, ans.rcode
    msg.ns, msg.ar = [], []
    msg.an = []
    for ip in ans.ips:
        packed = ipaddress.ip_address(ip).packed
        msg.an.append(dpkt.dns.DNS.RR(name=q.name, type=q.type, cls=q.cls, ttl=ans.ttl,
                                      rlen=len(packed), rdata=packed))
    wire = bytes(msg)
    truncated = max_size is not None and len(wire) > max_size
    if truncated:
        msg.an, msg.tc = [], 1
        wire = bytes(msg)
    return wire, QueryLog(msg.id, q.name.rstrip("."), qtype, ans.rcode, ans.ips,
                          ans.ttl if ans.ips else None, truncated)


@dataclass(frozen=True, slots=True)
class QueryEvent:
    """A query the server answered, with who asked and how."""

    time: float
    """Unix seconds when it arrived."""
    proto: str
    """``udp`` or ``tcp``."""
    peer: tuple[str, int]
    """The client address as the server saw it."""
    local_port: int
    """The port it arrived on."""
    log: QueryLog
    """What was asked and answered."""


OnQuery = Callable[[QueryEvent], None]
OnAccept = Callable[[int, tuple[Any, ...], str], None]


class DnsServer:
    """UDP and TCP DNS server over a zone source; callbacks report accepts and queries.

    ``zone`` is called for every query (pass ``ZoneCache(dir).get``). ``on_accept(port,
    peer, proto)`` is called per UDP datagram and per TCP connection, ``on_query`` per
    answered query.
    """

    def __init__(self, zone: Callable[[], Zone], on_query: OnQuery | None = None,
                 on_accept: OnAccept | None = None) -> None:
        self.zone, self.on_query, self.on_accept = zone, on_query, on_accept

    def answer(self, data: bytes, proto: str, peer: tuple[Any, ...], port: int) -> bytes | None:
        """Answer ``data`` from ``peer``; report the query; the response or None."""
        try:
            wire, info = handle(data, self.zone(), UDP_MAX if proto == "udp" else None)
        except Exception:   # a bug here must not kill the server
            log.exception("cannot answer a query from %s", peer)
            return None
        if info is not None and self.on_query is not None:
            self.on_query(QueryEvent(time.time(), proto, (str(peer[0]), int(peer[1])), port,
                                     info))
        return wire

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port, peer = writer.get_extra_info("sockname")[1], writer.get_extra_info("peername")
        if self.on_accept is not None:
            self.on_accept(port, peer, "tcp")
        with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                data = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", head)[0]),
                                              TCP_IDLE)
                wire = self.answer(data, "tcp", peer, port)
                if wire is not None:
                    writer.write(struct.pack("!H", len(wire)) + wire)
                    await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def start(self, host: str = "0.0.0.0", port: int = DNS_PORT,
                    protos: tuple[str, ...] = ("udp", "tcp")) -> list[Any]:
        """Listen on ``host:port``; return the servers/transports to close on shutdown."""
        opened: list[Any] = []
        if "udp" in protos:
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Udp(self, port), local_addr=(host, port))
            opened.append(transport)
        if "tcp" in protos:
            opened.append(await asyncio.start_server(self._tcp, host, port))
        return opened


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer, port: int) -> None:
        self.server, self.port = server, port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.server.on_accept is not None:
            self.server.on_accept(self.port, addr, "udp")
        wire = self.server.answer(data, "udp", addr, self.port)
        if wire is not None and self.transport is not None:
            self.transport.sendto(wire, addr)
