"""A small stub resolver for the lab's traffic generator: real DNS packets, glibc's search rules.

The traffic generator resolves ``dns/NAME:PORT`` targets with it, so every resolution is a
real UDP (or TCP) exchange with the cluster DNS on port 53 that the packet and conntrack
sources can see. :class:`ResolvConf` reads ``nameserver``/``search``/``options ndots:N``;
:func:`search_names` expands a name the way glibc does (fewer dots than ``ndots``: the search
domains first, then the name itself; otherwise the name first); :func:`resolve_name` asks
for each candidate over one socket (so one resolution is one connection) until one has
addresses, and falls back to TCP when a UDP answer is truncated.

Example::

    >>> conf = ResolvConf.parse("nameserver 10.96.0.10\\nsearch shop.svc.cluster.local "
    ...                         "svc.cluster.local cluster.local\\noptions ndots:5\\n")
    >>> search_names("backend", conf)[:2]
    ['backend.shop.svc.cluster.local', 'backend.svc.cluster.local']
    >>> search_names("db.example.com.", conf)
    ['db.example.com']
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

import dpkt

from podflow.lab.dns import DNS_PORT, qtype_name

TIMEOUT = 1.0
"""Seconds to wait for each answer."""
_QTYPES = {"A": dpkt.dns.DNS_A, "AAAA": dpkt.dns.DNS_AAAA}


@dataclass(frozen=True, slots=True)
class ResolvConf:
    """The parts of ``resolv.conf`` the resolver uses."""

    nameservers: tuple[str, ...]
    """Servers, in order (only the first is asked)."""
    search: tuple[str, ...] = ()
    """Search domains."""
    ndots: int = 1
    """Names with fewer dots are tried with the search domains first."""
    port: int = DNS_PORT
    """Server port (not in resolv.conf syntax; for tests on loopback)."""

    @classmethod
    def parse(cls, text: str) -> ResolvConf:
        """Parse ``resolv.conf`` text (unknown lines are ignored)."""
        servers: list[str] = []
        search: tuple[str, ...] = ()
        ndots = 1
        for line in text.splitlines():
            words = line.split("#", 1)[0].split(";", 1)[0].split()
            if len(words) >= 2 and words[0] == "nameserver":
                servers.append(words[1])
            elif words and words[0] in ("search", "domain"):
                search = tuple(w.rstrip(".") for w in words[1:])
            elif words and words[0] == "options":
                for opt in words[1:]:
                    if opt.startswith("ndots:") and opt[6:].isdigit():
                        ndots = min(int(opt[6:]), 15)
        return cls(tuple(servers), search, ndots)

    @classmethod
    def read(cls, path: Path) -> ResolvConf:
        """Read and parse a file."""
        return cls.parse(path.read_text())


def search_names(name: str, conf: ResolvConf) -> list[str]:
    """The names to ask, in order, for ``name`` (glibc ``res_search`` order)."""
    if name.endswith("."):
        return [name.rstrip(".")]
    expanded = [f"{name}.{d}" for d in conf.search]
    return [name, *expanded] if name.count(".") >= conf.ndots else [*expanded, name]


def build_query(name: str, qtype: str = "A", msg_id: int = 0) -> bytes:
    """A recursion-desired query for ``name``/``qtype`` (``A`` or ``AAAA``)."""
    return bytes(dpkt.dns.DNS(id=msg_id, qd=[dpkt.dns.DNS.Q(name=name, type=_QTYPES[qtype])]))


@dataclass(frozen=True, slots=True)
class Lookup:
    """One question and its answer."""

    name: str
    """The name asked."""
    qtype: str
    """``A`` or ``AAAA``."""
    rcode: int
    """Response code."""
    ips: tuple[str, ...] = ()
    """Addresses answered."""
    ttl: int | None = None
    """Smallest TTL of the answers."""
    truncated: bool = False
    """The (UDP) answer had TC set."""


def parse_response(data: bytes, msg_id: int, name: str) -> Lookup | None:
    """The answer in ``data`` if it answers query ``msg_id`` for ``name``, else None."""
    try:
        msg = dpkt.dns.DNS(data)
    except Exception:   # dpkt raises many types on malformed input
        return None
    if not msg.qr or msg.id != msg_id or len(msg.qd) != 1 or \
            msg.qd[0].name.lower().rstrip(".") != name.lower():
        return None
    ips, ttls = [], []
    for rr in msg.an:
        if rr.type in (dpkt.dns.DNS_A, dpkt.dns.DNS_AAAA):
            family = socket.AF_INET if rr.type == dpkt.dns.DNS_A else socket.AF_INET6
            ips.append(socket.inet_ntop(family, rr.rdata))
            ttls.append(rr.ttl)
    return Lookup(name, qtype_name(msg.qd[0].type), msg.rcode, tuple(ips),
                  min(ttls) if ttls else None, bool(msg.tc))


@dataclass
class Resolution:
    """Everything one resolution did: where it asked from, what it asked, what it got."""

    name: str
    """The name as given."""
    nameserver: str
    """The server asked."""
    port: int = DNS_PORT
    """Its port."""
    proto: str = "udp"
    """``udp`` or ``tcp`` (the transport of the first question)."""
    local_ip: str | None = None
    """Local address of the socket used."""
    local_port: int | None = None
    """Local port of the socket used."""
    asked: list[str] = field(default_factory=list)
    """Every name asked, in order (a name asked again over TCP appears twice)."""
    lookups: list[Lookup] = field(default_factory=list)
    """Every answered question, in order."""
    error: str | None = None
    """Why it stopped without an answer (``timeout``, a socket error), else None."""

    @property
    def answer(self) -> Lookup | None:
        """The lookup that gave addresses, if any."""
        return next((x for x in self.lookups if x.ips), None)

    @property
    def rcode(self) -> int | None:
        """The response code of the answer, else of the last lookup."""
        final = self.answer or (self.lookups[-1] if self.lookups else None)
        return final.rcode if final else None


class _Answers(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if not self.queue.full():
            self.queue.put_nowait(data)


async def _udp_ask(proto: _Answers, transport: asyncio.DatagramTransport, name: str,
                   qtype: str, timeout: float) -> Lookup:
    msg_id = random.randrange(1 << 16)
    transport.sendto(build_query(name, qtype, msg_id))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        data = await asyncio.wait_for(proto.queue.get(), max(deadline - loop.time(), 0.001))
        found = parse_response(data, msg_id, name)
        if found is not None:
            return found


async def _tcp_ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str,
                   qtype: str, timeout: float) -> Lookup:
    msg_id = random.randrange(1 << 16)
    query = build_query(name, qtype, msg_id)
    writer.write(struct.pack("!H", len(query)) + query)
    await writer.drain()
    while True:
        size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), timeout))[0]
        found = parse_response(await asyncio.wait_for(reader.readexactly(size), timeout),
                               msg_id, name)
        if found is not None:
            return found


async def _over_tcp(res: Resolution, names: list[str], qtype: str, timeout: float,
                    port: int) -> None:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(res.nameserver, port), timeout)
    try:
        if res.local_port is None:
            res.proto = "tcp"
            res.local_ip, res.local_port = writer.get_extra_info("sockname")[:2]
        for name in names:
            res.asked.append(name)
            res.lookups.append(await _tcp_ask(reader, writer, name, qtype, timeout))
            if res.lookups[-1].ips:
                return
    finally:
        writer.close()


async def resolve_name(name: str, conf: ResolvConf, *, qtype: str = "A", tcp: bool = False,
                       timeout: float = TIMEOUT, port: int | None = None) -> Resolution:
    """Resolve ``name`` through ``conf``'s first nameserver; never raises for network errors.

    Every candidate of :func:`search_names` is asked in turn over one UDP socket (one TCP
    connection with ``tcp``) until one answers with addresses; a truncated UDP answer is
    asked again over TCP. ``port`` overrides ``conf.port``.
    """
    if not conf.nameservers:
        return Resolution(name, "", error="no nameserver")
    port = conf.port if port is None else port
    res = Resolution(name, conf.nameservers[0], port, "tcp" if tcp else "udp")
    names = search_names(name, conf)
    try:
        if tcp:
            await _over_tcp(res, names, qtype, timeout, port)
            return res
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            _Answers, remote_addr=(res.nameserver, port))
        try:
            res.local_ip, res.local_port = transport.get_extra_info("sockname")[:2]
            for i, cand in enumerate(names):
                res.asked.append(cand)
                found = await _udp_ask(proto, transport, cand, qtype, timeout)
                if found.truncated:
                    await _over_tcp(res, names[i:], qtype, timeout, port)
                    return res
                res.lookups.append(found)
                if found.ips:
                    break
        finally:
            transport.close()
    except TimeoutError:
        res.error = "timeout"
    except (OSError, asyncio.IncompleteReadError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    return res
