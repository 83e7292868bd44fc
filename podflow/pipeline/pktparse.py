"""Packet bytes -> :class:`Pkt` (pure): Ethernet/VLAN, IPv4/IPv6, TCP/UDP/ICMP, VXLAN.

Two parsers give the same result: :func:`parse` (hand-written with ``struct`` and indexing)
and :func:`parse_dpkt` (dpkt 1.9.8's full decode, the library made for it). Measured over
the first 200k packets of ``bench/pcap_flows.py``'s pcap (TCP connections with data and
FINs, DNS, 5% VXLAN-encapsulated) on a 2-core machine shared with other jobs (load ~8, so
absolute numbers are low; the ratio held across three runs):

============  ====================
parser        packets/s
============  ====================
``parse``     0.39-0.72 M/s
dpkt          43-82 k/s
============  ====================

dpkt is 5-9x slower, and in the agent every packet that passes the kernel filter is parsed
(in ``bench/pcap_flows.py`` every packet of the file is), so the L2-L4 headers take the
struct fast path; dpkt stays the reference the tests check the fast path against, and
decodes DNS (:mod:`podflow.pipeline.l7dns`), which is rare and intricate. dpkt has no VXLAN
class: the 8-byte header (flags ``0x08``, 24-bit VNI) is read by hand in both parsers, for
UDP destination ports 8472 (Linux/flannel) and 4789 (IANA).

Addresses stay raw bytes (4 or 16) for speed: :func:`ip_str` names them when a flow is made.
An ICMP error (destination unreachable, time exceeded) carries the tuple of the packet it
answers in ``quoted``: ``(proto, src, dst, sport, dport)`` of that packet.

Example::

    >>> from podflow.pcap import tcp_frame
    >>> p = parse(tcp_frame("10.0.0.1", "10.0.0.2", 40000, 80, flags=0x02), 1.0)
    >>> ip_str(p.src), p.sport, ip_str(p.dst), p.dport, p.flags
    ('10.0.0.1', 40000, '10.0.0.2', 80, 2)
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

import dpkt

TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58
VXLAN_PORTS = frozenset((8472, 4789))
"""UDP destination ports decoded as VXLAN."""
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ICMP_ERRORS = frozenset((3, 11))
"""ICMPv4 types whose payload quotes the packet they answer (unreachable, time exceeded)."""
ICMP6_ERRORS = frozenset((1, 3))
"""ICMPv6 types that do the same (destination unreachable, time exceeded)."""

Quoted = tuple[int, bytes, bytes, int, int]
"""(proto, src, dst, sport, dport) of the packet an ICMP error answers."""

_HH = struct.Struct("!HH")
_TCP = struct.Struct("!HHIIH")


class Pkt(NamedTuple):
    """One parsed packet (the innermost IP packet when encapsulated)."""

    ts: float
    """Capture time, Unix seconds."""
    src: bytes
    """Source address, 4 or 16 bytes."""
    dst: bytes
    """Destination address."""
    proto: int
    """IP protocol number."""
    sport: int
    """Source port (0 for ICMP); for ICMP the type."""
    dport: int
    """Destination port (0 for ICMP); for ICMP the code."""
    flags: int
    """TCP flags (0 otherwise)."""
    seq: int
    """TCP sequence number (UDP: 0)."""
    ack: int
    """TCP acknowledgement number."""
    length: int
    """IP length (header + payload) as on the wire."""
    data: bytes
    """The whole frame."""
    off: int
    """Offset of the L4 payload in ``data``."""
    end: int
    """End of the IP packet in ``data`` (link-layer padding excluded)."""
    vni: int = -1
    """VXLAN network identifier when the packet came encapsulated, else -1."""
    quoted: Quoted | None = None
    """For ICMP errors: the tuple of the packet it answers."""

    @property
    def payload(self) -> bytes:
        """The L4 payload (TCP/UDP data)."""
        return self.data[self.off:self.end]


def ip_str(addr: bytes) -> str:
    """Raw address -> text (``10.0.0.1``, ``fd00::1``)."""
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)


def ip_bytes(text: str) -> bytes:
    """Text -> raw address."""
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def _l3(data: bytes, off: int) -> tuple[int, bytes, bytes, int, int, bool] | None:
    """IP header at ``off``: (proto, src, dst, l4 offset, ip length, has L4 header)."""
    v = data[off] >> 4
    if v == 4:
        ihl = (data[off] & 15) * 4
        frag = (data[off + 6] & 0x1F) << 8 | data[off + 7]
        return (data[off + 9], data[off + 12:off + 16], data[off + 16:off + 20], off + ihl,
                data[off + 2] << 8 | data[off + 3], frag == 0)
    if v == 6:
        return (data[off + 6], data[off + 8:off + 24], data[off + 24:off + 40], off + 40,
                (data[off + 4] << 8 | data[off + 5]) + 40, True)
    return None


def _quoted(data: bytes, off: int) -> Quoted | None:
    try:
        ip = _l3(data, off)
        if ip is None:
            return None
        proto, src, dst, l4, _n, first = ip
        sport, dport = _HH.unpack_from(data, l4) if first and proto in (TCP, UDP) else (0, 0)
        return proto, src, dst, sport, dport
    except (IndexError, struct.error):
        return None


def parse(data: bytes, ts: float, off: int = 0, vni: int = -1) -> Pkt | None:
    """Parse an Ethernet frame starting at ``off``; None for non-IP or truncated packets."""
    try:
        if data[off + 12] == 8 and data[off + 13] == 0 and data[off + 14] >> 4 == 4:
            o = off + 14  # the common case inline: untagged IPv4
            proto, src, dst = data[o + 9], data[o + 12:o + 16], data[o + 16:o + 20]
            l4, length = o + (data[o] & 15) * 4, data[o + 2] << 8 | data[o + 3]
            first = not (data[o + 6] & 0x1F or data[o + 7])
        else:
            etype = data[off + 12] << 8 | data[off + 13]
            o = off + 14
            while etype in (0x8100, 0x88A8):
                etype = data[o + 2] << 8 | data[o + 3]
                o += 4
            ip = _l3(data, o) if etype in (0x0800, 0x86DD) else None
            if ip is None:
                return None
            proto, src, dst, l4, length, first = ip
        end = o + length
        if end > len(data):
            end = len(data)
        if not first:
            return Pkt(ts, src, dst, proto, 0, 0, 0, 0, 0, length, data, end, end, vni)
        if proto == TCP:
            sport, dport, seq, ack, hf = _TCP.unpack_from(data, l4)
            return Pkt(ts, src, dst, proto, sport, dport, hf & 0x1FF, seq, ack, length, data,
                       l4 + (hf >> 12) * 4, end, vni)
        if proto == UDP:
            sport, dport = _HH.unpack_from(data, l4)
            if dport in VXLAN_PORTS and vni < 0 and data[l4 + 8] & 0x08:
                inner = parse(data, ts, l4 + 16,
                              data[l4 + 12] << 16 | data[l4 + 13] << 8 | data[l4 + 14])
                if inner is not None:
                    return inner
            return Pkt(ts, src, dst, proto, sport, dport, 0, 0, 0, length, data, l4 + 8, end,
                       vni)
        if proto in (ICMP, ICMP6):
            t, c = data[l4], data[l4 + 1]
            errs = ICMP_ERRORS if proto == ICMP else ICMP6_ERRORS
            q = _quoted(data, l4 + 8) if t in errs else None
            return Pkt(ts, src, dst, proto, t, c, 0, 0, 0, length, data, l4 + 8, end, vni, q)
        return Pkt(ts, src, dst, proto, 0, 0, 0, 0, 0, length, data, end, end, vni)
    except (IndexError, struct.error):
        return None


def parse_ip(data: bytes, ts: float) -> Pkt | None:
    """Parse a packet that starts at the IP header (NFLOG payloads, raw-IP pcaps)."""
    if not data:
        return None
    etype = b"\x08\x00" if data[0] >> 4 == 4 else b"\x86\xdd"
    return parse(bytes(12) + etype + data, ts)


def parse_dpkt(data: bytes, ts: float) -> Pkt | None:
    """The same as :func:`parse`, with dpkt's full decode (the reference; ~7x slower)."""
    try:
        eth = dpkt.ethernet.Ethernet(data)
    except (dpkt.UnpackError, IndexError):
        return None
    return _from_dpkt(eth.data, data, ts, 14 + 4 * len(getattr(eth, "vlan_tags", ())), -1)


def _from_dpkt(ip: object, data: bytes, ts: float, at: int, vni: int) -> Pkt | None:
    """``ip`` decoded by dpkt, whose header starts at offset ``at`` of ``data``."""
    if isinstance(ip, dpkt.ip.IP):
        src, dst, proto, length, hl = ip.src, ip.dst, ip.p, ip.len, ip.hl * 4
        first = ip.offset == 0
    elif isinstance(ip, dpkt.ip6.IP6):
        src, dst, proto, length, hl, first = ip.src, ip.dst, ip.nxt, ip.plen + 40, 40, True
    else:
        return None
    end = min(at + length, len(data))
    l4, l4at = ip.data, at + hl
    if not first:
        return Pkt(ts, src, dst, proto, 0, 0, 0, 0, 0, length, data, end, end, vni)
    if isinstance(l4, dpkt.tcp.TCP):
        return Pkt(ts, src, dst, proto, l4.sport, l4.dport, l4.flags, l4.seq, l4.ack, length,
                   data, l4at + l4.off * 4, end, vni)
    if isinstance(l4, dpkt.udp.UDP):
        body = bytes(l4.data)
        if l4.dport in VXLAN_PORTS and vni < 0 and len(body) >= 8 and body[0] & 0x08:
            try:
                inner = dpkt.ethernet.Ethernet(body[8:])
                made = _from_dpkt(inner.data, data, ts, l4at + 16 + 14,
                                  int.from_bytes(body[4:7], "big"))
                if made is not None:
                    return made
            except (dpkt.UnpackError, IndexError):
                pass
        return Pkt(ts, src, dst, proto, l4.sport, l4.dport, 0, 0, 0, length, data, l4at + 8,
                   end, vni)
    if isinstance(l4, dpkt.icmp.ICMP | dpkt.icmp6.ICMP6):
        errs = ICMP_ERRORS if proto == ICMP else ICMP6_ERRORS
        q = _quoted(data, l4at + 8) if l4.type in errs else None
        return Pkt(ts, src, dst, proto, l4.type, l4.code, 0, 0, 0, length, data, l4at + 8,
                   end, vni, q)
    return Pkt(ts, src, dst, proto, 0, 0, 0, 0, 0, length, data, end, end, vni)
